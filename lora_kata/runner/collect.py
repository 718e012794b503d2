"""Decide, before importing a test file, that `-k EXPR` cannot select any test in it.

pytest imports every collected file before `-k` deselects, so `pytest exercises/ -k test_02`
would pay for the libraries of all exercises. A file is skipped only when the expression is
false for every test it could hold: a name like `test_02` is decided from the file name (every
test in `test_02_*.py` has it in its module name) and from the file's text (a test elsewhere
could only match it if the text were there); every other name may be true or false per test,
so all combinations are tried. Anything this cannot read keeps the file.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

EXERCISE_NAME = re.compile(r"test_\d+")
IDENT = re.compile(r"[\w:+\-.\[\]\\/]+")
OPERATORS = {"and", "or", "not", "true", "false", "none"}
MAX_UNDECIDED = 10


def keyword_excludes_file(keyword: str, path: Path) -> bool:
    """True when `-k keyword` selects nothing in the test file at `path`."""
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(keyword)
        text = path.read_text(encoding="utf-8").lower()
    except Exception:  # an expression or file we cannot read: let pytest decide
        return False
    file_name = path.name.lower()
    decided: dict[str, bool] = {}
    undecided: list[str] = []
    for ident in dict.fromkeys(IDENT.findall(keyword)):
        name = ident.lower()
        if name in OPERATORS:
            continue
        if EXERCISE_NAME.fullmatch(name):
            if name in file_name:
                decided[name] = True
                continue
            if name not in text:
                decided[name] = False
                continue
        undecided.append(name)
    if len(undecided) > MAX_UNDECIDED:
        return False
    for values in itertools.product((False, True), repeat=len(undecided)):
        truth = {**decided, **dict(zip(undecided, values, strict=True))}
        try:
            if expression.evaluate(_Matcher(truth)):
                return False
        except Exception:
            return False
    return True


class _Matcher:
    def __init__(self, truth: dict[str, bool]):
        self.truth = truth

    def __call__(self, name: str, /, **kwargs: object) -> bool:
        if kwargs:
            raise ValueError("keyword arguments are not part of -k")
        return self.truth[name.lower()]
