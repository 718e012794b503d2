"""The learner's small commands: hint, lesson, report, reset, watch."""

import subprocess
import sys
import time

from lora_kata.catalog import by_id
from lora_kata.cli import main
from tests.kata_harness import REPO, clean_env, copy_kata


def run_cli(cwd, *args, timeout=120):
    env = clean_env(LORA_KATA_LANG="en", HYPOTHESIS_PROFILE="ci")
    return subprocess.run(
        [sys.executable, "-m", "lora_kata", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_hint_levels_go_from_nudge_to_nearly_the_answer(capsys):
    exercise = by_id("02")
    for level in (1, 2, 3):
        assert main(["--lang", "en", "hint", "02", "--level", str(level)]) == 0
        out = capsys.readouterr().out
        assert exercise.hint(level, "en") in out
        assert f"Hint {level}/3" in out


def test_hint_speaks_chinese(capsys):
    assert main(["--lang", "zh", "hint", "01"]) == 0
    out = capsys.readouterr().out
    assert by_id("01").hint(1, "zh") in out and "讲义" in out


def test_unknown_exercise_is_a_clear_error(capsys):
    assert main(["hint", "42"]) == 2
    assert "no exercise '42'" in capsys.readouterr().err


def test_reset_restores_one_exercises_stubs_and_keeps_the_rest(tmp_path):
    copy_kata(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "kata"], cwd=tmp_path, check=True)
    # The learner has solved everything in lora.py (01, 02 and 05)...
    solved = (REPO / "solutions" / "lora.py").read_text(encoding="utf-8")
    (tmp_path / "exercises" / "lora.py").write_text(solved, encoding="utf-8")
    done = run_cli(tmp_path, "reset", "05")
    assert done.returncode == 0, done.stderr
    after = (tmp_path / "exercises" / "lora.py").read_text(encoding="utf-8")
    # ...05's two stubs are back, 01's and 02's work is untouched, and a backup exists.
    assert after.count('NotImplementedError("Exercise 05:') == 2
    assert "Exercise 01:" not in after and "Exercise 02:" not in after
    assert "nn.init.kaiming_uniform_(self.lora_A" in after
    backups = list((tmp_path / ".lora_kata" / "backup").glob("lora.py.*"))
    assert backups and backups[0].read_text(encoding="utf-8") == solved


def test_watch_reruns_the_current_exercise_when_a_file_changes(tmp_path):
    copy_kata(tmp_path)
    env = clean_env(LORA_KATA_LANG="en", PYTHONUNBUFFERED="1")
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lora_kata",
            "watch",
            "--poll",
            "--interval",
            "0.2",
            "--max-runs",
            "2",
            "--no-clear",
            "--",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 240
    # Wait for the first report, then solve exercise 01 by saving the reference lora.py.
    for line in watcher.stdout:
        lines.append(line)
        if "more help:" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    time.sleep(0.5)
    solved = (REPO / "solutions" / "lora.py").read_text(encoding="utf-8")
    (tmp_path / "exercises" / "lora.py").write_text(solved, encoding="utf-8")
    rest, _ = watcher.communicate(timeout=240)
    output = "".join(lines) + rest
    assert watcher.returncode == 0, output
    assert "change detected: rerunning exercise 01" in output, output
    second = output.split("change detected", 1)[1]
    assert " ✔ 01  " in second and "done" in second, output
