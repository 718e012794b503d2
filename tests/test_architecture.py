"""lora_kata/ shows its architecture: a room per concern, dependencies pointing one way.

Read from the source (ast), never imported: every `import lora_kata.X` and `from lora_kata.X
import …` (at any depth: a lazy import inside a function is still an arrow) is an arrow from
the importing module's room to X's room. The allowed arrows are the package docstrings' rules,
written once here; a new arrow against them, or any import circle between modules, fails naming
it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lora_kata"
MAX_LINES = 300
MAX_TOP_MODULES = 8  # besides __init__ and __main__

# room -> the rooms it may import (besides itself and the package root's REPO_ROOT).
ALLOWED = {
    "messages": set(),
    "models": set(),
    "catalog": {"messages"},
    "capstone": {"catalog", "messages", "models"},
    "testing": {"catalog", "messages", "models", "capstone"},
    "runner": {"catalog", "messages", "models", "testing"},
    "experiments": {"catalog", "messages", "models", "testing", "runner"},
    "cli": {"catalog", "messages", "models", "testing", "runner", "capstone", "experiments"},
}


def _modules() -> dict[str, Path]:
    """{dotted module name: path} for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that the file at `path` imports (the most specific known name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    targets: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("lora_kata"):
                targets.add(name)
                break
    return targets


def _room(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return "cli" if parts[1] == "__main__" else parts[1]  # `python -m lora_kata` is the CLI


MODULES = _modules()
GRAPH = {name: _imports(path, set(MODULES)) - {name} for name, path in MODULES.items()}


def test_the_top_of_lora_kata_is_a_few_rooms():
    top = sorted(
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file())
        and p.name not in ("__init__.py", "__main__.py")
    )
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules at the top of lora_kata/: {top}"
    assert set(top) == set(ALLOWED), f"rooms {top} differ from the rules' {sorted(ALLOWED)}"


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_every_room_opens_with_a_docstring_saying_what_it_is_for(room):
    init = PACKAGE / room / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert docstring and len(docstring.split()) >= 15, f"lora_kata/{room}/ needs a docstring"
    assert "import" in docstring, f"lora_kata/{room}/'s docstring should say what it may import"


def test_no_module_is_over_300_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines (split by concern): {long}"


def test_dependencies_point_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        source = _room(module)
        for target in targets:
            room = _room(target)
            if source is None or room is None or room == source:
                continue
            if room not in ALLOWED[source]:
                wrong.append(f"{module} imports {target} ({source}/ → {room}/)")
    assert not wrong, "arrows against the rooms' direction:\n  " + "\n  ".join(sorted(wrong))


def test_no_import_circle():
    colour: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if colour.get(nxt, 0) == 0:
                visit(nxt)
            elif colour[nxt] == 1:
                circles.append(" → ".join([*stack[stack.index(nxt) :], nxt]))
        stack.pop()
        colour[node] = 2

    for module in sorted(GRAPH):
        if colour.get(module, 0) == 0:
            visit(module)
    assert not circles, "import circles:\n  " + "\n  ".join(circles)


def test_no_module_only_re_exports_another():
    """No compatibility shim: a module whose body is nothing but imports (and __all__)."""
    shims = []
    for name, path in MODULES.items():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        body = ast.parse(path.read_text(encoding="utf-8")).body
        code = [
            n
            for n in body
            if not isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr))
            and not (isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "__all__")
        ]
        if not code:
            shims.append(name)
    assert not shims, f"modules that only re-export: {shims}"
