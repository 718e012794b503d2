"""`lora-kata grade REPO… [--csv|--json|--markdown]`: score student repositories.

Each repository is graded in a scratch copy of THIS kata (the template: its exercise tests,
conftest, runner, catalogue and course file) into which only the student's `exercises/*.py`
modules are copied; one `pytest exercises/ --run-waiting` subprocess per student writes its
progress JSON to the scratch folder. So a student's edits to exercises/tests/, conftest.py or
lora_kata/ change nothing, and the numbers are the template's: total = the tests the
catalogue's test files hold (runner/selection.py counts them), passed = those that passed.
An exercise is done only when the run found it done and every exercise it requires is done
(a waiting exercise is not done, whatever its tests did). A file that does not compile is
reported with file:line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog import load_catalog
from lora_kata.catalog.course import course_path
from lora_kata.runner.selection import static_test_count

TEMPLATE_PARTS = ("lora_kata", "exercises", "pyproject.toml")
STUDENT_SKIP = {"__init__.py", "conftest.py"}
SHORT = {"done": "✔", "failing": "✘", "not started": "·", "broken": "!", "waiting": "…"}


def _scratch_copy(repo: Path, scratch: Path) -> None:
    """The template, with the student's exercise modules in place of its stubs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in TEMPLATE_PARTS:
        source = REPO_ROOT / part
        if source.is_dir():
            shutil.copytree(source, scratch / part, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, scratch / part)
    if course_path().is_file():  # the course in effect (course.toml, or LORA_KATA_COURSE)
        shutil.copy2(course_path(), scratch / "course.toml")
    for part in ("data", "lessons"):  # read only: linked, not copied
        if (REPO_ROOT / part).is_dir():
            (scratch / part).symlink_to(REPO_ROOT / part, target_is_directory=True)
    for module in sorted((repo / "exercises").glob("*.py")):
        if module.name not in STUDENT_SKIP:
            shutil.copy2(module, scratch / "exercises" / module.name)


