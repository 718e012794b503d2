"""Why a test did not pass, in the report's terms: from the exception, never from its text
where the exception's type says it (a stub, a broken module, a timeout).

A failure is one of: the learner's untouched stub of this exercise (own stub) or of another
(other stub), an implementation file that does not import (broken), a timeout (an endless loop?),
or a wrong answer. Skips are a prerequisite not done yet (waiting), something this machine lacks
(no GPU), or a comparison that waits for the exercise's own tests (runner/gating.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_kata import REPO_ROOT
from lora_kata.catalog import impl
from lora_kata.runner.hypothesis_notes import failing_example
from lora_kata.runner.progress import (
    BROKEN,
    DEFERRED,
    ENV_SKIP,
    OTHER_STUB,
    OWN_STUB,
    STUB_MESSAGE,
    TIMEOUT,
    WAITING,
    WRONG,
)
from lora_kata.runner.timeouts import KataTimeout

# A skip whose reason starts with one of these is the runner's own (runner/gating.py writes
# them); after WAITING_PREFIX come the two digits of the exercise waited for.
WAITING_PREFIX = "finish "
DEFERRED_PREFIX = "after the others "
MAX_MESSAGE_LINES = 12  # a message of several lines (expected and found rows) is shown whole
MAX_MESSAGE_CHARS = 1500


def crash_location(excinfo: pytest.ExceptionInfo, test_path: Path) -> str | None:
    """file:line of the deepest frame in the learner's implementation, else in the test."""
    chosen = None
    for entry in excinfo.traceback:
        path = Path(str(entry.path))
        if path == test_path or ("site-packages" not in str(path) and REPO_ROOT in path.parents):
            if "lora_kata" not in path.parts:
                chosen = (path, entry.lineno + 1)
    if chosen is None:
        return None
    path, line = chosen
    try:
        return f"{path.relative_to(REPO_ROOT)}:{line}"
    except ValueError:
        return f"{path}:{line}"


# pytest's assertion rewriting turns a failed `assert x, message` into "message\nassert {...} ==
# {...}\n  Extra items…", indenting the message's own later lines by two spaces. The kata's
# message comes first and never has a line starting "assert ";
# tests/test_third_party_formats.py pins this format on the installed pytest.
PYTEST_EXPLANATION = "\nassert "
PYTEST_INDENT = "  "


def whole_message(text: str) -> str:
    """The message without pytest's assertion explanation or blank edges, whole up to a
    sensible cap (lines and characters)."""
    if PYTEST_EXPLANATION in text:
        first, *rest = text[: text.index(PYTEST_EXPLANATION)].split("\n")
        text = "\n".join([first, *(line.removeprefix(PYTEST_INDENT) for line in rest)])
    lines = [line.rstrip() for line in text.strip().splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    cut = len(lines) > MAX_MESSAGE_LINES
    text = "\n".join(lines[:MAX_MESSAGE_LINES])
    if len(text) > MAX_MESSAGE_CHARS:
        text, cut = text[:MAX_MESSAGE_CHARS].rstrip(), True
    return text + ("\n…" if cut else "")


def first_leaf(error: BaseException) -> BaseException:
    """Hypothesis raises an ExceptionGroup when it found several distinct failures: its own
    text ("Hypothesis found 2 distinct failures") says nothing; the first failure does."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def classify_skip(report: pytest.TestReport, call: pytest.CallInfo) -> dict:
    """Waiting, deferred (runner/gating.py's own reasons), or skipped for this machine."""
    error = call.excinfo.value if call.excinfo is not None else None
    reason = getattr(error, "msg", None)  # pytest's Skipped carries the reason as data
    if not isinstance(reason, str):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
    if reason.startswith(WAITING_PREFIX):
        return {"why": WAITING, "message": reason[len(WAITING_PREFIX) : len(WAITING_PREFIX) + 2]}
    if reason.startswith(DEFERRED_PREFIX):
        return {"why": DEFERRED, "message": reason[len(DEFERRED_PREFIX) :]}
    return {"why": ENV_SKIP, "message": reason}


def classify_failure(exercise_id: str, test_path: Path, excinfo: pytest.ExceptionInfo) -> dict:
    error = first_leaf(excinfo.value)
    if error is not excinfo.value:
        excinfo = pytest.ExceptionInfo.from_exception(error)
    info: dict = {
        "error_type": type(error).__name__,
        "message": whole_message(str(error)) or type(error).__name__,
        "where": crash_location(excinfo, test_path),
    }
    example = failing_example(getattr(error, "__notes__", None) or [])
    if example:
        info["example"] = example
    if isinstance(error, impl.KataModuleBroken):
        info["why"] = BROKEN
        info["where"] = f"{error.file}:{error.line}" if error.line else error.file
        info["message"] = f"{type(error.error).__name__}: {error.error}"
        return info
    match = STUB_MESSAGE.match(str(error)) if isinstance(error, NotImplementedError) else None
    if match:
        info["stub_exercise"], info["stub_function"] = match.group(1), match.group(2).strip()
        info["why"] = OWN_STUB if match.group(1) == exercise_id else OTHER_STUB
        return info
    if isinstance(error, KataTimeout):
        info["why"] = TIMEOUT
        info["seconds"] = error.seconds
        info["message"] = error.function or ""
        info["first_test"] = error.first_test
        if error.where:
            info["where"] = error.where
        return info
    info["why"] = WRONG
    return info
