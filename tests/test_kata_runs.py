"""The kata as a learner and an instructor run it: `pytest exercises/` in a subprocess.

Full runs are slow (they run every exercise test), so each is made once per module.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

from lora_kata.catalog import by_id, load_catalog
from tests.kata_harness import (
    REPO,
    clean_env,
    copy_kata,
    copy_solutions,
    run_kata,
    solutions_with_stub,
)

IDS = [e.id for e in load_catalog()]


@pytest.fixture(scope="module")
def solutions_run():
    return run_kata("solutions")


@pytest.fixture(scope="module")
def stubs_run():
    return run_kata("exercises")


# Tests sharing a module fixture run on one xdist worker (`--dist loadgroup`), so each full
# run happens once; everything else spreads over the workers.
ON_SOLUTIONS_RUN = pytest.mark.xdist_group("solutions_run")
ON_STUBS_RUN = pytest.mark.xdist_group("stubs_run")


@ON_SOLUTIONS_RUN
def test_solutions_pass_the_whole_kata(solutions_run):
    assert solutions_run.returncode == 0, solutions_run.explain()
    assert solutions_run.tests(), "no exercise test ran"


@ON_SOLUTIONS_RUN
@pytest.mark.parametrize("exercise", IDS)
def test_solutions_finish_each_exercise(solutions_run, exercise):
    failed = [t["name"] for t in solutions_run.tests(exercise) if t["outcome"] == "failed"]
    assert not failed, f"the reference fails {failed}\n{solutions_run.explain()}"
    assert solutions_run.status(exercise) == "done", solutions_run.explain()


def test_solutions_copied_over_exercises_pass(tmp_path):
    """An instructor's literal `cp solutions/*.py exercises/` in a fresh copy of the kata."""
    copy_kata(tmp_path)
    for source in (REPO / "solutions").glob("*.py"):
        shutil.copy(source, tmp_path / "exercises" / source.name)
    run = run_kata("exercises", cwd=tmp_path)
    assert run.returncode == 0, run.explain()
    assert all(run.status(e) == "done" for e in IDS), run.explain()


def test_the_flag_and_the_environment_variable_select_the_same_reference():
    by_flag = run_kata("exercises", "--solutions", "-k", "test_01")
    by_env = run_kata("solutions", "-k", "test_01")
    assert by_flag.returncode == by_env.returncode == 0, by_flag.explain() + by_env.explain()
    assert by_flag.progress["impl"] == by_env.progress["impl"] == "solutions"
    assert len(by_flag.tests()) == len(by_env.tests()) > 0


@ON_STUBS_RUN
def test_untouched_stubs_fail_and_the_report_names_01_next(stubs_run):
    assert stubs_run.returncode == 1, stubs_run.explain()
    assert not [t for t in stubs_run.tests() if t["outcome"] == "passed"], "a stub passed a test"
    assert "LoRA kata: your progress" in stubs_run.output
    first = by_id("01")
    assert f"Next: 01 {first.title['en']}" in stubs_run.output, stubs_run.explain()
    assert "edit: exercises/lora.py → LoRALinear.__init__" in stubs_run.output
    assert "Traceback" not in stubs_run.output, "learners get the report, not tracebacks"
    assert stubs_run.status("01") == "not started"


@ON_STUBS_RUN
def test_later_exercises_wait_for_their_prerequisites(stubs_run):
    for exercise in load_catalog():
        if exercise.requires:
            assert stubs_run.status(exercise.id) == "waiting", (exercise.id, stubs_run.explain())
            reasons = {t["message"] for t in stubs_run.tests(exercise.id)}
            assert reasons and reasons <= set(exercise.requires), reasons


@ON_STUBS_RUN
def test_progress_file_matches_the_report(stubs_run):
    lines = stubs_run.output.splitlines()
    for entry in stubs_run.progress["exercises"]:
        row = next((line for line in lines if re.match(rf" \S {entry['id']}  ", line)), None)
        assert row is not None, f"no report line for {entry['id']}"
        word = "waiting for" if entry["status"] == "waiting" else entry["status"]
        assert word in row, (row, entry)
        if entry["total"]:
            assert f"{entry['passed']}/{entry['total']}" in row, (row, entry)
    assert stubs_run.progress["next"]["id"] == "01"
    assert {"id", "status", "passed", "total", "time_s"} <= set(stubs_run.progress["exercises"][0])


