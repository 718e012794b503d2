"""The failing example Hypothesis attaches to an error, as the report's `example:` line.

Hypothesis offers no structured record of the minimal failing example of a finished test
(its observability callbacks report every test case while it runs, from an internal module, at
a cost on every example), so this reads the note it adds to the exception. That note's wording
changed in 6.170 ("Falsifying example: test_x(" became "Failing test case: test_x(", and
"Falsifying explicit example:" became "Failing explicit example:"); every wording known today is
accepted, and tests/test_third_party_formats.py pins it against the installed Hypothesis.
"""

from __future__ import annotations

import ast
import re

# "<lead>: test_name(" ... ")": every phrasing of Hypothesis's failing-example note known today.
LEADS = (
    "Falsifying example",  # Hypothesis < 6.170
    "Falsifying explicit example",  # Hypothesis < 6.170, an @example that failed
    "Failing test case",  # Hypothesis >= 6.170
    "Failing explicit example",  # Hypothesis >= 6.170, an @example that failed
)
NOTE = re.compile(rf"^(?:{'|'.join(map(re.escape, LEADS))}): (\w+\(.*\))\s*$", re.DOTALL)
MAX_CHARS = 300


def _arguments(call_source: str) -> str | None:
    """ "dims=(2, 3, 1), alpha=2.0" from the note's call, read as Python (its comments, such as
    "# or any other generated value", and its line breaks are layout, not data)."""
    try:
        call = ast.parse(call_source, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call):
        return None
    parts = [ast.unparse(arg) for arg in call.args]
    parts += [f"{kw.arg}={ast.unparse(kw.value)}" for kw in call.keywords if kw.arg]
    return ", ".join(parts)


def failing_example(notes: list[str]) -> str | None:
    """`dims=(2, 3, 1), alpha=2.0` from a note "Failing test case: test_x(\n dims=..., \n)"."""
    for note in notes:
        match = NOTE.match(note.strip())
        if match:
            args = _arguments(match.group(1))
            if args is None:  # not Python after all: its text, on one line
                args = " ".join(match.group(1).split())
            return args[:MAX_CHARS]
    return None
