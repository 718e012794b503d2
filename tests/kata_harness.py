"""Run the kata's exercise tests in a subprocess against any implementation, and read back
what happened (the progress JSON the runner writes, and the printed report)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from lora_kata.catalog import Exercise, by_id
from lora_kata.runner.splice import replace_definitions

REPO = Path(__file__).resolve().parent.parent
MUTANTS_DIR = Path(__file__).resolve().parent / "mutants"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child run: without pytest's and the kata's own
    variables (the child must not inherit this run's choices), offline, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LORA_KATA_"))}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


@dataclass
class KataRun:
    returncode: int
    output: str
    progress: dict

    def tests(self, exercise: str | None = None) -> list[dict]:
        return [t for t in self.progress.get("tests", []) if exercise in (None, t["exercise"])]

    def status(self, exercise: str) -> str:
        for entry in self.progress["exercises"]:
            if entry["id"] == exercise:
                return entry["status"]
        raise KeyError(exercise)

    def explain(self) -> str:
        return f"exit {self.returncode}\n{self.output[-6000:]}"


def _children_temp_root() -> str:
    """A temporary root of this process's own for its child runs' tmp_path folders. pytest
    prunes old numbered folders under its shared root at exit; child runs of several xdist
    workers pruning the same root raced ("OSError: Directory not empty", printed into a run's
    output, seen once in CI)."""
    root = Path(tempfile.gettempdir()) / f"lora-kata-children-{os.getpid()}"
    root.mkdir(exist_ok=True)
    return str(root)


def _child_env(impl: str | Path, lang: str) -> dict[str, str]:
    """The environment of a child kata run on `impl` (run_kata and run_kata_warm alike)."""
    return clean_env(
        PYTEST_DEBUG_TEMPROOT=_children_temp_root(),
        LORA_KATA_IMPL=str(impl),
        LORA_KATA_LANG=lang,
        HYPOTHESIS_PROFILE=os.environ.get("HYPOTHESIS_PROFILE", "ci"),
        PYTHONDONTWRITEBYTECODE="1",
        # Tiny models: one thread each is fastest, and xdist workers don't oversubscribe.
        OMP_NUM_THREADS="1",
        COLUMNS="120",
    )


def _pytest_args(progress_path: Path, pytest_args: tuple[str, ...]) -> list[str]:
    """pytest's arguments for a child run: exercises/ unless a test path is given."""
    targets = [] if any(a.startswith("exercises/") for a in pytest_args) else ["exercises/"]
    return [
        *targets,
        "--kata-progress",
        str(progress_path),
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]


