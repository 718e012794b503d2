"""The pytest plugin behind `pytest exercises/` (loaded by exercises/conftest.py).

Options, the implementation, timeouts, waiting, why each test failed, the progress file and
the report. Speed matters (a learner reruns it after every edit): `-k test_NN` imports no other
exercise's test file, and heavy libraries are configured only once a test imports them.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from lora_kata import REPO_ROOT
from lora_kata.catalog import by_id, exercise_of_test_file, impl, load_catalog
from lora_kata.messages import use_language
from lora_kata.messages.language import language
from lora_kata.runner import fingerprint, gating, outcomes, progress, timeouts
from lora_kata.runner.collect import keyword_excludes_file
from lora_kata.runner.interrupt import pytest_keyboard_interrupt
from lora_kata.runner.progress import FAILED, PASSED, SKIPPED, TestRecord
from lora_kata.runner.report import next_step, render_report
from lora_kata.runner.selection import static_test_count
from lora_kata.runner.speed import lighter_pytest, no_map_cache


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
        help="run the tests of exercises whose earlier exercises are not done yet, and the "
        "comparisons with peft before the exercise's other tests pass",
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
        explicit = config.getoption("--kata-progress")
        self.progress_path = Path(explicit) if explicit else progress.default_path(self.impl)
        try:
            self.fingerprints = fingerprint.fingerprints(self.impl)
        except OSError:
            self.fingerprints = {}
        impl_dir = fingerprint.implementation_dir(self.impl)
        self.files = fingerprint.file_hashes(impl_dir)
        self.previous = progress.last_statuses(self.impl, self.progress_path, self.fingerprints)
        self.records: dict[str, TestRecord] = {}
        self.collected: Counter[str | None] = Counter()  # exercise -> tests collected
        self.deadlines: dict[str, list[float]] = {}  # nodeid -> [deadline] shared by its phases
        self.own_timeouts = timeouts.configure(impl_dir, REPO_ROOT)
        self.interrupted = False
        self.started = time.monotonic()
        self.summary: dict | None = None


STATE_KEY = pytest.StashKey[KataState]()


def _state(config: pytest.Config) -> KataState:
    return config.stash[STATE_KEY]


def pytest_configure(config: pytest.Config) -> None:
    from lora_kata.models.quiet import silence_bitsandbytes_cpu_notices
    from lora_kata.runner.post_import import when_imported
    from lora_kata.testing.hypothesis_profiles import profile_name, register_and_load

    if config.getoption("--solutions"):
        os.environ[impl.ENV_VAR] = "solutions"
    if impl.unavailable():  # a student repository has no solutions/: one sentence, no 78 failures
        raise pytest.UsageError(impl.unavailable())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes wraps a few CPU kernels in torch.compile at import (the whole inductor, for
    # seconds) that the 8-bit path never calls: eager, as bitsandbytes falls back to anyway.
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    lighter_pytest(config)
    profile_name()  # an unknown HYPOTHESIS_PROFILE is an error now, not mid-run
    when_imported("hypothesis", register_and_load)  # before any @given reads the default
    when_imported("datasets", no_map_cache)
    silence_bitsandbytes_cpu_notices()
    learner = impl.current() == "exercises"
    if config.option.tbstyle == "auto":  # the report is the interface; --tb=short for tracebacks
        config.option.tbstyle = "no" if learner else "line"
    if learner and config.option.reportchars == "fE":
        config.option.reportchars = ""
    state = KataState(config)
    config.stash[STATE_KEY] = state
    use_language(state.lang)  # the tests' assertion messages follow the report's language


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
    """`-k test_02` never imports the other exercises' test files (nor their libraries), and no
    run imports those of an exercise the course file (catalog/course.py) leaves out."""
    exercise_id = exercise_of_test_file(collection_path)
    if collection_path.suffix != ".py" or exercise_id is None:
        return None
    if exercise_id not in {e.id for e in load_catalog()}:
        return True
    keyword = config.getoption("keyword")
    return True if keyword and keyword_excludes_file(keyword, collection_path) else None


def _exercise_of(item: pytest.Item) -> str | None:
    """The catalogued exercise a test belongs to (by its file name), else None."""
    exercise_id = exercise_of_test_file(item.path)
    known = {e.id for e in load_catalog()}
    return exercise_id if exercise_id in known else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before `-k` / `-m` deselect anything: how many tests each exercise has, the comparisons
    with peft last, and a timeout on every exercise test."""
    state = _state(config)
    state.collected = Counter(_exercise_of(item) for item in items)
    gating.comparisons_last(items)
    if not state.own_timeouts:  # no SIGALRM (Windows): pytest-timeout ends the run instead
        for item in items:
            exercise_id = _exercise_of(item)
            if exercise_id is not None:
                timeouts.mark_for_pytest_timeout(item, by_id(exercise_id).timeout)


def _within_limit(item: pytest.Item):
    """Run one phase of a test (the hook wrapper's yield) inside its exercise's time limit;
    setup, call and teardown share one deadline. Other tests, or no SIGALRM: no limit here."""
    state = _state(item.config)
    exercise_id = _exercise_of(item)
    if exercise_id is None or not state.own_timeouts:
        return (yield)
    marker = item.get_closest_marker("timeout")
    default = marker.args[0] if marker and marker.args else by_id(exercise_id).timeout
    deadline = state.deadlines.setdefault(item.nodeid, [])
    with timeouts.limit(item.name, timeouts.seconds_for(default), deadline):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    exercise_id = _exercise_of(item)
    state = _state(item.config)
    if exercise_id is not None and not item.config.getoption("--run-waiting"):
        gating.wait_if_needed(item, exercise_id, state.records, state.previous, state.lang)
    return (yield from _within_limit(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _within_limit(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    return (yield from _within_limit(item))


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
    # A verdict is in once the call phase reported, or setup ended the test (failed, skipped).
    if report.when == "call" or (report.when == "setup" and not report.passed):
        record.complete = True
    if report.failed or (report.skipped and record.outcome == PASSED):
        if record.outcome == FAILED:
            return report  # keep the first failure (call before teardown)
        record.outcome = FAILED if report.failed else SKIPPED
        if report.skipped:
            info = outcomes.classify_skip(report, call)
        elif call.excinfo is not None:
            info = outcomes.classify_failure(exercise_id, Path(str(item.path)), call.excinfo)
        else:
            info = {}
        for key, value in info.items():
            setattr(record, key, value)
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Hypothesis offers a `git apply` patch of failing examples; a learner needs the report.
    report.__dict__.pop("_hypothesis_failing_examples", None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if STATE_KEY not in config.stash:
        return
    state = _state(config)
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        state.interrupted = True
    records = list(state.records.values())
    # Every exercise's size, run or not, so the bar's total is the whole kata's in every run
    # (what collection saw, before -k deselected, where the file cannot be read).
    expected = {
        e.id: max(static_test_count(e.test_file) or 0, state.collected.get(e.id, 0))
        for e in load_catalog()
    }
    results = progress.summarise(records, state.previous, state.fingerprints, expected)
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
        interrupted=state.interrupted,
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
    "pytest_keyboard_interrupt",
    "pytest_runtest_call",
    "pytest_runtest_logreport",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
]
