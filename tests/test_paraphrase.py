"""The kata paraphrases the tutorial it follows and never copies it: no line of its code and no
sentence of its prose appears in what a learner reads (lessons, READMEs, docs, hints, messages,
the exercises' and solutions' docstrings). Checked against fingerprints of the tutorial
(tests/paraphrase_support.py), since the tutorial itself is not part of the repository.

`from x import y` lines are exempt: an import names an API, it is not the tutorial's wording.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kata_harness import REPO
from tests.paraphrase_support import fingerprint, pieces, tutorial_fingerprints

LEARNER_TEXTS = [
    "README.md",
    "README.zh-CN.md",
    "lessons/**/*.md",
    "docs/*.md",
    "lora_kata/catalog/*.toml",
    "lora_kata/messages/**/*.toml",
    "lora_kata/experiments/*.toml",
    "exercises/*.py",
    "solutions/*.py",
]


def _files() -> list[Path]:
    return sorted({path for pattern in LEARNER_TEXTS for path in REPO.glob(pattern)})


def test_the_fingerprints_are_there_to_compare_with():
    known = tutorial_fingerprints()
    assert len(known) >= 50, (
        f"expected the tutorial's fingerprints in tests/data/tutorial_fingerprints.txt, found "
        f"{len(known)}: regenerate them (python -m tests.paraphrase_support <tutorial.txt>)"
    )
    assert len(_files()) >= 40, f"expected the lessons, READMEs and hints, found {_files()}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_line_or_sentence_is_copied_from_the_tutorial(path):
    known = tutorial_fingerprints()
    copied = [
        f"{path.relative_to(REPO)}:{number}: {piece.strip()[:100]}"
        for number, piece in pieces(path.read_text(encoding="utf-8"))
        if fingerprint(piece) in known and not piece.lstrip().startswith(("from ", "import "))
    ]
    assert not copied, (
        "these lines are the tutorial's own words or code; say what it does in ours (the "
        "settings and calls by name, or a sketch of our own):\n" + "\n".join(copied)
    )
