"""What each exercise's result depends on, so an old result is never trusted after an edit.

An exercise's tests run code from its own modules, from the modules of the exercises it
requires (transitively), and from whatever those import inside the implementation package
(`from .lora import LoRALinear`). Its fingerprint hashes those files and its test file. The
progress file stores it; a later run (or `lora-kata watch`, or `lora-kata hint`) trusts an
exercise's last status only while the fingerprint still matches.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog import Exercise, by_id, load_catalog

NAMED = ("exercises", "solutions")


def implementation_dir(impl: str) -> Path:
    """The folder holding the implementation's modules (without importing it)."""
    return REPO_ROOT / impl if impl in NAMED else Path(impl).expanduser().resolve()


def file_hashes(directory: Path) -> dict[str, str]:
    """{module name: short content hash} for every .py file in the implementation."""
    out = {}
    for path in sorted(directory.glob("*.py")):
        try:
            out[path.stem] = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        except OSError:
            out[path.stem] = "unreadable"
    return out


def _imported_siblings(source: str, package: str, siblings: set[str]) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(siblings)  # cannot tell: assume it may use every module
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 1 and node.module:
                found.add(parts[0])
            elif node.level == 1:  # from . import lora, data
                found.update(alias.name for alias in node.names)
            elif parts[0] == package and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == package:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package and len(parts) > 1:
                    found.add(parts[1])
    return found & siblings


def import_graph(directory: Path) -> dict[str, set[str]]:
    """{module: the sibling modules it imports}, read from the source (never executed)."""
    sources = {}
    for path in directory.glob("*.py"):
        try:
            sources[path.stem] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            sources[path.stem] = ""
    names = set(sources)
    return {m: _imported_siblings(s, directory.name, names - {m}) for m, s in sources.items()}


def dependencies(exercise: Exercise, graph: dict[str, set[str]]) -> set[str]:
    """The implementation modules an exercise's tests can run."""
    todo = [exercise]
    modules: set[str] = set()
    seen: set[str] = set()
    while todo:
        current = todo.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        modules.update(current.modules)
        todo.extend(by_id(r) for r in current.requires)
    stack = list(modules)
    while stack:
        for imported in graph.get(stack.pop(), ()):
            if imported not in modules:
                modules.add(imported)
                stack.append(imported)
    return modules


def _test_hash(exercise: Exercise) -> str:
    try:
        return hashlib.sha1(exercise.test_file.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def fingerprints(impl: str) -> dict[str, str]:
    """{exercise id: hash of every file its result depends on} for the current tree."""
    directory = implementation_dir(impl)
    hashes = file_hashes(directory)
    graph = import_graph(directory)
    out = {}
    for exercise in load_catalog():
        parts = [f"{m}={hashes.get(m, 'absent')}" for m in sorted(dependencies(exercise, graph))]
        parts.append(f"test={_test_hash(exercise)}")
        out[exercise.id] = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
    return out


def affected_by(modules: set[str], impl: str = "exercises") -> list[str]:
    """The exercises (ids, in order) whose result can change when `modules` change."""
    graph = import_graph(implementation_dir(impl))
    known = {m for e in load_catalog() for m in e.modules}
    if modules - known - set(graph):  # a file nobody catalogued: be safe, rerun everything
        return [e.id for e in load_catalog()]
    return [e.id for e in load_catalog() if dependencies(e, graph) & modules]


def unparsable(impl: str) -> list[dict]:
    """Files of the implementation that do not even compile: [{file, line, message}].

    A broken file that no test imports still means the kata is not done."""
    problems = []
    for path in sorted(implementation_dir(impl).glob("*.py")):
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as error:
            line = getattr(error, "lineno", None)
            problems.append(
                {
                    "file": _relative(path),
                    "line": line,
                    "message": f"{type(error).__name__}: {getattr(error, 'msg', error)}",
                }
            )
    return problems


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
