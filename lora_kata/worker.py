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
    "lora_kata.plugin",
    "lora_kata.testing",
    "lora_kata.testing_models",
    "lora_kata.tiny",
)


def preload() -> None:
    import importlib

    from lora_kata.quiet import silence_bitsandbytes_cpu_notices

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
