"""`lora-kata report --all`, `hint` on the current code, and plain `pytest` at the root."""

import json
import subprocess
import sys

from lora_kata.cli.main import main
from lora_kata.runner import fingerprint
from tests.kata_harness import REPO, clean_env, copy_kata, run_kata


def test_report_all_lists_every_failing_tests_message(tmp_path, monkeypatch, capsys):
    copy_kata(tmp_path)
    run = run_kata("exercises", "-k", "test_03", cwd=tmp_path)
    failed = [t for t in run.tests("03") if t["outcome"] == "failed"]
    assert len(failed) > 1, f"03's untouched stubs should fail several tests: {run.explain()}"
    path = tmp_path / "progress.json"
    path.write_text(json.dumps(run.progress), encoding="utf-8")
    assert main(["--lang", "en", "report", "--all", "--progress", str(path)]) == 0
    out = capsys.readouterr().out
    for test in failed:
        assert test["name"] in out, f"report --all should list {test['name']}; printed:\n{out}"
        assert test["message"].splitlines()[0] in out, f"{test['name']}'s message is missing"
    shown_once = f"and {len(failed) - 1} more failing"
    assert out.count(" ✘ ") >= len(failed), f"one ✘ line per failing test expected:\n{out}"
    assert shown_once in out, "the summary above still says how many more fail"


def _progress_with_files(files: dict[str, str]) -> dict:
    return {
        "schema": 1,
        "impl": "exercises",
        "lang": "en",
        "finished_at": "2026-01-01T09:12:00+0000",
        "duration_s": 1.0,
        "passed": 0,
        "total": 0,
        "exercises": [],
        "next": None,
        "tests": [],
        "files": files,
    }


def test_hint_without_a_number_says_which_run_it_reads_and_what_changed_since(
    tmp_path, monkeypatch, capsys
):
    now = fingerprint.file_hashes(REPO / "exercises")
    then = dict(now, lora="0" * 16)  # as if lora.py was different at that run
    path = tmp_path / "progress.json"
    path.write_text(json.dumps(_progress_with_files(then)), encoding="utf-8")
    monkeypatch.setenv("LORA_KATA_PROGRESS", str(path))
    assert main(["--lang", "en", "hint"]) == 0
    out = capsys.readouterr().out
    assert "from the run at 09:12" in out, f"hint should name the run it reads:\n{out}"
    assert "files changed since: exercises/lora.py" in out, out
    path.write_text(json.dumps(_progress_with_files(now)), encoding="utf-8")
    assert main(["--lang", "en", "hint"]) == 0
    assert "no file changed since" in capsys.readouterr().out


def _pytest_at_root(*args, **env):
    environment = clean_env()
    environment.pop("CI", None)  # as on a learner's machine, unless the test sets it
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plain_pytest_at_the_root_says_the_kata_is_pytest_exercises():
    done = _pytest_at_root()
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and "`pytest exercises/`" in lines[0], (
        f"plain `pytest` at the root should print one line naming `pytest exercises/`, "
        f"printed:\n{done.stdout}{done.stderr}"
    )
    assert done.returncode == 4, f"expected exit code 4 (usage), got {done.returncode}"


def test_the_quality_suite_still_runs_when_asked_for():
    for env in ({"LORA_KATA_QUALITY": "1"}, {"CI": "true"}):
        done = _pytest_at_root("--collect-only", "-q", **env)
        assert done.returncode == 0 and "tests collected" in done.stdout, (
            f"with {env} plain `pytest` must collect the quality suite:\n{done.stdout[-2000:]}"
        )
    done = _pytest_at_root("tests/test_catalog.py", "--collect-only", "-q")
    assert done.returncode == 0 and "collected" in done.stdout, done.stdout[-2000:]
