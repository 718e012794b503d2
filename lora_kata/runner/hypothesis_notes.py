"""The failing example Hypothesis attaches to an error, as the report's `example:` line.

Hypothesis offers no structured record of the minimal failing example of a finished test
(its observability callbacks report every test case while it runs, from an internal module, at
a cost on every example), so this reads the note it adds to the exception. That note's wording
changed in 6.170 ("Falsifying example: test_x(" became "Failing test case: test_x(", and
"Falsifying explicit example:" became "Failing explicit example:"); every wording known today is
accepted, and tests/test_third_party_formats.py pins it against the installed Hypothesis.
"""

from __future__ import annotations

import re

# "<lead>: test_name(" ... ")": every phrasing of Hypothesis's failing-example note known today.
LEADS = (
    "Falsifying example",  # Hypothesis < 6.170
    "Falsifying explicit example",  # Hypothesis < 6.170, an @example that failed
    "Failing test case",  # Hypothesis >= 6.170
    "Failing explicit example",  # Hypothesis >= 6.170, an @example that failed
)
NOTE = re.compile(rf"^(?:{'|'.join(map(re.escape, LEADS))}): \w+\((.*)\)\s*$", re.DOTALL)
# Hypothesis's own comment after an argument: "dims=(1, 1),  # or any other generated value".
COMMENT = re.compile(r"(?<=,)[ \t]+#[^\n]*$", re.MULTILINE)
MAX_CHARS = 300


def failing_example(notes: list[str]) -> str | None:
    """`dims=(2, 3, 1), alpha=2.0` from a note "Failing test case: test_x(\\n dims=..., \\n)"."""
    for note in notes:
        match = NOTE.match(note.strip())
        if match:
            args = " ".join(COMMENT.sub("", match.group(1)).split())
            return args.strip().rstrip(",").strip()[:MAX_CHARS]
    return None
