"""The implementation switch: which package the exercise tests import.

`LORA_KATA_IMPL` names it: `exercises` (the learner's code, the default), `solutions` (the
reference), or a path to a directory that is a package with the same module names (the
quality suite uses this for mutants and for independent implementations).

Tests never `import exercises.lora` themselves. They hold a lazy handle,
`lora = implementation("lora")`, and touch `lora.LoRALinear` only while a test runs. So a test
file imports even when the learner's module has a syntax error or lacks a name, the failure
lands in the tests that need it, and the report can say "broken: exercises/lora.py:12".
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from lora_kata import REPO_ROOT

ENV_VAR = "LORA_KATA_IMPL"
NAMED = ("exercises", "solutions")


class KataModuleBroken(Exception):
    """The implementation module could not be imported (syntax error, bad import, ...)."""

    def __init__(self, module: str, file: str, line: int | None, error: BaseException):
        self.module = module
        self.file = file
        self.line = line
        self.error = error
        where = f"{file}:{line}" if line else file
        super().__init__(
            f"{where} does not import: {type(error).__name__}: {error}. "
            f"Fix that first: every test that uses {module}.py needs it."
        )


def current() -> str:
    """The selected implementation: 'exercises', 'solutions' or a directory path."""
    return os.environ.get(ENV_VAR, "").strip() or "exercises"


def unavailable(impl: str | None = None) -> str | None:
    """Why `impl` cannot be tested here (None: it can): a student repository exported by
    `lora-kata export-student` has no solutions/, and `--solutions` says so in one sentence."""
    impl = impl or current()
    if impl == "solutions" and not (REPO_ROOT / "solutions" / "__init__.py").is_file():
        from lora_kata.messages import current_language, t

        return t("no solutions", current_language())
    return None


def describe(impl: str | None = None) -> str:
    impl = impl or current()
    return impl if impl in NAMED else f"path {impl}"


def _package_for(impl: str) -> tuple[str, Path]:
    """Import the implementation's package; return (its module name, its directory)."""
    if impl in NAMED:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        package = importlib.import_module(impl)
        return impl, Path(package.__file__).resolve().parent
    directory = Path(impl).expanduser().resolve()
    init = directory / "__init__.py"
    if not init.is_file():
        raise ValueError(
            f"{ENV_VAR}={impl!r} is neither 'exercises' nor 'solutions' nor a package "
            f"directory (no {init}). Point it at a folder holding __init__.py and lora.py, ..."
        )
    # A stable, unique name per directory, so relative imports inside it work.
    name = "lora_kata_impl_" + hashlib.sha1(str(directory).encode()).hexdigest()[:10]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(directory)]
        )
        assert spec and spec.loader
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return name, directory


def _where(error: BaseException, directory: Path) -> tuple[str, int | None]:
    """The learner-facing file:line of an import failure (inside the implementation if possible)."""
    if isinstance(error, SyntaxError) and error.filename:
        return _relative(Path(error.filename)), error.lineno
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        path = Path(frame.filename)
        if directory in path.parents:
            return _relative(path), frame.lineno
    return _relative(directory), None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load(module: str, impl: str | None = None) -> ModuleType:
    """Import `module` (e.g. 'lora') from the selected implementation.

    Raises KataModuleBroken, with file and line, when the module cannot be imported.
    """
    impl = impl or current()
    package, directory = _package_for(impl)
    qualified = f"{package}.{module}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    try:
        return importlib.import_module(qualified)
    except Exception as error:  # a learner's file can fail to import in any way
        sys.modules.pop(qualified, None)
        file, line = _where(error, directory)
        raise KataModuleBroken(module, file, line, error) from error


class ImplModule:
    """A lazy handle on one implementation module: attribute access imports it."""

    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        module = load(self._module)
        try:
            return getattr(module, name)
        except AttributeError:
            from lora_kata.messages import current_language, t

            file = _relative(Path(module.__file__))
            raise AttributeError(
                t("missing name", current_language(), file=file, name=name)
            ) from None

    def __repr__(self) -> str:
        return f"<{describe()} implementation of {self._module}.py>"


def implementation(module: str) -> ImplModule:
    """A lazy handle on `module` of the selected implementation (see the module docstring)."""
    return ImplModule(module)
