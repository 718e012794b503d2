"""Where the runner reads text another program printed, because it offers no data, the format
is pinned here against the installed version. Each failure names the library, its version and
the format the runner expected, so an upgrade that changes one is seen at once (the drift
canary, .ci/drift, runs these against the newest releases).

The places (docs/developing.md, "Text the runner reads"):
- Hypothesis's failing-example note on the exception (runner/hypothesis_notes.py);
- pytest's assertion explanation after a failed `assert x, message` (runner/outcomes.py);
- pytest's own terminal lines, translated under zh (messages/pytest_zh.py: tests/
  test_chinese_report.py runs the kata under zh and finds no English);
- bitsandbytes' two CPU notices, dropped by their first words (models/quiet.py: test_quiet.py).
Everything else is read as data: exception types (stubs, broken modules, the kata's own
timeouts), pytest's Skipped.msg, the progress JSON.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_kata.runner.hypothesis_notes import LEADS, failing_example
from lora_kata.runner.outcomes import whole_message
from tests.kata_harness import clean_env


def _notes_of(test) -> list[str]:
    try:
        test()
    except AssertionError as error:
        return list(getattr(error, "__notes__", []))
    raise AssertionError("the Hypothesis test was meant to fail")


def test_hypothesis_failing_example_note_is_read_on_the_installed_version():
    @settings(database=None, max_examples=50, derandomize=True)
    @given(dims=st.tuples(st.integers(2, 9), st.integers(2, 9)), alpha=st.floats(1, 4))
    def test_x(dims, alpha):
        assert dims[0] < 3

    notes = _notes_of(test_x)
    got = failing_example(notes)
    version = metadata.version("hypothesis")
    assert got is not None and got.startswith("dims=(3, 2)"), (
        f"hypothesis {version}: its failing-example note is no longer one the runner reads "
        f"(expected a note starting with one of {LEADS} followed by ': test_x(...)'); the notes "
        f"were {notes!r}: add the new wording to runner/hypothesis_notes.py's LEADS"
    )
    assert "alpha=" in got and "#" not in got, got


def test_hypothesis_explicit_example_note_is_read_on_the_installed_version():
    from hypothesis import example

    @settings(database=None, max_examples=1)
    @given(n=st.integers(0, 1))
    @example(n=100)
    def test_y(n):
        assert n < 50

    notes = _notes_of(test_y)
    assert failing_example(notes) == "n=100", (
        f"hypothesis {metadata.version('hypothesis')}: an @example's failure note is no longer "
        f"one the runner reads (one of {LEADS}): {notes!r}"
    )


@pytest.mark.parametrize(
    "note",
    [
        "Falsifying example: test_x(\n    dims=(2, 3, 1),\n    alpha=2.0,\n)",  # < 6.170
        "Failing test case: test_x(\n    # The test always failed when commented parts were"
        " varied together.\n    dims=(2, 3, 1),\n    alpha=2.0,  # or any other generated value\n)",
    ],
)
def test_both_wordings_hypothesis_has_used_give_the_same_example_line(note):
    assert failing_example([note]) == "dims=(2, 3, 1), alpha=2.0"


PYTEST_ASSERT = textwrap.dedent(
    """
    import json, sys, pytest

    class Grab:
        def pytest_runtest_makereport(self, item, call):
            if call.excinfo is not None and call.when == "call":
                print("MESSAGE=" + json.dumps(str(call.excinfo.value)))

    open("test_pin.py", "w").write(
        "def test_it():\\n    assert {1, 2} == {1, 3}, 'the kata message\\\\nsecond line'\\n"
    )
    pytest.main(["test_pin.py", "-q", "-p", "no:cacheprovider"], plugins=[Grab()])
    """
)


def test_pytests_assertion_explanation_follows_the_message_on_the_installed_version(tmp_path):
    import json

    done = subprocess.run(
        [sys.executable, "-c", PYTEST_ASSERT],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("MESSAGE="))
    raw = json.loads(line.removeprefix("MESSAGE="))
    version = metadata.version("pytest")
    assert whole_message(raw) == "the kata message\nsecond line", (
        f"pytest {version}: a failed `assert x, message` no longer reads 'message\\nassert …' "
        f"(runner/outcomes.py cuts pytest's explanation there); it reads {raw!r}"
    )
