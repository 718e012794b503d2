"""`lora-kata export-student DEST`: the students' repository, made from this (the instructor's).

What goes in: the course's stubs and exercise tests, the runner (lora_kata/), the lessons, the
data, the READMEs, pyproject.toml and requirements.lock, docs/gpu.md, the course file, and a
grading workflow (.github/classroom/grade.yml → .github/workflows/grade.yml). What stays out:
solutions/, tests/ (the quality suite and its mutant catalogue, whose `find` snippets are the
reference's lines), benchmarks/, .ci/, the instructor's workflows and docs, and the history: DEST
gets one fresh commit, tagged `lora-kata-start` (what `lora-kata reset NN` restores from there).
Lesson lines that run the reference (`lora-kata try NN --solutions`) are dropped or rewritten.
Before committing, every exported file is searched for the reference's lines (`leaks`).
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog import all_exercises, course, load_catalog
from lora_kata.cli.reset import START_TAG

TOP_FILES = {"README.md", "README.zh-CN.md", "pyproject.toml", "requirements.lock", ".gitignore"}
TOP_FOLDERS = {"exercises", "lora_kata", "lessons", "data"}
DOCS = {"docs/gpu.md"}  # the learner's GPU page; instructors.md and developing.md stay here
WORKFLOW = ".github/classroom/grade.yml"
# Text that runs or points at the reference, rewritten in every exported Markdown file.
REWRITES = [
    (r"; python -m solutions\.finetune for the reference", ""),
    (r"；参考实现用 python -m solutions\.finetune", ""),
    (r" \(the answer is in solutions/\)", ""),
    (r"（答案在 solutions/ 里）", ""),
    (r" \(`python -m\s+solutions\.finetune` on the reference\)", ""),
    (r"（`python -m solutions\.finetune`\s*用的是参考实现）", ""),
    (r"; add `--solutions` for the reference", ""),
    (r"；加 `--solutions` 则在参考实现上跑", ""),
    (r"(?m)^- \[docs/(instructors|developing)\.md\].*\n(?:  .*\n)*", ""),
    (r"(?m)^- `benchmarks/`.*\n", ""),
]
REFERENCE = re.compile(r"--solutions|\bsolutions[./]|LORA_KATA_IMPL=solutions")
# Library idioms the lessons quote from the libraries' own documentation (torch's GradScaler
# loop, peft's adapter_config.json): shared with the reference, not taken from it.
LIBRARY_LINES = {"scaler.update()", '"task_type": "CAUSAL_LM",'}
TRIVIAL = re.compile(r"^[\W_]*$|^(else|try|finally|return|pass|continue|break)\W*$")


def source_files(root: Path = REPO_ROOT) -> list[str]:
    """The checkout's files (tracked, and new ones git does not ignore), relative to root."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
    )
    if listed.returncode == 0:
        names = listed.stdout.decode("utf-8").split("\0")
        return sorted(n for n in names if n and (root / n).is_file())
    ignored = {"__pycache__", ".git", ".lora_kata", ".hypothesis", ".pytest_cache", ".venv"}
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not ignored & set(p.relative_to(root).parts)
    )


def _left_out_modules(kept_ids: set[str], root: Path) -> set[str]:
    """Exercise modules only dropped exercises edit, and no kept module imports."""
    owners: dict[str, set[str]] = {}
    for exercise in all_exercises():
        for module in exercise.modules:
            owners.setdefault(module, set()).add(exercise.id)
    dropped = {m for m, ids in owners.items() if not ids & kept_ids}
    kept_text = "".join(
        (root / "exercises" / f"{m}.py").read_text(encoding="utf-8")
        for m, ids in owners.items()
        if ids & kept_ids and (root / "exercises" / f"{m}.py").is_file()
    )
    return {m for m in dropped if not re.search(rf"from \.{m} import", kept_text)}


def chosen(relative: str, kept_ids: set[str], left_out: set[str]) -> bool:
    parts = relative.split("/")
    if "__pycache__" in parts or relative.endswith(".pyc"):
        return False
    if relative in TOP_FILES or relative in DOCS:
        return True
    if parts[0] not in TOP_FOLDERS:
        return False
    name = parts[-1]
    numbered = re.match(r"(?:test_)?(\d\d)[_-]", name) or re.fullmatch(r"(\d\d)\.toml", name)
    if numbered and parts[0] in ("exercises", "lessons", "lora_kata") and len(parts) > 2:
        return numbered.group(1) in kept_ids
    if parts[0] == "exercises" and len(parts) == 2 and name.endswith(".py"):
        return name[:-3] not in left_out
    return True


def unfinished_stubs(root: Path = REPO_ROOT) -> list[str]:
    """The course's functions whose stub in exercises/ no longer raises its own
    `NotImplementedError("Exercise NN: …")` (say, solutions/*.py copied over exercises/)."""
    solved = []
    for exercise in load_catalog():
        for qualified in exercise.functions:
            module, _, name = qualified.partition(".")
            path = root / "exercises" / f"{module}.py"
            want = f"Exercise {exercise.id}: {name}"
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError):
                solved.append(f"exercises/{module}.py: {name}")
                continue
            nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Constant)]
            if not any(n.value == want for n in nodes):
                solved.append(f"exercises/{module}.py: {name}")
    return solved


