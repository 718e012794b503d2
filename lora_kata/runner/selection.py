"""How many tests each exercise has, so a run that saw only part of it is known to be partial.

An exercise is done only when a run saw every one of its tests on the code as it is now. The
number of tests is read from its test file without importing it (so `-k test_02` costs nothing
for the others): one per `def test_*` (a Hypothesis test is one test), times the length of each
literal `@pytest.mark.parametrize` list. tests/test_runner_selection.py checks the count equals
what pytest collects, for every exercise. A run that deselects (`-k` on part of an exercise,
`-m`), names node ids, stops early (`-x`) or is interrupted (Ctrl-C) sees fewer.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path


def _parametrize_length(decorator: ast.expr, constants: dict[str, ast.expr]) -> int | None:
    """len(argvalues) of `@pytest.mark.parametrize(names, [...])` (a literal, or a module-level
    name bound to one); 1 for other decorators; None when unknown."""
    if not isinstance(decorator, ast.Call):
        return 1
    name = ast.unparse(decorator.func)
    if not name.endswith("mark.parametrize"):
        return 1
    values = decorator.args[1] if len(decorator.args) > 1 else None
    for keyword in decorator.keywords:
        if keyword.arg == "argvalues":
            values = keyword.value
    if isinstance(values, ast.Name):
        values = constants.get(values.id)
    if isinstance(values, (ast.List, ast.Tuple, ast.Set)):
        return len(values.elts)
    return None


def _count_function(
    node: ast.FunctionDef | ast.AsyncFunctionDef, constants: dict[str, ast.expr]
) -> int | None:
    count = 1
    for decorator in node.decorator_list:
        length = _parametrize_length(decorator, constants)
        if length is None:
            return None
        count *= length
    return count


@cache
def static_test_count(path: Path) -> int | None:
    """The number of tests pytest collects from the file at `path`, or None if unknown."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    constants = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    total = 0
    nodes: list[ast.stmt] = list(tree.body)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            nodes.extend(node.body)
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
            "test"
        ):
            count = _count_function(node, constants)
            if count is None:
                return None
            total += count
    return total
