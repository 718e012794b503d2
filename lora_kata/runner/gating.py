"""Which exercise tests wait, and for what, in a learner's run.

- An exercise's tests wait (are skipped, "finish NN first") while an exercise it requires is
  known not to be done, from this run or from the last one on unchanged code.
- A comparison with peft (`@pytest.mark.differential`) runs last among its exercise's tests and
  waits while any of them failed in this run: the learner reads the property that failed first,
  and a failing exercise's loop does not pay for importing peft (seconds) on every rerun.
`--run-waiting` runs everything (the quality suite's mutant runs use it).
"""

from __future__ import annotations

import pytest

from lora_kata.catalog import by_id
from lora_kata.messages import t
from lora_kata.runner.outcomes import DEFERRED_PREFIX
from lora_kata.runner.progress import DONE, FAILED, PARTIAL, exercise_status

DIFFERENTIAL = "differential"


def is_differential(item: pytest.Item) -> bool:
    return item.get_closest_marker(DIFFERENTIAL) is not None


def comparisons_last(items: list[pytest.Item]) -> None:
    """Within each test file, the differential tests move to the end (stable otherwise)."""
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(str(item.path), index)
    items.sort(key=lambda item: (first_seen[str(item.path)], is_differential(item)))


def status_so_far(records: dict, exercise_id: str) -> str | None:
    """The status of an exercise whose tests ran earlier in this session, else None."""
    mine = [r for r in records.values() if r.exercise == exercise_id and r.complete]
    return exercise_status(by_id(exercise_id), mine).status if mine else None


def wait_if_needed(item: pytest.Item, exercise_id: str, records: dict, previous, lang: str):
    """Skip the test (with a reason the report understands) if it must wait."""
    for req in by_id(exercise_id).requires:
        status = status_so_far(records, req) or previous.statuses.get(req)
        if status is not None and status not in (DONE, PARTIAL):
            title = by_id(req).title_in(lang)
            # The reason starts "finish NN first" (in English: it is parsed back).
            pytest.skip(t("waiting skip", "en", req=req, title=title))
    if is_differential(item):
        failed = [r for r in records.values() if r.exercise == exercise_id and r.outcome == FAILED]
        if failed:
            pytest.skip(f"{DEFERRED_PREFIX}{exercise_id}: {failed[0].name} failed")