def adapt(text: str, kept_ids: set[str] | None = None) -> str:
    """A Markdown file without the commands that need the reference, and without the table rows
    (`| 11 | …`) of exercises the course leaves out."""
    for pattern, replacement in REWRITES:
        text = re.sub(pattern, replacement, text)
    lines, fenced = [], False
    for line in text.splitlines(keepends=True):
        row = re.match(r"\| (\d\d) \|", line)
        if row and kept_ids is not None and row.group(1) not in kept_ids:
            continue
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced and (
            (REFERENCE.search(line) and "# the reference" in line) or "--solutions" in line
        ):
            continue  # a command that runs the reference
        line = line.replace("-m solutions.finetune", "-m exercises.finetune")
        lines.append(line.replace(" --solutions", "") if not fenced else line)
    return "".join(lines)


def solution_lines(root: Path = REPO_ROOT) -> set[str]:
    """The reference's own lines: every stripped line of solutions/*.py that is not blank, not
    mere punctuation or a bare keyword, and not also a line of the kata's shipped Python (the
    stubs' docstrings, imports and defs; the exercise tests, which compute some expected values
    the way the reference does, and the runner: `with torch.no_grad():`, `model.eval()`)."""
    shipped = [*(root / "exercises").rglob("*.py"), *(root / "lora_kata").rglob("*.py")]
    common = {line.strip() for path in shipped for line in path.read_text("utf-8").splitlines()}
    found = set()
    for path in (root / "solutions").glob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped and stripped not in common | LIBRARY_LINES and not TRIVIAL.match(stripped):
                found.add(stripped)
    return found


def leaks(dest: Path, lines: set[str]) -> list[str]:
    """ "file:line: text" for every line of an exported file that is a line of the reference."""
    found = []
    for path in sorted(p for p in dest.rglob("*") if p.is_file() and ".git" not in p.parts):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() in lines:
                found.append(f"{path.relative_to(dest)}:{number}: {line.strip()}")
    return found


def _git(dest: Path, *args: str) -> None:
    identity = ["-c", "user.name=lora-kata", "-c", "user.email=lora-kata@localhost"]
    subprocess.run(["git", *identity, *args], cwd=dest, check=True, capture_output=True)


def export(dest: Path, root: Path = REPO_ROOT) -> dict:
    """Write the student repository to `dest` (new or empty); return what was done."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty: export-student writes a new repository")
    solved = unfinished_stubs(root)
    if solved:
        raise RuntimeError(
            "these functions are not stubs in exercises/ (solutions copied over them?); export "
            "from a clean clone or `git checkout -- exercises/`:\n  " + "\n  ".join(solved)
        )
    kept_ids = {e.id for e in load_catalog()}
    left_out = _left_out_modules(kept_ids, root)
    files = [f for f in source_files(root) if chosen(f, kept_ids, left_out)]
    for relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative == "pyproject.toml":  # no quality suite here: plain `pytest` is the kata
            text = (root / relative).read_text(encoding="utf-8")
            text = text.replace('testpaths = ["tests"]', 'testpaths = ["exercises"]')
            quality = "# `pytest` alone runs the kata's own quality suite; `pytest exercises/` runs"
            target.write_text(
                text.replace(quality, "# `pytest` and `pytest exercises/` run"), "utf-8"
            )
        elif relative.endswith(".md"):
            text = (root / relative).read_text(encoding="utf-8")
            target.write_text(adapt(text, kept_ids), encoding="utf-8")
        else:
            shutil.copy2(root / relative, target)
    where = course.course_path()
    if where.is_file():
        shutil.copy2(where, dest / "course.toml")
    workflow = dest / ".github" / "workflows" / "grade.yml"
    workflow.parent.mkdir(parents=True)
    shutil.copy2(root / WORKFLOW, workflow)
    found = leaks(dest, solution_lines(root)) if (root / "solutions").is_dir() else []
    if found:
        shutil.rmtree(dest)
        raise RuntimeError("reference lines in the export (nothing written):\n" + "\n".join(found))
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "The kata: stubs, exercise tests, runner, lessons and data")
    _git(dest, "tag", START_TAG)
    return {"dest": str(dest), "files": len(files) + 1 + where.is_file(), "exercises": kept_ids}


def cmd_export(args: argparse.Namespace) -> int:
    dest = Path(args.dest).expanduser().resolve()
    try:
        done = export(dest)
    except (FileExistsError, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 2
    ids = ", ".join(sorted(done["exercises"], key=[e.id for e in load_catalog()].index))
    print(f"exported {done['files']} files to {dest}: one commit, tagged {START_TAG}")
    print(f"exercises: {ids}")
    print("next: push it as the class's template repository; grade with `lora-kata grade REPO…`")
    return 0


def add_parser(sub) -> None:
    export_parser = sub.add_parser(
        "export-student", help="write the students' repository (no solutions, one commit)"
    )
    export_parser.add_argument("dest", help="a new (or empty) folder")
    export_parser.set_defaults(func=cmd_export)
