"""What a run found, per test and per exercise, and the progress file instructors read.

The progress file (JSON, default `.lora_kata/progress.json`) holds, for the last run: the
implementation tested, each exercise's status with passed/total and time, the next step, and
one record per test. The report printed at the end of `pytest exercises/` is drawn from the
same data, so the two always agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog import Exercise, load_catalog

SCHEMA = 1
STUB_MESSAGE = re.compile(r"Exercise (\d\d): *(.*)")

# Test-level kinds of outcome.
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
# Why a test did not pass.
OWN_STUB, OTHER_STUB, BROKEN, TIMEOUT, WRONG, WAITING, ENV_SKIP, DEFERRED = (
    "own stub",
    "other stub",
    "broken",
    "timeout",
    "wrong",
    "waiting",
    "skipped here",
    "deferred",  # a comparison with peft, waiting for the exercise's other tests to pass
)
# Exercise statuses, in the words of the report. PARTIAL: every test this run saw passed, but
# it saw only part of the exercise (-k on part of it, a node id, -x, Ctrl-C): never "done".
DONE, FAILING, NOT_STARTED, BROKEN_STATUS, WAITING_STATUS, NOT_RUN, PARTIAL = (
    "done",
    "failing",
    "not started",
    "broken",
    "waiting",
    "not run",
    "run in part",
)


@dataclass
class TestRecord:
    nodeid: str
    name: str
    exercise: str
    outcome: str
    why: str | None = None
    error_type: str | None = None
    message: str = ""
    where: str | None = None
    example: str | None = None
    stub_exercise: str | None = None
    stub_function: str | None = None
    duration_s: float = 0.0
    seconds: float | None = None  # a timeout's limit
    first_test: str | None = None  # a timeout: the test in which the function first hung
    complete: bool = False  # its verdict is in (call phase reported, or setup failed / skipped)


@dataclass
class ExerciseResult:
    id: str
    title: str
    status: str
    passed: int = 0
    total: int = 0
    time_s: float = 0.0
    waiting_for: list[str] = field(default_factory=list)
    broken_at: str | None = None
    broken_message: str | None = None
    last_status: str | None = None  # for exercises not run this time
    changed: bool = False  # not run this time, and its code changed since its last run
    fingerprint: str | None = None  # of the files its status was measured on (fingerprint.py)
    skipped_here: list[str] = field(default_factory=list)  # reasons (no GPU, ...)
    partial: bool = False  # this run saw only part of its tests (`seen` of `total`)
    seen: int = 0


def default_path(impl: str = "exercises") -> Path:
    """The learner's progress file, or another implementation's own: a `--solutions` run (or any
    LORA_KATA_IMPL) never touches the learner's progress."""
    if os.environ.get("LORA_KATA_PROGRESS"):
        return Path(os.environ["LORA_KATA_PROGRESS"])
    folder = REPO_ROOT / ".lora_kata"
    if impl == "exercises":
        return folder / "progress.json"
    if impl == "solutions":
        return folder / "progress-solutions.json"
    digest = hashlib.sha1(str(Path(impl).expanduser().resolve()).encode()).hexdigest()[:10]
    return folder / f"progress-{digest}.json"


def read(path: Path | None = None) -> dict | None:
    path = path or default_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


@dataclass
class Previous:
    """What the last run of the same implementation found, as far as it still holds."""

    statuses: dict[str, str] = field(default_factory=dict)  # still valid: code unchanged
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # (passed, total) then
    changed: set[str] = field(default_factory=set)  # had a status, but its code changed since


def last_statuses(
    impl: str, path: Path | None = None, current: dict[str, str] | None = None
) -> Previous:
    """Each exercise's status in the last run of the same implementation, kept only where
    its fingerprint (`current`, from lora_kata.runner.fingerprint) still matches."""
    data = read(path or default_path(impl))
    previous = Previous()
    if not data or data.get("impl") != impl:
        return previous
    for e in data.get("exercises", []):
        status = e.get("last_status") if e.get("status") == NOT_RUN else e.get("status")
        if e.get("changed"):
            previous.changed.add(e["id"])  # still unchecked since an earlier edit
        if not status:
            continue
        if current is not None and e.get("fingerprint") != current.get(e["id"]):
            previous.changed.add(e["id"])
        else:
            previous.statuses[e["id"]] = status
            previous.counts[e["id"]] = (int(e.get("passed", 0)), int(e.get("total", 0)))
    return previous


