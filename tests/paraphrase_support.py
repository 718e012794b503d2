"""Fingerprints of the tutorial's text, so a test can tell a copied line without the repository
holding the tutorial (it lives outside the repository, at ../shared/seed/ in our checkout).

A fingerprint is the first 16 hex digits of the SHA-256 of a normalised piece of the tutorial:
- every line with 25 or more characters once all whitespace is removed (code and prose alike);
- every sentence or clause (split at 。！？；，： and at line ends) with 12 or more such
  characters.
Only these hashes are stored (tests/data/tutorial_fingerprints.txt), never the text.

Regenerate: python -m tests.paraphrase_support /path/to/000_1f622c2399d10b3c.txt
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

FINGERPRINTS = Path(__file__).parent / "data" / "tutorial_fingerprints.txt"
MIN_LINE = 25  # shorter lines are calls anyone would write: `trainer.train()`, `)`
MIN_SENTENCE = 12  # twelve CJK characters already make a clause in the tutorial's own words
_SENTENCE_END = re.compile(r"(?<=[。！？；，：])")


def normalise(text: str) -> str:
    return re.sub(r"\s+", "", text)


def fingerprint(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def pieces(text: str) -> Iterator[tuple[int, str]]:
    """(line number, piece) for each line and sentence long enough to be fingerprinted."""
    for number, line in enumerate(text.splitlines(), 1):
        if len(normalise(line)) >= MIN_LINE:
            yield number, line
        for sentence in _SENTENCE_END.split(line):
            if len(normalise(sentence)) >= MIN_SENTENCE and normalise(sentence) != normalise(line):
                yield number, sentence


def tutorial_fingerprints() -> set[str]:
    return set(FINGERPRINTS.read_text(encoding="utf-8").split())


def write_fingerprints(tutorial: Path) -> int:
    found = sorted({fingerprint(piece) for _, piece in pieces(tutorial.read_text("utf-8"))})
    FINGERPRINTS.write_text("\n".join(found) + "\n", encoding="utf-8")
    return len(found)


if __name__ == "__main__":
    print(f"{write_fingerprints(Path(sys.argv[1]))} fingerprints written to {FINGERPRINTS}")
