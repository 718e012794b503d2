"""A warm pytest worker for `lora-kata watch`: imports once, forks one child per run.

Importing torch, transformers, peft, datasets and Hypothesis takes seconds; a verdict after a
save should not. The worker imports them once and then, for each request, forks a child that
runs `pytest.main(args)`. The child imports the learner's modules and the test files itself,
fresh, so every run sees the code as saved, and nothing one run does reaches the next.

Protocol (JSON lines): the watcher writes {"args": [...], "log": path} to our stdin; we answer
{"pid": n} when the child starts and {"rc": n} when it ends (negative: killed by that signal).
Where there is no fork (Windows), `lora-kata watch` runs plain subprocesses instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys

# What exercise tests import; anything missing is simply imported by the child.
PRELOAD = (
    "pytest",
    "_pytest.python",
    "_pytest.terminal",
    "hypothesis",
    "hypothesis.strategies",
    "torch",
    "transformers",
    "transformers.models.opt.modeling_opt",
    "peft",
    "datasets",
    "safetensors.torch",
    "lora_kata.runner.plugin",
    "lora_kata.testing.properties",
    "lora_kata.testing.lora_models",
    "lora_kata.models.tiny",
)


def preload() -> None:
    import importlib

    from lora_kata.models.quiet import silence_bitsandbytes_cpu_notices

    silence_bitsandbytes_cpu_notices()
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # as the kata's plugin does
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # a library that is missing or fails here fails in the child too
            continue
    import gc

    # Everything imported so far lives as long as the worker: keep it out of the garbage
    # collector's way, so a child's collections scan only what the run itself creates.
    gc.collect()
    gc.freeze()


# Exercise test modules imported by the worker: {module name: (file, content hash)}.
TEST_MODULES: dict[str, tuple[str, str]] = {}


def _digest(path: str) -> str:
    import hashlib

    try:
        with open(path, "rb") as handle:
            return hashlib.sha1(handle.read()).hexdigest()
    except OSError:
        return ""


def precollect(folder: str = "exercises") -> None:
    """Import the exercise test files once, so a run does not parse, rewrite and import them.

    Safe because a test file holds only lazy handles on the learner's code (lora_kata.catalog.impl):
    if collecting imported any implementation module, everything it imported is dropped and
    children import the test files themselves. A child drops a test module whose file changed.
    """
    import pytest

    before = set(sys.modules)
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        pytest.main([f"{folder}/tests", "--collect-only", "-q", "-p", "no:cacheprovider"])
    except BaseException:  # only a speed-up: nothing here may stop the worker
        pass
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    new = set(sys.modules) - before
    tests = {m for m in new if ".tests." in f".{m}." or m.rsplit(".", 1)[-1].startswith("test_")}
    learner = {m for m in new if m.split(".")[0] in ("exercises", "solutions") and m not in tests}
    learner -= {"exercises", "solutions", "exercises.tests", "exercises.conftest"}
    if learner or any(m.startswith("lora_kata_impl_") for m in new):
        for name in new:
            sys.modules.pop(name, None)
        return
    kata = tests | ({"exercises", "exercises.conftest", "exercises.tests"} & new)
    for name in kata:  # the test files, their packages and conftest: all or none stay
        path = getattr(sys.modules[name], "__file__", None)
        if path:
            TEST_MODULES[name] = (path, _digest(path))


def _forget_changed_tests() -> None:
    """If any file imported by precollect changed since, the child imports them all afresh."""
    if any(_digest(path) != digest for path, digest in TEST_MODULES.values()):
        for name in TEST_MODULES:
            sys.modules.pop(name, None)


def _child(request: dict) -> None:
    """In the forked child: run pytest with output to the log file, never return."""
    code = 3
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest handles Ctrl-C
        os.setpgid(0, 0)  # the watcher stops a run by killing its process group
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdin = open(0, closefd=False)
        os.chdir(request.get("cwd") or os.getcwd())
        os.environ.update(request.get("env") or {})
        _forget_changed_tests()
        import pytest

        code = int(pytest.main(list(request["args"])))
    except BaseException as error:
        print(f"lora-kata worker: {type(error).__name__}: {error}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    # Ctrl-C in the terminal reaches the whole process group: the watcher handles it and
    # closes our stdin; a traceback from here would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    preload()
    precollect()
    answers = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        answers.write(json.dumps({"rc": code}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