def _progress_of(path: Path) -> dict:
    """The progress JSON a child run wrote ({} if it wrote none)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        return {}


def run_kata(
    impl: str | Path,
    *pytest_args: str,
    cwd: Path = REPO,
    lang: str = "en",
    timeout: float = 1200,
    extra_env: dict[str, str] | None = None,
) -> KataRun:
    """`pytest exercises/ ARGS` with LORA_KATA_IMPL=impl, in a fresh interpreter."""
    progress_path = (
        Path(cwd)
        / ".lora_kata"
        / f"quality-{os.getpid()}-{abs(hash((str(impl), pytest_args)))}.json"
    )
    progress_path.unlink(missing_ok=True)
    env = _child_env(impl, lang)
    env.update(extra_env or {})
    command = [sys.executable, "-m", "pytest", *_pytest_args(progress_path, pytest_args)]
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    try:
        progress = _progress_of(progress_path)
    finally:
        progress_path.unlink(missing_ok=True)
    return KataRun(done.returncode, done.stdout + done.stderr, progress)


# What every exercise run imports. A forkserver imports them once; each run is a fork of it
# (a fresh process for the kata's own modules and the implementation under test).
WARM_MODULES = [
    "torch",
    "hypothesis",
    "pytest",
    "safetensors.torch",
    "transformers",
    "transformers.models.opt.modeling_opt",
    "peft",
    "datasets",
    "bitsandbytes",
]
_warm: multiprocessing.context.BaseContext | None = None


def _warm_context() -> multiprocessing.context.BaseContext:
    global _warm
    if _warm is None:
        # Read at import by torch and huggingface_hub: the forkserver must start with them.
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
        _warm = multiprocessing.get_context("forkserver")
        _warm.set_forkserver_preload(WARM_MODULES)
    return _warm


def stop_warm() -> None:
    """Stop the forkserver (and reap it, so its CPU time is counted where it was spent)."""
    global _warm
    if _warm is None:
        return
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # no public way to stop it
    if stop is not None:
        stop()
    _warm = None


def _pytest_in_child(args: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.dont_write_bytecode = True
    sys.path.insert(0, cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import pytest

    code = pytest.main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def run_kata_warm(
    impl: str | Path, *pytest_args: str, cwd: Path = REPO, lang: str = "en", timeout: float = 1200
) -> KataRun:
    """run_kata, but forked from a warm process that has the heavy libraries imported: the
    same run (a new process, the same arguments and environment) without paying the imports
    each time. For the many mutant runs; run_kata for everything else (and where there is no
    forkserver, as on Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return run_kata(impl, *pytest_args, cwd=cwd, lang=lang, timeout=timeout)
    context = _warm_context()
    tag = f"warm-{os.getpid()}-{abs(hash((str(impl), pytest_args)))}"
    progress_path = Path(cwd) / ".lora_kata" / f"quality-{tag}.json"
    log = Path(cwd) / ".lora_kata" / f"quality-{tag}.log"
    progress_path.parent.mkdir(exist_ok=True)
    progress_path.unlink(missing_ok=True)
    args = _pytest_args(progress_path, pytest_args)
    child = context.Process(
        target=_pytest_in_child, args=(args, _child_env(impl, lang), str(cwd), str(log))
    )
    child.start()
    child.join(timeout)
    try:
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(["pytest", *args], timeout)
        output = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        progress = _progress_of(progress_path)
    finally:
        progress_path.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
    return KataRun(child.exitcode if child.exitcode is not None else -1, output, progress)


def copy_kata(destination: Path) -> Path:
    """A fresh copy of the kata as a learner has it (stubs untouched), without git."""
    for name in ("exercises", "lora_kata", "data", "lessons"):
        shutil.copytree(
            REPO / name, destination / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", destination)
    if (REPO / "course.toml").is_file():  # the same course (catalog/course.py)
        shutil.copy(REPO / "course.toml", destination)
    return destination


def copy_solutions(destination: Path) -> Path:
    """A copy of solutions/ as a standalone package directory."""
    target = destination / "impl"
    shutil.copytree(REPO / "solutions", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def solutions_with_stub(exercise: Exercise, destination: Path) -> Path:
    """The solutions, except that `exercise`'s functions are its untouched stubs again."""
    target = copy_solutions(destination)
    for module in exercise.modules:
        names = [f.split(".", 1)[1] for f in exercise.functions if f.split(".", 1)[0] == module]
        stub = (REPO / "exercises" / f"{module}.py").read_text(encoding="utf-8")
        path = target / f"{module}.py"
        path.write_text(replace_definitions(path.read_text(encoding="utf-8"), stub, names))
    return target


@dataclass(frozen=True)
class Mutant:
    """A common mistake: `find` → `replace` in solutions/`file`. `fails` names the tests of
    `exercise` (function names, without parameters) that blame this mistake and nothing else
    may fail; `expect` is a phrase the English report must show."""

    id: str
    exercise: str
    file: str
    find: str
    replace: str
    expect: str
    fails: tuple[str, ...] = ()

    def apply(self, destination: Path) -> Path:
        target = copy_solutions(destination)
        path = target / self.file
        source = path.read_text(encoding="utf-8")
        count = source.count(self.find)
        if count != 1:
            raise AssertionError(
                f"mutant {self.id}: its `find` text occurs {count} times in solutions/{self.file} "
                "(must be exactly once): update tests/mutants to match the solution"
            )
        path.write_text(source.replace(self.find, self.replace), encoding="utf-8")
        return target


def load_mutants() -> list[Mutant]:
    """The catalogued mistakes of the course's exercises (course.toml may leave some out)."""
    from lora_kata.catalog import load_catalog

    course = {e.id for e in load_catalog()}
    mutants = []
    for path in sorted(MUTANTS_DIR.glob("*.toml")):
        for entry in tomllib.loads(path.read_text(encoding="utf-8")).get("mutant", []):
            entry["fails"] = tuple(entry.get("fails", ()))
            if entry["exercise"] in course:
                mutants.append(Mutant(**entry))
    return mutants


def exercise_test_path(exercise_id: str) -> str:
    return str(by_id(exercise_id).test_file.relative_to(REPO))


def test_function_name(name: str) -> str:
    """`test_x[param-1]` → `test_x`: the catalogue lists functions, not their parameters."""
    return name.split("[", 1)[0]


def normalise(text: str) -> str:
    return " ".join(text.lower().split())
