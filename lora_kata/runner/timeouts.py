"""One timeout per hung function, not one per test.

Each exercise test gets the catalogue's `timeout` (seconds; `LORA_KATA_TIMEOUT` overrides it)
across its setup, call and teardown. When it runs out, SIGALRM raises `KataTimeout` in the
running code, naming the deepest function of the implementation under test that was running
(`lora_parameter_count`, exercises/counting.py:12). That function's code is then swapped for one
that raises the same `KataTimeout` at once: every later test that calls it (directly or through
other functions) ends immediately, naming the first timeout, so an endless loop costs about one
timeout per function instead of one per test. Each run is a fresh process (watch forks a child
per run), so the swap never outlives the run.

The failure is a `KataTimeout` (a BaseException, like pytest's own outcomes, so neither
`except Exception` in the learner's code nor Hypothesis can swallow it): the report reads its
fields, never a message's text. Where there is no SIGALRM (Windows), pytest-timeout's thread
method stops the run instead (the plugin adds its marker).
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import types
from contextlib import contextmanager
from pathlib import Path

SUPPORTED = hasattr(signal, "SIGALRM") and hasattr(signal, "setitimer")


class KataTimeout(BaseException):
    """A test ran past its exercise's time limit (or called a function that did earlier)."""

    def __init__(
        self,
        seconds: float,
        function: str | None = None,
        where: str | None = None,
        first_test: str | None = None,
    ):
        super().__init__(seconds, function, where, first_test)
        self.seconds, self.function, self.where, self.first_test = (
            seconds,
            function,
            where,
            first_test,
        )

    def __str__(self) -> str:
        place = f" in {self.function}" if self.function else ""
        again = f" (it ran past the limit earlier, in {self.first_test})" if self.first_test else ""
        return f"stopped after {self.seconds:g} s{place}{again}"


# qualified name -> (the KataTimeout the first hang raised, the test it hung in).
_HUNG: dict[str, tuple[KataTimeout, str]] = {}
_state: dict = {"armed": False, "seconds": 0.0, "test": "", "impl_dir": None, "root": None}


def seconds_for(default: float) -> float:
    """The limit of one test: LORA_KATA_TIMEOUT if set, else its exercise's."""
    return float(os.environ.get("LORA_KATA_TIMEOUT") or default)


def hung_again(key: str) -> KataTimeout:
    """What the swapped code of a hung function raises (see _neutralise)."""
    first, test_name = _HUNG[key]
    return KataTimeout(first.seconds, first.function, first.where, test_name)


def _implementation_frame(frame: types.FrameType | None) -> types.FrameType | None:
    impl_dir = _state["impl_dir"]
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if impl_dir is not None and path.parent == impl_dir:
            return frame
        frame = frame.f_back
    return None


def _neutralise(code: types.CodeType, error: KataTimeout, test_name: str) -> None:
    """Swap the code of every function running `code` for one that raises at once."""
    if code.co_freevars:  # a closure: its code cannot be swapped for one without free names
        return
    key = error.function or code.co_qualname
    _HUNG[key] = (error, test_name)
    source = (
        "def _already_hung(*args, **kwargs):\n"
        "    raise __import__('lora_kata.runner.timeouts', fromlist=['_'])"
        f".hung_again({key!r})\n"
    )
    namespace: dict = {}
    exec(compile(source, code.co_filename, "exec"), namespace)
    raiser = namespace["_already_hung"].__code__.replace(co_name=code.co_name)
    for holder in gc.get_referrers(code):
        if isinstance(holder, types.FunctionType) and holder.__code__ is code:
            holder.__code__ = raiser


def _on_alarm(signum: int, frame: types.FrameType | None) -> None:
    if not _state["armed"]:
        return
    _state["armed"] = False
    seconds = _state["seconds"]
    hung = _implementation_frame(frame)
    if hung is None:
        raise KataTimeout(seconds)
    code = hung.f_code
    path = Path(code.co_filename)
    try:
        shown = path.relative_to(_state["root"]).as_posix()
    except (TypeError, ValueError):
        shown = str(path)
    error = KataTimeout(seconds, code.co_qualname, f"{shown}:{hung.f_lineno}")
    _neutralise(code, error, _state["test"])
    raise error


def configure(impl_dir: Path, root: Path) -> bool:
    """Install the handler (main thread only); False where this mechanism is unavailable."""
    if not SUPPORTED or threading.current_thread() is not threading.main_thread():
        return False
    _state["impl_dir"], _state["root"] = impl_dir.resolve(), root
    signal.signal(signal.SIGALRM, _on_alarm)
    return True


@contextmanager
def limit(test_name: str, seconds: float, deadline: list[float]):
    """Arm the alarm for one phase of a test; `deadline` (a one-item list) is shared by the
    phases of that test, so setup, call and teardown together get `seconds`."""
    import time

    if not deadline:
        deadline.append(time.monotonic() + seconds)
    remaining = deadline[0] - time.monotonic()
    _state.update(armed=True, seconds=seconds, test=test_name)
    signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))
    try:
        yield
    finally:
        _state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def mark_for_pytest_timeout(item, default: float) -> None:
    """Where SIGALRM is missing: pytest-timeout's thread method (it stops the whole run)."""
    import pytest

    if not item.get_closest_marker("timeout"):
        item.add_marker(pytest.mark.timeout(seconds_for(default), method="thread"))
