"""The learner's small commands: hint, lesson, report, reset, watch."""

import json
import signal
import subprocess
import sys
import threading
import time

from lora_kata.catalog import by_id
from lora_kata.cli.main import main
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
    assert by_id("01").hint(1, "zh") in out and "课：" in out


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


class Watcher:
    """`lora-kata watch` in a subprocess, its output collected by a thread."""

    def __init__(self, cwd, *args):
        env = clean_env(LORA_KATA_LANG="en", PYTHONUNBUFFERED="1", HYPOTHESIS_PROFILE="ci")
        env["LORA_KATA_WATCH_EVENTS"] = str(cwd / "events.jsonl")
        self.events = cwd / "events.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lora_kata", "watch", "--no-clear", "--max-runs", "40", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate, what: str, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while not predicate(self.output):
            assert self.process.poll() is None, f"watch exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"watch never showed {what}:\n{self.output}"
            time.sleep(0.1)

    def event_kinds(self) -> list[str]:
        if not self.events.is_file():
            return []
        return [json.loads(line)["event"] for line in self.events.read_text().splitlines()]

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=10)
        return self.output


def test_watch_reruns_what_a_save_affects(tmp_path):
    copy_kata(tmp_path)
    watcher = Watcher(tmp_path)
    try:
        # It starts at once and checks the untouched kata in the background...
        watcher.wait_for(lambda out: "more help:" in out, "a first report")
        time.sleep(0.3)
        # ...then solving exercise 01 (saving the reference lora.py) reruns 01.
        solved = (REPO / "solutions" / "lora.py").read_text(encoding="utf-8")
        (tmp_path / "exercises" / "lora.py").write_text(solved, encoding="utf-8")
        watcher.wait_for(
            lambda out: (
                "saved exercises/lora.py" in out
                and " ✔ 01  " in out.split("saved exercises/lora.py", 1)[1]
            ),
            "01 done after the save",
        )
    finally:
        output = watcher.stop()
    after = output.split("saved exercises/lora.py", 1)[1]
    assert "rerunning 01" in after, f"the save should rerun 01 (lora.py):\n{output}"
    assert "Every exercise is done" not in output, output


def test_watch_never_says_done_with_a_broken_file(tmp_path):
    copy_kata(tmp_path)
    for source in (REPO / "solutions").glob("*.py"):
        (tmp_path / "exercises" / source.name).write_text(source.read_text(encoding="utf-8"))
    env = clean_env(LORA_KATA_LANG="en", HYPOTHESIS_PROFILE="ci", OMP_NUM_THREADS="1")
    full = subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert "Every exercise is done" in full.stdout, full.stdout[-3000:]
    watcher = Watcher(tmp_path)
    try:
        # Nothing changed since that run: watch shows it at once, without rerunning.
        watcher.wait_for(lambda out: "Every exercise is done" in out, "the last run's report", 60)
        assert watcher.event_kinds() == [], f"watch reran an unchanged kata: {watcher.output}"
        with open(tmp_path / "exercises" / "data.py", "a", encoding="utf-8") as handle:
            handle.write("\ndef oops(:\n")
        watcher.wait_for(lambda _: "final" in watcher.event_kinds(), "the end of the reruns")
    finally:
        output = watcher.stop()
    after = output.split("saved exercises/data.py", 1)[-1]
    assert "saved exercises/data.py" in output, output
    assert "Every exercise is done" not in after, f"green with a broken data.py:\n{after}"
    assert "exercises/data.py" in after and "does not" in after, (
        f"the report after the save should say data.py is broken:\n{after}"
    )
    assert " ! 06" in after, f"06 (data.py) should be shown broken:\n{after}"