def exercise_status(
    exercise: Exercise, records: list[TestRecord], expected: int | None = None
) -> ExerciseResult:
    """The status of an exercise from its tests' records. `expected`: how many tests it has in
    all; a run that saw fewer is partial and never makes it done."""
    records = [r for r in records if r.complete]
    passed = sum(r.outcome == PASSED for r in records)
    total = max(expected or 0, len(records))
    result = ExerciseResult(exercise.id, exercise.title["en"], NOT_RUN, passed, total)
    result.seen = len(records)
    result.time_s = round(sum(r.duration_s for r in records), 3)
    if not records:
        return result
    result.partial = len(records) < total
    failed = [r for r in records if r.outcome == FAILED]
    waiting = [r for r in records if r.why == WAITING]
    result.skipped_here = sorted({r.message for r in records if r.why == ENV_SKIP})
    broken = [r for r in failed if r.why == BROKEN]
    if broken:
        result.status = BROKEN_STATUS
        result.broken_at = broken[0].where
        result.broken_message = broken[0].message
    elif waiting and not failed and not passed:
        result.status = WAITING_STATUS
        result.waiting_for = sorted({r.message for r in waiting})
    elif not failed and passed:
        result.status = PARTIAL if result.partial else DONE
    elif not failed:  # everything skipped for reasons of this machine (no GPU, ...)
        result.status = NOT_RUN
    elif not passed and all(r.why == OWN_STUB for r in failed):
        result.status = NOT_STARTED
    else:
        result.status = FAILING
    return result


def summarise(
    records: list[TestRecord],
    previous: Previous,
    current: dict[str, str] | None = None,
    expected: dict[str, int] | None = None,
) -> list[ExerciseResult]:
    """Each exercise's result: this run's where it ran, else the last run's while its code is
    unchanged. A partial run whose tests all passed keeps an earlier complete verdict of "done"
    on the same code (that run saw everything); it never makes one."""
    expected = expected or {}
    results = []
    for exercise in load_catalog():
        mine = [r for r in records if r.exercise == exercise.id]
        result = exercise_status(exercise, mine, expected.get(exercise.id))
        earlier = previous.statuses.get(exercise.id)
        if result.status == PARTIAL and earlier == DONE:
            result.status, result.partial = DONE, False
            result.passed, result.total = previous.counts.get(exercise.id, (0, 0))
        if result.status == NOT_RUN and not result.seen:
            result.last_status = earlier
            result.changed = exercise.id in previous.changed
            if result.last_status:  # its counts still hold: the bar shows the whole kata
                result.passed, result.total = previous.counts.get(exercise.id, (0, 0))
        if result.status != NOT_RUN or result.last_status:
            result.fingerprint = (current or {}).get(exercise.id)
        results.append(result)
    return results


def effective_status(status: str, last_status: str | None) -> str | None:
    """This run's status, or the last run's for an exercise that did not run this time."""
    return last_status if status == NOT_RUN else status


def next_exercise(results: list[ExerciseResult]) -> ExerciseResult | None:
    """What to work on: the first exercise this run found wrong (not merely waiting), else the
    first whose latest known status is neither done nor waiting, else the first not done."""
    for result in results:
        if result.status not in (NOT_RUN, DONE, WAITING_STATUS):
            return result
    for result in results:
        if effective_status(result.status, result.last_status) not in (DONE, WAITING_STATUS):
            return result
    for result in results:
        if effective_status(result.status, result.last_status) != DONE:
            return result
    return None


def write(data: dict, path: Path | None = None) -> Path:
    """Write atomically: a reader never sees half a file."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".progress-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def as_json(
    impl: str,
    lang: str,
    results: list[ExerciseResult],
    records: list[TestRecord],
    next_step: dict | None,
    duration_s: float,
    *,
    files: dict[str, str] | None = None,
    unparsable: list[dict] | None = None,
    interrupted: bool = False,
) -> dict:
    return {
        "schema": SCHEMA,
        "impl": impl,
        "lang": lang,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(duration_s, 3),
        "passed": sum(r.passed for r in results),
        "total": sum(r.total for r in results),
        "exercises": [asdict(r) for r in results],
        "next": next_step,
        "tests": [asdict(r) for r in records],
        "files": files or {},  # {module: content hash} when the run started
        "unparsable": unparsable or [],  # implementation files that do not compile
        "interrupted": interrupted,  # Ctrl-C: what ran is recorded, nothing more is claimed
        "partial": [r.id for r in results if r.partial],  # exercises this run saw only part of
    }