def _run(
    scratch: Path, timeout: float, test_timeout: float, threads: int
) -> tuple[dict | None, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_KATA_", "PYTEST_"))}
    env.update(HF_HUB_OFFLINE="1", LORA_KATA_LANG="en", PYTHONDONTWRITEBYTECODE="1")
    # A busy grading machine must not fail a slow-but-right test: one generous limit for every
    # test (an endless loop still costs about one limit per function, runner/timeouts.py).
    env.update(LORA_KATA_TIMEOUT=str(test_timeout), OMP_NUM_THREADS=str(threads))
    progress = scratch / "progress.json"
    command = [sys.executable, "-m", "pytest", "exercises/", "--run-waiting", "-q", "-p"]
    command += ["no:randomly", "--no-kata-report", "--kata-progress", str(progress)]
    try:
        done = subprocess.run(
            command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout
        )
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        return None, f"the run took longer than {timeout:.0f} s"
    try:
        return json.loads(progress.read_text(encoding="utf-8")), output
    except (OSError, ValueError):
        return None, output


def grade(repo: Path, timeout: float = 3600, test_timeout: float = 300, threads: int = 0) -> dict:
    """One student's row: per exercise status, passed and total; the broken files."""
    row: dict = {"repo": str(repo), "exercises": [], "broken": [], "error": None}
    found: dict[str, dict] = {}
    catalogue = load_catalog()
    totals = {e.id: static_test_count(e.test_file) or 0 for e in catalogue}
    row["tests_total"] = sum(totals.values())
    row["exercises_total"] = len(catalogue)
    if not (repo / "exercises").is_dir():
        row["error"] = f"{repo} holds no exercises/ folder"
    else:
        with tempfile.TemporaryDirectory(prefix="lora-kata-grade-") as folder:
            scratch = Path(folder)
            _scratch_copy(repo, scratch)
            threads = threads or max(1, os.cpu_count() or 1)
            data, output = _run(scratch, timeout, test_timeout, threads)
        if data is None:
            row["error"] = "the run wrote no progress: " + " | ".join(
                output.strip().splitlines()[-3:]
            )
        else:
            row["broken"] = [
                f"{p['file']}:{p['line']}: {p['message']}" for p in data.get("unparsable", [])
            ]
            found = {e["id"]: e for e in data.get("exercises", [])}
            for e in found.values():  # a module that compiles but does not import (NameError…)
                where = e.get("broken_at") or ""
                if where and not any(
                    b.startswith(where.split(":")[0] + ":") for b in row["broken"]
                ):
                    row["broken"].append(f"{where}: {(e.get('broken_message') or '')[:300]}")
            for test in data.get("tests", []):  # the first failure of each exercise, for the JSON
                if test.get("outcome") == "failed" and test["exercise"] in found:
                    first = (test.get("message") or test.get("error_type") or "").strip()
                    found[test["exercise"]].setdefault("first_failure", f"{test['name']}: {first}")
    statuses: dict[str, str] = {}
    for exercise in catalogue:
        result = found.get(exercise.id, {})
        status = result.get("status") or "not run"
        waiting = [r for r in exercise.requires if statuses.get(r) != "done"]
        if status == "done" and waiting:
            status = "waiting"
        statuses[exercise.id] = status
        passed = min(int(result.get("passed", 0)), totals[exercise.id])
        entry = {"id": exercise.id, "status": status, "passed": passed}
        entry["total"] = totals[exercise.id]
        if waiting and status != "done":
            entry["waiting_for"] = waiting
        for key in ("broken_at", "first_failure"):
            if result.get(key):
                entry[key] = result[key][:500]
        row["exercises"].append(entry)
    row["exercises_done"] = sum(s == "done" for s in statuses.values())
    row["tests_passed"] = sum(e["passed"] for e in row["exercises"])
    return row


def _cell(entry: dict) -> str:
    return f"{SHORT.get(entry['status'], '?')}{entry['passed']}/{entry['total']}"


def table(rows: list[dict], markdown: bool = False) -> str:
    ids = [e["id"] for e in rows[0]["exercises"]] if rows else []
    head = ["repository", "done", "tests", *ids]
    body = [
        [
            Path(r["repo"]).name,
            f"{r['exercises_done']}/{r['exercises_total']}",
            f"{r['tests_passed']}/{r['tests_total']}",
            *(_cell(e) for e in r["exercises"]),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
    else:
        widths = [max(len(str(c)) for c in column) for column in zip(head, *body, strict=True)]
        lines = [
            "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
            for cells in (head, *body)
        ]
    lines.append("")
    lines.append("✔ done  ✘ failing  · not started  ! broken  … waiting for an earlier exercise")
    for r in rows:
        for problem in r["broken"]:
            lines.append(f"{Path(r['repo']).name}: broken: {problem}")
        if r["error"]:
            lines.append(f"{Path(r['repo']).name}: not graded: {r['error']}")
    return "\n".join(lines)


def as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    ids = [e["id"] for e in rows[0]["exercises"]] if rows else []
    writer.writerow(
        ["repository", "exercises_done", "exercises_total", "tests_passed", "tests_total"]
        + [f"{i}_{what}" for i in ids for what in ("status", "passed", "total")]
        + ["broken", "error"]
    )
    for r in rows:
        cells = [r["repo"], r["exercises_done"], r["exercises_total"]]
        cells += [r["tests_passed"], r["tests_total"]]
        for e in r["exercises"]:
            cells += [e["status"], e["passed"], e["total"]]
        writer.writerow([*cells, "; ".join(r["broken"]), r["error"] or ""])
    return out.getvalue()


def cmd_grade(args: argparse.Namespace) -> int:
    repos = [Path(r).expanduser().resolve() for r in args.repos]
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(lambda r: grade(r, args.timeout, args.test_timeout, threads), repos))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    elif args.csv:
        print(as_csv(rows), end="")
    else:
        print(table(rows, markdown=args.markdown))
    return 0 if not any(r["error"] for r in rows) else 1


def add_parser(sub) -> None:
    parser = sub.add_parser("grade", help="score student repositories with this kata's tests")
    parser.add_argument("repos", nargs="+", metavar="REPO", help="student repositories")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="one CSV row per repository")
    form.add_argument("--json", action="store_true", help="one JSON object per repository")
    form.add_argument("--markdown", action="store_true", help="a Markdown table (CI summaries)")
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON to PATH")
    parser.add_argument("--jobs", type=int, default=1, help="repositories graded at once")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds per repository (default 3600)"
    )
    parser.add_argument(
        "--test-timeout", type=float, default=300, help="seconds per test (default 300)"
    )
    parser.set_defaults(func=cmd_grade)
