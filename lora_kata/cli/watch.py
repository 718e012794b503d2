"""`lora-kata watch`: a verdict within a second of saving, and never green on a broken tree.

- It starts watching at once. Exercises whose last result no longer matches the code (their
  fingerprint changed, see lora_kata.runner.fingerprint) are queued and checked in the background.
- A save queues the exercises that can be affected: those with a function in the saved
  module, those whose modules import it, and those that require them (the catalogue's
  `requires`). The first batch runs them up to the exercise you are working on and prints the
  report; the rest follow one at a time, and a new save interrupts them.
- Runs go to a warm worker (lora_kata.cli.worker) that has the heavy libraries imported and forks
  a fresh child per run; without fork, a plain `python -m pytest` subprocess.
- "Every exercise is done" appears only when every exercise passed on the current code and
  every file compiles: the report (lora_kata.runner.report) decides that from the progress file.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog import by_id, load_catalog
from lora_kata.messages import t
from lora_kata.messages.language import language
from lora_kata.runner import fingerprint, progress
from lora_kata.runner.progress import DONE, NOT_RUN, PARTIAL
from lora_kata.runner.report import refresh, report_lines

ANSI = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1"}


class Runner:
    """Runs one pytest session at a time, in the warm worker or a subprocess; killable."""

    def __init__(self, use_worker: bool):
        self.worker: subprocess.Popen | None = None
        self.answers: queue.Queue = queue.Queue()
        self.pid: int | None = None
        self.process: subprocess.Popen | None = None
        if use_worker and hasattr(os, "fork"):
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "lora_kata.cli.worker"],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            # A thread reads the worker's answers, so a quick run's two lines never sit in a
            # buffer that select() cannot see.
            threading.Thread(target=self._read_answers, daemon=True).start()

    def _read_answers(self) -> None:
        for line in self.worker.stdout:
            if line.strip():
                self.answers.put(json.loads(line))
        self.answers.put({"rc": 3, "died": True})

    def start(self, args: list[str], log: Path) -> None:
        if self.worker is not None and self.worker.poll() is None:
            request = {"args": args, "log": str(log), "cwd": str(Path.cwd()), "env": {}}
            try:
                self.worker.stdin.write(json.dumps(request) + "\n")
                self.worker.stdin.flush()
                answer = self.answers.get(timeout=600)
            except (OSError, queue.Empty):
                answer = {"died": True}
            if "pid" in answer:
                self.pid = answer["pid"]
                return
        self.worker = None  # no fork, or the worker died: plain subprocesses from now on
        with open(log, "w", encoding="utf-8") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pytest", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.pid is not None or self.process is not None

    def poll(self) -> int | None:
        """The exit code once the run ended, else None (non-blocking)."""
        if self.process is not None:
            code = self.process.poll()
            if code is not None:
                self.process = None
            return code
        if self.pid is None:
            return None
        try:
            answer = self.answers.get_nowait()
        except queue.Empty:
            return None
        self.pid = None
        return int(answer.get("rc", 3))

    def stop(self) -> None:
        """Stop the current run (its result is out of date)."""
        if self.process is not None:
            _kill_group(self.process.pid)
            self.process.wait()
            self.process = None
        elif self.pid is not None:
            _kill_group(self.pid)
            try:
                self.answers.get(timeout=60)
            except queue.Empty:
                pass
            self.pid = None

    def close(self) -> None:
        self.stop()
        if self.worker is not None:
            self.worker.stdin.close()
            self.worker.terminate()
            self.worker.wait()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _snapshot(folder: Path) -> dict[str, str]:
    return fingerprint.file_hashes(folder)


def _changed_modules(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {m for m in set(before) | set(after) if before.get(m) != after.get(m)}


def _working_on(data: dict | None) -> str | None:
    """The first exercise whose last known status is not done (what the learner is on)."""
    statuses = {}
    for e in (data or {}).get("exercises", []):
        statuses[e["id"]] = e.get("last_status") if e["status"] == NOT_RUN else e["status"]
    for exercise in load_catalog():
        if statuses.get(exercise.id) != DONE:
            return exercise.id
    return None


def _stale(impl: str) -> list[str]:
    """Exercises with no verdict that still holds for the current code (a run in part is none)."""
    previous = progress.last_statuses(impl, None, fingerprint.fingerprints(impl))
    return [e.id for e in load_catalog() if previous.statuses.get(e.id) in (None, PARTIAL)]


def _owners(modules: set[str]) -> list[str]:
    return [e.id for e in load_catalog() if set(e.modules) & modules]


class Watch:
    def __init__(self, args, out=None):
        self.args = args
        self.out = out or sys.stdout
        self.lang = language(getattr(args, "lang", None))
        self.impl = os.environ.get("LORA_KATA_IMPL", "").strip() or "exercises"
        self.folder = fingerprint.implementation_dir(self.impl)
        self.colour = getattr(self.out, "isatty", lambda: False)() and not os.environ.get(
            "NO_COLOR"
        )
        self.events = os.environ.get("LORA_KATA_WATCH_EVENTS")
        self.log = REPO_ROOT / ".lora_kata" / "watch-run.log"
        self.queue: list[str] = []
        self.batch: list[str] = []
        self.first_batch = False
        self.verdicts = 0
        self.saved: list[str] = []

    # --- output -------------------------------------------------------------------------
    def say(self, text: str = "", **markup: bool) -> None:
        if self.colour and any(markup.values()):
            codes = ";".join(ANSI[k] for k, v in markup.items() if v and k in ANSI)
            text = f"\033[{codes}m{text}\033[0m"
        print(text, file=self.out, flush=True)

    def event(self, kind: str, **fields) -> None:
        if self.events:
            with open(self.events, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"event": kind, "t": time.time(), **fields}) + "\n")

    def show_report(self) -> dict | None:
        data = progress.read()
        if data is None:
            return None
        data = refresh(data, self.lang)  # edits made since the run count
        if self.args.clear and self.colour:
            print("\033[2J\033[H", end="", file=self.out)
        self.say("─" * 20 + " " + t("title", self.lang) + " " + "─" * 20, bold=True)
        for line, markup in report_lines(data, self.lang):
            self.say(line, **markup)
        if self.queue:
            self.say(" … " + t("rechecking", self.lang, ids=", ".join(self.queue)), yellow=True)
        return data

    # --- scheduling ---------------------------------------------------------------------
    def enqueue(self, ids: list[str]) -> None:
        self.queue = sorted(set(self.queue) | set(ids))

    def next_batch(self, changed: set[str]) -> list[str]:
        """Up to the exercise being worked on in one run (one verdict); then one at a time."""
        if not self.first_batch:
            return self.queue[:1]
        limit = _working_on(progress.read())
        if limit is None:
            owners = _owners(changed) if changed else []
            limit = max(owners) if owners else self.queue[0]
        return [e for e in self.queue if e <= limit] or self.queue[:1]

    def start(self, runner: Runner, changed: set[str]) -> None:
        self.batch = self.next_batch(changed)
        self.queue = [e for e in self.queue if e not in self.batch]
        files = [str(by_id(e).test_file.relative_to(REPO_ROOT)) for e in self.batch]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        args = [*files, "--no-kata-report", "-q", "-p", "no:cacheprovider", *self.pytest_args]
        runner.start(args, self.log)

    @property
    def pytest_args(self) -> list[str]:
        extra = list(self.args.pytest_args or [])
        return extra[1:] if extra[:1] == ["--"] else extra

    def finished(self, code: int) -> None:
        verdict = self.first_batch
        self.first_batch = False
        if code not in (0, 1, 5):  # not a test outcome: pytest itself failed; show why
            self.say(t("pytest stopped", self.lang, code=code), red=True)
            self.say(self.log.read_text(encoding="utf-8", errors="replace")[-3000:])
        if verdict or not self.queue:
            data = self.show_report()
            tests = [e for e in (data or {}).get("exercises", []) if e["id"] in self.batch]
            self.event(
                "verdict" if verdict else "final",
                batch=self.batch,
                test_s=round(sum(e.get("time_s", 0.0) for e in tests), 3),
                saved=self.saved,
            )
            self.verdicts += 1
        self.batch = []

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        self.say(t("watching", self.lang, folder=self.folder.name), bold=True)
        runner = Runner(use_worker=not self.args.no_worker)
        before = _snapshot(self.folder)
        stale = _stale(self.impl)
        if stale:
            self.enqueue(stale)
            self.first_batch = True
        elif progress.read():
            self.show_report()
        changed: set[str] = set()
        try:
            while self.args.max_runs is None or self.verdicts < self.args.max_runs:
                after = _snapshot(self.folder)
                modules = _changed_modules(before, after)
                if modules:
                    before = after
                    changed = modules
                    self.saved = sorted(f"{self.folder.name}/{m}.py" for m in modules)
                    self.event("change", saved=self.saved)
                    if runner.running():
                        runner.stop()
                        self.enqueue(self.batch)  # interrupted: its result never came
                        self.batch = []
                    self.enqueue(fingerprint.affected_by(modules, self.impl))
                    self.first_batch = True
                    saved, ids = ", ".join(self.saved), ", ".join(self.queue)
                    self.say(
                        "\n── " + t("rerunning", self.lang, saved=saved, ids=ids) + " ──", bold=True
                    )
                    if not self.queue:  # a file no exercise uses: the report still checks it
                        self.show_report()
                if runner.running():
                    code = runner.poll()
                    if code is not None:
                        self.finished(code)
                elif self.queue:
                    self.start(runner, changed)
                time.sleep(self.args.interval)
        except KeyboardInterrupt:
            self.say()
        finally:
            runner.close()
        return 0