def test_a_broken_module_is_reported_with_file_and_line_and_the_rest_still_runs(tmp_path):
    impl = copy_solutions(tmp_path)
    counting = impl / "counting.py"
    lines = counting.read_text(encoding="utf-8").splitlines()
    line_no = len(lines) // 2 + 1
    lines.insert(line_no - 1, "def oops(:")
    counting.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = run_kata(impl, "-k", "test_01 or test_03")
    assert run.status("01") == "done", run.explain()
    assert run.status("03") == "broken", run.explain()
    assert f"counting.py:{line_no}" in run.output, run.explain()
    assert "SyntaxError" in run.output, run.explain()


def test_an_endless_loop_times_out_with_a_clear_message_and_the_report_still_prints(tmp_path):
    impl = copy_solutions(tmp_path)
    lora = impl / "lora.py"
    source = lora.read_text(encoding="utf-8")
    source = source.replace(
        "    return alpha / math.sqrt(r) if rslora else alpha / r",
        "    while True:\n        pass",
    )
    lora.write_text(source, encoding="utf-8")
    run = run_kata(impl, "-k", "test_tutorial_scaling_is_two", extra_env={"LORA_KATA_TIMEOUT": "2"})
    assert run.returncode == 1, run.explain()
    assert "stopped after 2 s: an endless loop" in run.output, run.explain()
    assert "LoRA kata: your progress" in run.output


def test_the_report_speaks_chinese_when_asked():
    run = run_kata("exercises", "-k", "test_01", lang="zh")
    assert "LoRA kata：学习进度" in run.output, run.explain()
    assert by_id("01").hint(1, "zh") in run.output
    assert "lessons/zh/01-lora-layer.md" in run.output


def test_an_unknown_implementation_is_refused_with_a_clear_message(tmp_path):
    run = run_kata(tmp_path / "nowhere", "-k", "test_01")
    assert run.returncode != 0
    assert "neither 'exercises' nor 'solutions' nor a package directory" in run.output


@pytest.mark.parametrize("exercise", load_catalog(), ids=lambda e: e.id)
def test_each_exercise_fails_on_its_own_untouched_stub(exercise, tmp_path):
    """Solutions everywhere except this exercise's stubs: every one of its tests must fail,
    and fail because its own stub raised NotImplementedError (not a knock-on)."""
    impl = solutions_with_stub(exercise, tmp_path)
    run = run_kata(impl, str(exercise.test_file.relative_to(REPO)), "--run-waiting")
    tests = [t for t in run.tests(exercise.id) if t["why"] != "skipped here"]
    assert tests, run.explain()
    wrong = [
        (t["name"], t["outcome"], t["error_type"], t["message"])
        for t in tests
        if t["outcome"] != "failed" or t["why"] != "own stub"
    ]
    assert not wrong, f"tests of {exercise.id} that did not fail on its own stub: {wrong}"


def _seed_all_done(impl, path):
    """A progress file saying every exercise passed on the implementation as it is now."""
    from lora_kata.runner import fingerprint

    prints = fingerprint.fingerprints(str(impl))
    exercises = [
        {"id": e.id, "title": e.title["en"], "status": "done", "passed": 1, "total": 1}
        | {"fingerprint": prints[e.id]}
        for e in load_catalog()
    ]
    data = {"schema": 1, "impl": str(impl), "lang": "en", "exercises": exercises, "tests": []}
    path.write_text(json.dumps(data), encoding="utf-8")


KATA_01 = [sys.executable, "-m", "pytest", "exercises/", "-k", "test_01", "-q"]


def _partial_run(impl, progress):
    return subprocess.run(
        [*KATA_01, "--kata-progress", str(progress), "-p", "no:cacheprovider"],
        cwd=REPO,
        env=clean_env(LORA_KATA_IMPL=str(impl), LORA_KATA_LANG="en", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_partial_run_after_an_edit_elsewhere_is_never_all_done(tmp_path):
    impl = copy_solutions(tmp_path)
    progress = tmp_path / "progress.json"
    _seed_all_done(impl, progress)
    unchanged = _partial_run(impl, progress)
    assert "Every exercise is done" in unchanged.stdout, (
        "control: with nothing edited, -k test_01 may rely on the other exercises' results\n"
        + unchanged.stdout[-3000:]
    )
    _seed_all_done(impl, progress)
    with open(impl / "data.py", "a", encoding="utf-8") as handle:
        handle.write("\ndef oops(:\n")
    edited = _partial_run(impl, progress)
    output = edited.stdout
    assert "Every exercise is done" not in output, f"green with a broken data.py:\n{output}"
    row = next((line for line in output.splitlines() if re.match(r" \S 06  ", line)), "")
    assert "changed since its last run" in row, f"06's old result must not count: {row!r}"
    assert "data.py:" in output and "does not compile" in output, output[-3000:]
