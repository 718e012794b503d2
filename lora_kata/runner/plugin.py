"""The pytest plugin behind `pytest exercises/` (loaded by exercises/conftest.py).

It registers the kata's options, picks the implementation, puts a timeout on every exercise
test, skips the tests of an exercise whose prerequisites are not done, records why each test
failed, writes the progress file and prints the progress report.

Speed matters (a learner reruns it after every edit): `-k test_NN` does not even import the
other exercises' test files, and heavy libraries are configured only once a test imports them.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from lora_kata import REPO_ROOT
from lora_kata.catalog import by_id, exercise_of_test_file, impl, load_catalog
from lora_kata.messages import t, use_language
from lora_kata.messages.language import language
from lora_kata.runner import fingerprint, progress
from lora_kata.runner.collect import keyword_excludes_file
from lora_kata.runner.hypothesis_notes import failing_example
from lora_kata.runner.progress import (
    BROKEN,
    DONE,
    ENV_SKIP,
    FAILED,
    OTHER_STUB,
    OWN_STUB,
    PASSED,
    SKIPPED,
    STUB_MESSAGE,
    TIMEOUT,
    WAITING,
    WRONG,
    TestRecord,
)
from lora_kata.runner.report import next_step, render_report

WAITING_PREFIX = "finish "
TIMEOUT_MESSAGE = re.compile(r"Timeout \(>([\d.]+)s\) from pytest-timeout")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lora-kata", "LoRA kata")
    group.addoption(
        "--solutions",
        action="store_true",
        help="test the reference solutions/ instead of your exercises/ "
        "(the same as LORA_KATA_IMPL=solutions)",
    )
    group.addoption(
        "--run-waiting",
        action="store_true",
        help="run the tests of exercises whose earlier exercises are not done yet",
    )
    group.addoption(
        "--lang",
        choices=("en", "zh"),
        default=None,
        help="language of the report and hints (default: LORA_KATA_LANG, then the locale)",
    )
    group.addoption(
        "--kata-progress",
        default=None,
        metavar="PATH",
        help="where to write the progress JSON (default: .lora_kata/progress.json)",
    )
    group.addoption(
        "--no-kata-report", action="store_true", help="do not print the progress report"
    )


class KataState:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.lang = language(config.getoption("--lang"))
        self.impl = impl.current()
        self.progress_path = Path(config.getoption("--kata-progress") or progress.default_path())
        try:
            self.fingerprints = fingerprint.fingerprints(self.impl)
        except OSError:
            self.fingerprints = {}
        self.files = fingerprint.file_hashes(fingerprint.implementation_dir(self.impl))
        self.previous = progress.last_statuses(self.impl, self.progress_path, self.fingerprints)
        self.records: dict[str, TestRecord] = {}
        self.started = time.monotonic()
        self.summary: dict | None = None


STATE_KEY = pytest.StashKey[KataState]()


def _state(config: pytest.Config) -> KataState:
    return config.stash[STATE_KEY]


def _no_map_cache(datasets_module) -> None:
    # datasets fingerprints a mapped function by its own code only: a helper it calls is
    # referred to by name, so after the learner fixes the helper `map` would serve the old,
    # cached result. Kata runs therefore never reuse a map cache.
    datasets_module.disable_caching()


# Distributions whose modules pytest marks for assertion rewriting because they ship a pytest
# plugin: rewriting Hypothesis's ~80 library modules costs a second or more on every run where
# bytecode is not cached (PYTHONDONTWRITEBYTECODE), and no test asserts inside them.
NOT_REWRITTEN = ("hypothesis", "_hypothesis_pytestplugin", "_hypothesis_globals")


def _lighter_pytest(config: pytest.Config) -> None:
    """Two pytest costs a learner pays on every run for nothing (pytest internals: if they
    moved, leave everything as it is)."""
    try:
        from _pytest.assertion.rewrite import assertstate_key

        hook = config.stash[assertstate_key].hook
        must_rewrite = hook._must_rewrite
        if isinstance(must_rewrite, set):
            must_rewrite.difference_update(NOT_REWRITTEN)
            hook._marked_for_rewrite_cache.clear()
    except (ImportError, KeyError, AttributeError):
        pass
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key

        # Five full garbage collections at exit (with torch loaded, 0.1-0.5 s each) only to
        # find exceptions raised in __del__ of garbage: nothing the kata's report shows.
        config.stash[gc_collect_iterations_key] = 0
    except ImportError:
        pass


def pytest_configure(config: pytest.Config) -> None:
    from lora_kata.models.quiet import silence_bitsandbytes_cpu_notices
    from lora_kata.runner.post_import import when_imported
    from lora_kata.testing.hypothesis_profiles import profile_name, register_and_load

    if config.getoption("--solutions"):
        os.environ[impl.ENV_VAR] = "solutions"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes wraps a few CPU kernels in torch.compile at import, which imports the
    # whole inductor compiler (seconds) for functions the 8-bit path never calls; with
    # dynamo off they run eagerly, as bitsandbytes itself falls back to on any failure.
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    _lighter_pytest(config)
    profile_name()  # an unknown HYPOTHESIS_PROFILE is an error now, not mid-run
    when_imported("hypothesis", register_and_load)  # before any @given reads the default
    when_imported("datasets", _no_map_cache)
    silence_bitsandbytes_cpu_notices()
    learner = impl.current() == "exercises"
    if config.option.tbstyle == "auto":
        # The report is the interface; `--tb=short` brings the tracebacks back.
        config.option.tbstyle = "no" if learner else "line"
    if learner and config.option.reportchars == "fE":
        config.option.reportchars = ""
    state = KataState(config)
    config.stash[STATE_KEY] = state
    # The tests' assertion messages (lora_kata/messages) follow the report's language.
    use_language(state.lang)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under zh, pytest's own header and closing line speak Chinese too."""
    config = session.config
    if STATE_KEY not in config.stash or _state(config).lang != "zh":
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        from lora_kata.messages.pytest_zh import speak_chinese

        speak_chinese(reporter)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-k test_02` never imports the other exercises' test files (nor their libraries)."""
    if collection_path.suffix != ".py" or exercise_of_test_file(collection_path) is None:
        return None
    keyword = config.getoption("keyword")
    if keyword and keyword_excludes_file(keyword, collection_path):
        return True
    return None


def _exercise_of(item: pytest.Item) -> str | None:
    """The catalogued exercise a test belongs to (by its file name), else None."""
    exercise_id = exercise_of_test_file(item.path)
    known = {e.id for e in load_catalog()}
    return exercise_id if exercise_id in known else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    method = "signal" if hasattr(signal, "SIGALRM") else "thread"
    for item in items:
        exercise_id = _exercise_of(item)
        if exercise_id is None or item.get_closest_marker("timeout"):
            continue
        # signal: the test fails with a message and the run (and its report) goes on.
        seconds = float(os.environ.get("LORA_KATA_TIMEOUT") or by_id(exercise_id).timeout)
        item.add_marker(pytest.mark.timeout(seconds, method=method))


def _status_so_far(state: KataState, exercise_id: str) -> str | None:
    """The status of an exercise whose tests ran earlier in this session, else None."""
    mine = [r for r in state.records.values() if r.exercise == exercise_id]
    return progress.exercise_status(by_id(exercise_id), mine).status if mine else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    exercise_id = _exercise_of(item)
    if exercise_id is None or item.config.getoption("--run-waiting"):
        return
    state = _state(item.config)
    for req in by_id(exercise_id).requires:
        status = _status_so_far(state, req) or state.previous.statuses.get(req)
        if status is not None and status != DONE:
            title = by_id(req).title_in(state.lang)
            # The reason starts "finish NN first" (in English: it is parsed back below).
            pytest.skip(t("waiting skip", "en", req=req, title=title))


def _crash_location(excinfo: pytest.ExceptionInfo, test_path: Path) -> str | None:
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


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _first_leaf(error: BaseException) -> BaseException:
    """Hypothesis raises an ExceptionGroup when it found several distinct failures: its own
    text ("Hypothesis found 2 distinct failures") says nothing; the first failure does."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _classify(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport) -> dict:
    exercise_id = _exercise_of(item)
    info: dict = {}
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        info["why"] = WAITING if reason.startswith(WAITING_PREFIX) else ENV_SKIP
        info["message"] = reason
        if info["why"] == WAITING:
            info["message"] = reason[len(WAITING_PREFIX) : len(WAITING_PREFIX) + 2]
        return info
    excinfo = call.excinfo
    if excinfo is None:
        return info
    error = _first_leaf(excinfo.value)
    info["error_type"] = type(error).__name__
    info["message"] = _first_line(str(error)) or type(error).__name__
    if error is not excinfo.value:
        excinfo = pytest.ExceptionInfo.from_exception(error)
    info["where"] = _crash_location(excinfo, Path(str(item.path)))
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
    timeout = TIMEOUT_MESSAGE.search(str(error))
    if timeout:
        info["why"] = TIMEOUT
        info["message"] = f"Timeout after {timeout.group(1)} s"
        return info
    info["why"] = WRONG
    return info


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    exercise_id = _exercise_of(item)
    if exercise_id is None:
        return report
    state = _state(item.config)
    record = state.records.get(item.nodeid)
    if record is None:
        record = TestRecord(item.nodeid, item.name, exercise_id, PASSED)
        state.records[item.nodeid] = record
    record.duration_s = round(record.duration_s + report.duration, 4)
    if report.failed or (report.skipped and record.outcome == PASSED):
        if record.outcome == FAILED:
            return report  # keep the first failure (call before teardown)
        record.outcome = FAILED if report.failed else SKIPPED
        for key, value in _classify(item, call, report).items():
            setattr(record, key, value)
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Hypothesis offers a `git apply` patch of failing examples; a learner needs the report.
    report.__dict__.pop("_hypothesis_failing_examples", None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if STATE_KEY not in config.stash:
        return
    state = _state(config)
    records = list(state.records.values())
    results = progress.summarise(records, state.previous, state.fingerprints)
    unparsable = fingerprint.unparsable(state.impl)
    step = next_step(results, records, state.lang, unparsable)
    state.summary = progress.as_json(
        state.impl,
        state.lang,
        results,
        records,
        step,
        time.monotonic() - state.started,
        files=state.files,
        unparsable=unparsable,
    )
    if records:
        progress.write(state.summary, state.progress_path)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if STATE_KEY not in config.stash or config.getoption("--no-kata-report"):
        return
    state = _state(config)
    if not state.summary or not state.records:
        return
    render_report(terminalreporter, state.summary, state.lang)


__all__ = [
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_ignore_collect",
    "pytest_runtest_logreport",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
]
