"""The course file: which exercises a class does, in which order, and the instructor's hints.

`course.toml` at the kata's root (or the file `LORA_KATA_COURSE` names) is optional; without it
the course is every catalogued exercise in the order of its id. The runner, the report, the
command line, `lora-kata export-student` and the quality suite all read the catalogue through
`load_catalog()`, which applies it:

    # course.toml
    exercises = ["01", "02", "03", "06", "04", "05", "07", "08", "09", "10"]

    [hints."03"]                       # replaces tier 1 of exercise 03's hints
    1 = { en = "Count with numel().", zh = "用 numel() 计数。" }

    [hints."03".tests.test_counts_the_tutorials_line]   # a hint for one test
    en = "..."
    zh = "..."

An exercise keeps its id (its files, test names and message keys do not change); the course
only chooses and orders. Every exercise it lists must have the exercises it requires before
it. An override gives both languages: an English hint edited without its Chinese would leave
a learner under zh reading the old advice. Every error names the file and the line.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lora_kata import REPO_ROOT

ENV_VAR = "LORA_KATA_COURSE"
LANGS = ("en", "zh")


class CatalogueError(ValueError):
    """A catalogue or course file that cannot be read: the message names the file and line."""


@dataclass(frozen=True)
class Course:
    path: Path | None = None  # None: no course file, every exercise in id order
    exercises: tuple[str, ...] | None = None
    hints: dict[str, dict[int, dict[str, str]]] = field(default_factory=dict)  # id -> tier -> text
    test_hints: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # id -> test


def course_path() -> Path:
    """Where the course file is (it need not exist)."""
    explicit = os.environ.get(ENV_VAR, "").strip()
    return Path(explicit).expanduser().resolve() if explicit else REPO_ROOT / "course.toml"


def toml_error(path: Path, error: tomllib.TOMLDecodeError, text: str) -> CatalogueError:
    """A TOML syntax error as "file:line: not valid TOML: ..." (the line read from the message
    on Python < 3.14, where TOMLDecodeError carries no line attribute)."""
    line = getattr(error, "lineno", None)
    match = re.search(r"at line (\d+)", str(error))
    if line is None and match:
        line = int(match.group(1))
    if line is None:  # "at end of document"
        line = max(1, len(text.splitlines()))
    return CatalogueError(f"{path}:{line}: not valid TOML: {error}")


def line_of(text: str, *needles: str) -> int:
    """The first line holding every needle (for errors in a file that parsed), else 1."""
    for number, line in enumerate(text.splitlines(), 1):
        if all(needle in line for needle in needles):
            return number
    return 1


def read_course(path: Path | None = None) -> Course:
    """The course in `path` (default: course_path()); an empty Course when there is none."""
    path = path or course_path()
    if not path.is_file():
        if os.environ.get(ENV_VAR, "").strip():
            raise CatalogueError(f"{path}: {ENV_VAR} names a course file that does not exist")
        return Course()
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise toml_error(path, error, text) from None

    def fail(why: str, *needles: str) -> CatalogueError:
        return CatalogueError(f"{path}:{line_of(text, *needles)}: {why}")

    unknown = set(data) - {"exercises", "hints"}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(f"unknown key {key!r} (a course has `exercises` and `hints`)", key)
    exercises = data.get("exercises")
    if exercises is not None:
        if not isinstance(exercises, list) or not exercises:
            raise fail('`exercises` must be a non-empty list of ids such as "01"', "exercises")
        exercises = tuple(str(e).zfill(2) for e in exercises)
        repeated = sorted({e for e in exercises if exercises.count(e) > 1})
        if repeated:
            raise fail(f"`exercises` lists {', '.join(repeated)} more than once", "exercises")
    hints: dict[str, dict[int, dict[str, str]]] = {}
    test_hints: dict[str, dict[str, dict[str, str]]] = {}
    for exercise_id, entry in (data.get("hints") or {}).items():
        key = str(exercise_id).zfill(2)
        if not isinstance(entry, dict):
            raise fail(f"hints.{exercise_id} must be a table", f"{exercise_id}")
        for tier, texts in entry.items():
            if tier == "tests":
                for test, test_texts in texts.items():
                    _both_languages(test_texts, fail, f"hints.{exercise_id}.tests.{test}", test)
                    test_hints.setdefault(key, {})[test] = dict(test_texts)
                continue
            if tier not in ("1", "2", "3"):
                raise fail(f"hints.{exercise_id}: {tier!r} is not a hint tier (1, 2, 3)", tier)
            _both_languages(texts, fail, f"hints.{exercise_id}.{tier}", f"{tier} =")
            hints.setdefault(key, {})[int(tier)] = dict(texts)
    return Course(path, exercises, hints, test_hints)


def _both_languages(texts, fail, where: str, needle: str) -> None:
    if not isinstance(texts, dict) or any(not str(texts.get(lang, "")).strip() for lang in LANGS):
        raise fail(
            f"{where} must give the hint in both languages (en and zh): an English text "
            "without its Chinese leaves learners under zh with the old advice",
            needle,
        )
