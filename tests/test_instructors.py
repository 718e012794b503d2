"""Instructors: a course file, `lora-kata export-student` and `lora-kata grade`.

The export is a student repository with no line of the reference in it, one commit, and the
kata's commands working (and `--solutions` saying, in one sentence, that it is not there).
Grading uses the template's tests and runner: a student who replaced the exercise tests, a
broken file and an exercise waiting on an unfinished one all get the score they earned.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_kata.catalog import CatalogueError, Exercise, _apply, all_exercises
from lora_kata.catalog.course import read_course
from lora_kata.cli.export import solution_lines, unfinished_stubs
from lora_kata.runner.selection import static_test_count
from tests.kata_harness import REPO

pytestmark = pytest.mark.xdist_group("instructors")
FIRST_THREE = 'exercises = ["01", "02", "03"]\n'


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_KATA_", "PYTEST_"))}
    env.update(HF_HUB_OFFLINE="1", LORA_KATA_LANG="en", OMP_NUM_THREADS="1", **extra)
    return env


def _run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=_env(**extra), capture_output=True, text=True
    )


def _course(tmp_path: Path, text: str) -> tuple[Exercise, ...]:
    path = tmp_path / "course.toml"
    path.write_text(text, encoding="utf-8")
    return _apply(read_course(path), all_exercises())


# --- the course file ---------------------------------------------------------------------


def test_a_course_chooses_and_orders_exercises_and_overrides_hints(tmp_path):
    course = _course(
        tmp_path,
        'exercises = ["01", "03", "02"]\n\n[hints."03"]\n1 = { en = "Count.", zh = "数一数。" }\n'
        '\n[hints."02".tests.test_scaling_is_alpha_over_r]\nen = "a/r"\nzh = "α/r"\n',
    )
    assert [e.id for e in course] == ["01", "03", "02"]
    assert course[1].hint(1, "en") == "Count." and course[1].hint(1, "zh") == "数一数。"
    assert course[1].hint(2, "en") == next(e for e in all_exercises() if e.id == "03").hint(2, "en")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('exercises = ["01",\n  "02"\n\n[hints]\n', 4, "not valid TOML"),
        ('# a course\nexercises = ["01", "99"]\n', 2, "99 is not catalogued"),
        ('\nexercises = ["02"]\n', 2, "requires 01"),
        ('exercises = ["01"]\n\n[hints."01"]\n2 = { en = "new" }\n', 4, "both languages"),
        ('exercises = ["01"]\nexcercises = ["02"]\n', 2, "unknown key"),
    ],
)
def test_a_course_error_names_the_file_and_the_line(tmp_path, text, line, words):
    with pytest.raises(CatalogueError) as caught:
        _course(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'course.toml'}:{line}:"), message
    assert words in message, message


def test_a_catalogue_toml_error_names_the_file_and_the_line(tmp_path):
    from lora_kata.catalog import _parse

    path = tmp_path / "01_x.toml"
    path.write_text('id = "01"\nslug = "x"\ntitle = { en = "x" \n', encoding="utf-8")
    with pytest.raises(CatalogueError, match=re.escape(f"{path}:3: not valid TOML")):
        _parse(path)


def test_the_runner_collects_only_the_courses_test_files(tmp_path):
    (tmp_path / "course.toml").write_text(FIRST_THREE, encoding="utf-8")
    done = _run(
        ["-m", "pytest", "exercises/", "--collect-only", "-q", "--no-kata-report"],
        REPO,
        LORA_KATA_COURSE=str(tmp_path / "course.toml"),
    )
    files = set(re.findall(r"exercises/tests/(test_\d\d)_", done.stdout))
    assert files == {"test_01", "test_02", "test_03"}, done.stdout[-2000:]


# --- export-student ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def student_repo(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "kata"
    done = _run(["-m", "lora_kata", "export-student", str(dest)], REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    return dest


def test_the_export_holds_no_line_of_the_reference(student_repo):
    lines = solution_lines(REPO)
    assert len(lines) > 300  # the reference's own lines exist, and are what is searched for
    found = []
    for path in student_repo.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{path}: {ln.strip()}" for ln in text.splitlines() if ln.strip() in lines]
    assert not found, "\n".join(found[:20])
    for absent in ("solutions", "tests", "benchmarks", ".ci", "docs/developing.md"):
        assert not (student_repo / absent).exists(), absent


def test_the_export_refuses_exercises_with_the_solutions_copied_over_them(tmp_path):
    shutil.copytree(REPO / "exercises", tmp_path / "exercises")
    assert unfinished_stubs(tmp_path) == []
    shutil.copy2(REPO / "solutions" / "counting.py", tmp_path / "exercises" / "counting.py")
    assert unfinished_stubs(tmp_path) == [
        f"exercises/counting.py: {f.split('.', 1)[1]}" for f in all_exercises()[2].functions
    ]


def test_the_export_is_one_commit_with_a_grading_workflow_and_no_gpu_one(student_repo):
    log = subprocess.run(
        ["git", "log", "--format=%H", "--all"], cwd=student_repo, capture_output=True, text=True
    )
    assert len(log.stdout.split()) == 1, log.stdout
    tag = subprocess.run(
        ["git", "rev-parse", "lora-kata-start"], cwd=student_repo, capture_output=True, text=True
    )
    assert tag.stdout.strip() == log.stdout.strip()
    workflows = sorted(p.name for p in (student_repo / ".github" / "workflows").iterdir())
    assert workflows == ["grade.yml"], workflows
    text = (student_repo / ".github" / "workflows" / "grade.yml").read_text(encoding="utf-8")
    pyproject = (student_repo / "pyproject.toml").read_text(encoding="utf-8")
    assert 'testpaths = ["exercises"]' in pyproject  # no quality suite: plain `pytest` is the kata
    runners = re.findall(r"runs-on:\s*(.+)", text)
    assert runners == ["ubuntu-latest"], runners  # GitHub's CPU runners, never the course's GPU
    assert "lora_kata grade" in text and "git archive" in text  # the starter commit's tests


def test_the_exports_texts_never_ask_for_the_reference(student_repo):
    wrong = re.compile(r"--solutions|solutions\.finetune|LORA_KATA_IMPL=solutions")
    found = [
        f"{path.relative_to(student_repo)}:{number}: {line}"
        for path in student_repo.rglob("*.md")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if wrong.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_kata_runs_in_the_export_and_says_there_is_no_reference(student_repo):
    run = _run(["-m", "pytest", "exercises/", "-k", "test_01"], student_repo)
    assert run.returncode == 1 and "Next: 01" in run.stdout, run.stdout[-3000:]
    progress = json.loads((student_repo / ".lora_kata" / "progress.json").read_text("utf-8"))
    assert next(e for e in progress["exercises"] if e["id"] == "01")["status"] == "not started"
    for args in (
        ["-m", "pytest", "exercises/", "--solutions"],
        ["-m", "lora_kata", "try", "01", "--solutions"],
    ):
        refused = _run(args, student_repo)
        said = refused.stdout + refused.stderr
        assert refused.returncode in (2, 4) and "no reference solutions" in said, said[-2000:]
        assert "ModuleNotFoundError" not in said and "failed" not in said, said[-2000:]
    assert not (student_repo / ".lora_kata" / "progress-solutions.json").exists()


def test_reset_in_the_export_restores_the_starter_commit_not_the_pushed_work(student_repo):
    clone = student_repo.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(student_repo), str(clone)], check=True)
    lora = clone / "exercises" / "lora.py"
    stub = lora.read_text(encoding="utf-8")
    lora.write_text(
        stub.replace(
            'raise NotImplementedError("Exercise 02: lora_scaling")', "return alpha / r", 1
        ),
        encoding="utf-8",
    )
    assert lora.read_text(encoding="utf-8") != stub
    git = ["git", "-c", "user.name=s", "-c", "user.email=s@x"]
    subprocess.run([*git, "commit", "-qam", "my 02"], cwd=clone, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD:refs/heads/work"], cwd=clone, check=True)
    subprocess.run(["git", "branch", "-q", "-u", "origin/work"], cwd=clone, check=True)
    done = _run(["-m", "lora_kata", "reset", "02"], clone)
    assert done.returncode == 0 and "lora-kata-start" in done.stdout, done.stdout + done.stderr
    assert 'raise NotImplementedError("Exercise 02: lora_scaling")' in lora.read_text("utf-8")


# --- grade -------------------------------------------------------------------------------


def test_grade_scores_with_the_templates_tests_whatever_the_student_did(tmp_path):
    """A course of 01–03 (fast): one student did all three; one did 01 and 02 (lora.py) and
    replaced 02's and 03's tests with `pass`; one has a syntax error in counting.py; one wrote
    02's lora_scaling without 01."""
    course = tmp_path / "course.toml"
    course.write_text(FIRST_THREE, encoding="utf-8")
    template = tmp_path / "template"
    env = {"LORA_KATA_COURSE": str(course)}
    assert _run(["-m", "lora_kata", "export-student", str(template)], REPO, **env).returncode == 0
    assert (template / "course.toml").read_text(encoding="utf-8") == FIRST_THREE
    students = {}
    for name in ("all", "gamed", "broken", "skipped01"):
        students[name] = tmp_path / name
        shutil.copytree(template, students[name], ignore=shutil.ignore_patterns(".git"))
    solutions = REPO / "solutions"
    for name in ("all", "broken"):
        for module in ("lora.py", "counting.py"):
            shutil.copy2(solutions / module, students[name] / "exercises" / module)
    counting = students["broken"] / "exercises" / "counting.py"
    counting.write_text(counting.read_text("utf-8").replace("def ", "def (", 1), "utf-8")
    shutil.copy2(solutions / "lora.py", students["gamed"] / "exercises" / "lora.py")
    for test in (students["gamed"] / "exercises" / "tests").glob("test_0[23]_*.py"):
        test.write_text("def test_ok():\n    pass\n", encoding="utf-8")
    lora = students["skipped01"] / "exercises" / "lora.py"
    lora.write_text(
        lora.read_text("utf-8").replace(
            'raise NotImplementedError("Exercise 02: lora_scaling")', "return alpha / r", 1
        ),
        "utf-8",
    )
    done = _run(
        ["-m", "lora_kata", "grade", "--json", *map(str, students.values())], template, **env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {Path(r["repo"]).name: r for r in json.loads(done.stdout)}
    status = {n: {e["id"]: e["status"] for e in r["exercises"]} for n, r in rows.items()}
    assert {n: r["exercises_done"] for n, r in rows.items()} == {
        "all": 3,
        "gamed": 2,
        "broken": 2,
        "skipped01": 0,
    }, status
    counts = [static_test_count(e.test_file) for e in all_exercises()[:3]]
    assert rows["all"]["tests_passed"] == sum(counts) == rows["gamed"]["tests_total"]
    assert [e["total"] for e in rows["gamed"]["exercises"]] == counts  # not the 1s it ran
    gamed_03 = rows["gamed"]["exercises"][2]
    assert (gamed_03["status"], gamed_03["passed"], gamed_03["total"]) == (
        "not started",
        0,
        counts[2],
    )
    assert status["broken"]["03"] == "broken"
    assert rows["broken"]["broken"] and rows["broken"]["broken"][0].startswith(
        "exercises/counting.py:"
    ), rows["broken"]
    assert status["skipped01"]["01"] == "not started" and status["skipped01"]["02"] != "done"
    assert rows["skipped01"]["exercises"][1]["waiting_for"] == ["01"]
    csv_run = _run(["-m", "lora_kata", "grade", "--csv", str(students["all"])], template, **env)
    assert csv_run.stdout.splitlines()[1].split(",")[1:3] == ["3", "3"], csv_run.stdout


def test_no_workflow_here_runs_code_on_the_gpu_unasked():
    """gpu.yml starts only by hand (and refuses a repository without solutions/); the students'
    grading workflow template runs on GitHub's CPU runners."""
    gpu = (REPO / ".github" / "workflows" / "gpu.yml").read_text(encoding="utf-8")
    triggers = re.search(r"^on:\n((?:  .*\n|\n)*)", gpu, re.M).group(1)
    assert re.findall(r"^  (\w+):", triggers, re.M) == ["workflow_dispatch"], triggers
    assert "test -f solutions/__init__.py" in gpu
    for path in (REPO / ".github" / "workflows").glob("*.yml"):
        if "self-hosted" in "".join(re.findall(r"runs-on:.*", path.read_text(encoding="utf-8"))):
            assert path.name == "gpu.yml", f"{path.name} runs on a self-hosted runner"
