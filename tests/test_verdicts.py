""" "Done" is a promise: only a complete run on the current code may say it.

End to end, in subprocesses on copies of the reference: a run of part of an exercise (`-k` on
part of it, a node id, `-x`) or an interrupted run (Ctrl-C) records what it saw and never makes
the exercise, or the kata, done; a `--solutions` run never touches the learner's progress; an
endless loop in one function costs one timeout, not one per test.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_kata.catalog import by_id, load_catalog
from lora_kata.runner.selection import static_test_count
from tests.kata_harness import REPO, clean_env, copy_kata, copy_solutions, run_kata

pytestmark = pytest.mark.xdist_group("verdicts")


def _exercise(progress: dict, exercise_id: str) -> dict:
    return next(e for e in progress["exercises"] if e["id"] == exercise_id)


def _break(impl: Path, module: str, find: str, replace: str) -> None:
    path = impl / module
    source = path.read_text(encoding="utf-8")
    assert source.count(find) == 1, f"{find!r} no longer occurs once in {module}"
    path.write_text(source.replace(find, replace), encoding="utf-8")


EVERY_KEY = "    return dict(model.state_dict())\n"
ONLY_LORA_KEYS = "    return {k: v for k, v in model.state_dict().items() if k in keys}\n"


def test_a_k_expression_on_part_of_an_exercise_runs_it_in_part_never_done(tmp_path):
    impl = copy_solutions(tmp_path)
    _break(impl, "inject.py", ONLY_LORA_KEYS, EVERY_KEY)  # a real bug the part does not see
    run = run_kata(impl, "-k", "test_04 and substrings")
    entry = _exercise(run.progress, "04")
    assert entry["status"] == "run in part", run.explain()
    assert entry["partial"] and entry["seen"] == 1, entry
    assert entry["total"] == static_test_count(by_id("04").test_file), entry
    assert "04 was run in part (1 of its" in run.output, run.explain()
    assert "pytest exercises/ -k test_04" in run.output
    assert "Every exercise is done" not in run.output
    assert run.progress["partial"] == ["04"]


def test_a_node_id_and_x_run_record_what_they_saw_and_no_more(tmp_path):
    impl = copy_solutions(tmp_path)
    test_file = by_id("01").test_file.relative_to(REPO)
    first = next(
        line.split("(")[0].removeprefix("def ")
        for line in by_id("01").test_file.read_text(encoding="utf-8").splitlines()
        if line.startswith("def test_")
    )
    run = run_kata(impl, f"{test_file}::{first}")
    assert _exercise(run.progress, "01")["status"] == "run in part", run.explain()
    _break(impl, "counting.py", "    return r * (in_features + out_features)", "    return 0")
    stopped = run_kata(impl, "-x", "-k", "test_03")
    entry = _exercise(stopped.progress, "03")
    assert entry["status"] == "failing" and entry["partial"], stopped.explain()
    assert entry["seen"] < entry["total"], entry


def test_ctrl_c_is_reported_as_interrupted_and_a_later_run_is_never_all_done(tmp_path):
    impl = copy_solutions(tmp_path)
    progress = tmp_path / "progress.json"
    args = ["--kata-progress", str(progress), "-p", "no:cacheprovider", "-q"]
    env = clean_env(LORA_KATA_IMPL=str(impl), LORA_KATA_LANG="en", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert "Every exercise is done" in done.stdout, done.stdout[-3000:]  # the control
    # 04's code changes (each lora_state_dict now takes a while), so its old verdict is void.
    _break(
        impl, "inject.py", ONLY_LORA_KEYS, "    import time\n    time.sleep(0.4)\n" + ONLY_LORA_KEYS
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "exercises/", "-k", "test_04", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    dots = 0
    deadline = time.monotonic() + 300
    while dots < 5 and time.monotonic() < deadline:  # some of 04's tests have finished
        char = child.stdout.read(1)
        if not char:
            break
        dots += char == "."
    child.send_signal(signal.SIGINT)
    output = child.stdout.read()
    child.wait(timeout=120)
    data = json.loads(progress.read_text(encoding="utf-8"))
    assert data["interrupted"], output[-3000:]
    assert _exercise(data, "04")["status"] != "done", _exercise(data, "04")
    assert "Interrupted (Ctrl-C)" in output, output[-3000:]
    later = subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/", "-k", "not test_04", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert "Every exercise is done" not in later.stdout, later.stdout[-3000:]


def test_a_solutions_run_leaves_the_learners_progress_unchanged(tmp_path):
    tree = copy_kata(tmp_path)
    shutil.copytree(REPO / "solutions", tree / "solutions")
    env = clean_env(LORA_KATA_LANG="en", OMP_NUM_THREADS="1")
    kata = [sys.executable, "-m", "pytest", "exercises/", "-q", "-p", "no:cacheprovider"]
    subprocess.run([*kata, "-k", "test_01"], cwd=tree, env=env, capture_output=True, timeout=600)
    learners = tree / ".lora_kata" / "progress.json"
    before = learners.read_bytes()
    assert json.loads(before)["impl"] == "exercises"
    subprocess.run(
        [*kata, "--solutions", "-k", "test_01"], cwd=tree, env=env, capture_output=True, timeout=600
    )
    assert learners.read_bytes() == before, "a --solutions run rewrote the learner's progress"
    theirs = json.loads((tree / ".lora_kata" / "progress-solutions.json").read_text())
    assert theirs["impl"] == "solutions" and _exercise(theirs, "01")["status"] == "done"


def test_an_endless_loop_in_one_function_costs_one_timeout_not_one_per_test(tmp_path):
    impl = copy_solutions(tmp_path)
    _break(
        impl,
        "counting.py",
        "    return r * (in_features + out_features)",
        "    while True:\n        pass",
    )
    # 10 s: room for the slowest healthy test of 03 on a loaded machine (its first builds a model).
    run = run_kata(impl, "-k", "test_03", extra_env={"LORA_KATA_TIMEOUT": "10"})
    hung = [t for t in run.tests("03") if t["message"] == "lora_parameter_count"]
    assert len(hung) >= 3 and all(t["why"] == "timeout" for t in hung), run.explain()
    waited = [t for t in hung if not t["first_test"]]
    assert len(waited) == 1, f"only the first test may wait out the limit: {waited}"
    first = waited[0]["name"]
    for record in hung:
        if record["name"] != first:
            assert record["first_test"] == first, record
            assert record["duration_s"] < 10, f"{record['name']} waited too: {record}"
    assert "in lora_parameter_count" in run.output, run.explain()


COLLECT = """
import collections, json, sys, pytest
class Count:
    def __init__(self):
        self.files = collections.Counter()
    def pytest_collection_modifyitems(self, items):
        self.files.update(str(item.path) for item in items)
count = Count()
pytest.main(["exercises/", "--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[count])
print(json.dumps(count.files))
"""


def test_each_exercises_test_count_read_from_its_file_equals_what_pytest_collects():
    done = subprocess.run(
        [sys.executable, "-c", COLLECT],
        cwd=REPO,
        env=clean_env(LORA_KATA_IMPL="solutions"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    collected = json.loads(done.stdout.strip().splitlines()[-1])
    for exercise in load_catalog():
        counted = static_test_count(exercise.test_file)
        found = collected.get(str(exercise.test_file))
        assert counted == found, (
            f"{exercise.test_file.name}: the runner counts {counted} tests without importing it, "
            f"pytest collects {found}: runner/selection.py cannot read a decorator there (use a "
            "literal list in @pytest.mark.parametrize), so every run of it would be 'in part'"
        )
