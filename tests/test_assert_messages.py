"""Every assert in the exercise tests carries a message: a bare `assert` shows the learner
only `assert False`, which names neither the rule, nor what was found, nor the likely mistake.

`pytest.raises`, `pytest.fail(...)` and `pytest.approx` inside a messaged assert are fine: only
the `assert` statement itself is checked, statically (nothing is imported or run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXERCISE_TESTS = sorted(
    (Path(__file__).resolve().parent.parent / "exercises" / "tests").glob("test_*.py")
)


def asserts_without_a_message(source: str) -> list[tuple[int, str]]:
    """(line, condition) of each assert whose message is missing or an empty string."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assert):
            continue
        message = node.msg
        empty = isinstance(message, ast.Constant) and not str(message.value).strip()
        if message is None or empty:
            found.append((node.lineno, ast.unparse(node.test)))
    return sorted(found)


def test_the_check_finds_a_bare_assert_and_accepts_a_messaged_one():
    source = "def test_x():\n    assert 1 == 1, 'fine'\n    assert 2 == 2\n    assert 3, ''\n"
    assert asserts_without_a_message(source) == [(3, "2 == 2"), (4, "3")], (
        "the checker should flag the bare assert (line 3) and the empty message (line 4), "
        f"found {asserts_without_a_message(source)}"
    )


def test_there_are_exercise_test_files_to_check():
    assert len(EXERCISE_TESTS) >= 10, (
        f"expected the ten exercise test files under exercises/tests, found {len(EXERCISE_TESTS)}"
    )


@pytest.mark.parametrize("path", EXERCISE_TESTS, ids=lambda p: p.name)
def test_every_assert_in_the_exercise_tests_has_a_message(path):
    bare = asserts_without_a_message(path.read_text(encoding="utf-8"))
    listing = "\n".join(f"  {path.name}:{line}: assert {test}" for line, test in bare)
    assert not bare, (
        f"{len(bare)} assert(s) without a message (the learner would see only `assert False`); "
        f"add one saying what was expected, what was found and the likely mistake:\n{listing}"
    )
