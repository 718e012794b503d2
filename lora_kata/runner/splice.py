"""Swap whole functions between two versions of a module, by qualified name.

`lora-kata reset 05` uses it to put back exercise 05's stubs (LoRALinear.merge, ...) without
touching the learner's work on 01 and 02 in the same file; the quality suite uses it to build
"solutions, except exercise NN still a stub".
"""

from __future__ import annotations

import ast


def _spans(source: str) -> dict[str, tuple[int, int]]:
    """qualified name -> (first line, last line), 1-based, decorators included."""
    spans: dict[str, tuple[int, int]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + node.name
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                spans[name] = (start, node.end_lineno or node.lineno)
                if isinstance(node, ast.ClassDef):
                    visit(node.body, name + ".")

    visit(ast.parse(source).body, "")
    return spans


def replace_definitions(target: str, donor: str, names: list[str] | tuple[str, ...]) -> str:
    """`target` with each named def (or class) replaced by the donor's version of it."""
    target_spans, donor_spans = _spans(target), _spans(donor)
    lines, donor_lines = target.splitlines(keepends=True), donor.splitlines(keepends=True)
    missing = [n for n in names if n not in target_spans or n not in donor_spans]
    if missing:
        raise KeyError(f"not defined in both versions: {', '.join(missing)}")
    # From the bottom up, so earlier line numbers stay valid.
    for name in sorted(names, key=lambda n: target_spans[n][0], reverse=True):
        start, end = target_spans[name]
        d_start, d_end = donor_spans[name]
        lines[start - 1 : end] = donor_lines[d_start - 1 : d_end]
    return "".join(lines)


def definition_at(source: str, line: int) -> str | None:
    """The qualified name of the innermost def or class around `line` (1-based), if any."""
    best: tuple[int, str] | None = None
    try:
        spans = _spans(source)
    except SyntaxError:
        return None
    for name, (start, end) in spans.items():
        if start <= line <= end and (best is None or start >= best[0]):
            best = (start, name)
    return best[1] if best else None
