"""The registry behind tests/test_claims.py: which lesson sentence each claims test backs.

Every statement the lessons or the READMEs make about a library's behaviour (each "What
changed since 2023" item, each library pitfall) has a test in test_claims.py that exercises
the installed library. `@claim(path, section)` records where the statement is written, so
that a library upgrade which changes the behaviour fails at the claim, and the file can check
that every place it cites exists and that the README states how many claims are checked.

Nothing here imports torch, transformers or peft.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.kata_harness import REPO


@dataclass(frozen=True)
class Claim:
    """One checked claim: the test's name and every (file, `## ` section) that states it."""

    test: str
    sources: tuple[tuple[str, str], ...]


CLAIMS: dict[str, Claim] = {}


def claim(path: str, section: str, *also: tuple[str, str]) -> Callable:
    """Register the decorated test as the check of a claim written in `path` under `## section`
    (and in every (path, section) of `also`)."""

    def register(test: Callable) -> Callable:
        if test.__name__ in CLAIMS:
            raise ValueError(f"two claims tests are named {test.__name__}")
        CLAIMS[test.__name__] = Claim(test.__name__, ((path, section), *also))
        return test

    return register


def sections(path: str | Path) -> list[str]:
    """The `## ` headings of a Markdown file (outside fenced code blocks), without the hashes."""
    found, fenced = [], False
    for line in (REPO / path).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            found.append(line[3:].strip())
    return found


def section_text(path: str | Path, section: str) -> str:
    """The text of one `## ` section (up to the next `## `), or "" when there is none."""
    text = (REPO / path).read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    return match.group(1) if match else ""


def zh_counterpart(path: str) -> str | None:
    """lessons/en/NN-x.md -> lessons/zh/NN-x.md; README.md -> README.zh-CN.md; else None."""
    if path.startswith("lessons/en/"):
        return "lessons/zh/" + path.removeprefix("lessons/en/")
    if path == "README.md":
        return "README.zh-CN.md"
    return None
