"""`lora-kata` (or `python -m lora_kata`): hints, lessons, the report, watch mode, reset.

lora-kata hint [NN] [--level 1|2|3]   tiered hints (a nudge, the concept, the steps and API names)
lora-kata lesson [NN]                 print the lesson
lora-kata report [--all] [--json]     the last run's report (every failure, or its JSON)
lora-kata watch                       rerun what a save affects, within a second of saving
lora-kata reset NN                    put exercise NN's stubs back (your other work stays)
lora-kata list                        the exercises, their files and functions
lora-kata try [NN] [--solutions]      a lesson's experiment on your code (a table and a picture)

Instructors (docs/instructors.md):
lora-kata export-student DEST         the students' repository: no solutions, one commit
lora-kata grade REPO… [--csv|--json]  score student repositories with this kata's own tests
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog import CatalogueError, by_id, impl, load_catalog
from lora_kata.cli.reset import cmd_reset
from lora_kata.messages import label, t, title_of_test
from lora_kata.messages.language import colon, language
from lora_kata.runner import fingerprint, progress
from lora_kata.runner.report import refresh, report_lines, shown_message

LEVEL_NAMES = {
    "en": {1: "a nudge", 2: "the concept", 3: "the steps and the API names"},
    "zh": {1: "点拨", 2: "概念", 3: "具体步骤和要用的 API"},
}


def _current_exercise() -> str:
    """The next exercise on the code as it is now (the last run, corrected for edits)."""
    data = progress.read()
    data = refresh(data) if data else None
    if data and data.get("next") and data["next"].get("id"):
        return data["next"]["id"]
    return load_catalog()[0].id


def _provenance(data: dict | None, lang: str) -> str | None:
    """Which run the hint or report reads: "from the run at 09:12, 3 min ago; files changed
    since: exercises/lora.py" (None when there was no run)."""
    if not data or not data.get("finished_at"):
        return None
    try:
        finished = time.mktime(time.strptime(data["finished_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    minutes = max(0, round((time.time() - finished) / 60))
    ago = f"{minutes} min" if lang == "en" else f"{minutes} 分钟"
    text = t("from run", lang, time=data["finished_at"][11:16], ago=ago)
    impl = data.get("impl") or "exercises"
    then = data.get("files") or {}
    now = fingerprint.file_hashes(fingerprint.implementation_dir(impl))
    folder = fingerprint.implementation_dir(impl).name
    changed = sorted(f"{folder}/{m}.py" for m in set(then) | set(now) if then.get(m) != now.get(m))
    if then:
        text += "; " + (
            t("changed files", lang, files=", ".join(changed)) if changed else t("no changes", lang)
        )
    return text


def cmd_hint(args: argparse.Namespace) -> int:
    lang = language(args.lang)
    if not args.exercise:
        where = _provenance(progress.read(), lang)
        if where:
            print(f"({where})")
    exercise = by_id(args.exercise or _current_exercise())
    level = max(1, min(args.level, len(exercise.hints)))
    print(
        f"{exercise.id} {exercise.title_in(lang)} — {t('hint', lang)} {level}/{len(exercise.hints)}"
        f" ({LEVEL_NAMES[lang][level]})\n"
    )
    print(exercise.hint(level, lang))
    raw = progress.read()
    step = (refresh(raw, lang) if raw else {}).get("next") or {}
    if step.get("id") == exercise.id and step.get("test") and level == 1:
        specific = exercise.hint_for_test(step["test"], lang)
        if specific:
            name = title_of_test(step["id"], step["test"], lang) or step["test"]
            print(f"\n{name}{colon(lang)}{specific}")
    print()
    if level < len(exercise.hints):
        print(f"{label('more hints', lang)}lora-kata hint {exercise.id} --level {level + 1}")
    for module in exercise.modules:
        names = [f.split(".", 1)[1] for f in exercise.functions if f.startswith(module + ".")]
        print(f"{label('edit', lang)}exercises/{module}.py → {', '.join(names)}")
    print(f"{label('lesson', lang)}{exercise.lesson(lang).relative_to(REPO_ROOT)}")
    return 0


def cmd_lesson(args: argparse.Namespace) -> int:
    lang = language(args.lang)
    exercise = by_id(args.exercise or _current_exercise())
    print(exercise.lesson(lang).read_text(encoding="utf-8"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    data = progress.read(Path(args.progress) if args.progress else None)
    if data is None:
        print(t("no progress", language(args.lang)))
        return 1
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    lang = language(args.lang)
    course = {e.id for e in load_catalog()}  # a run from before the course file changed
    data["exercises"] = [e for e in data.get("exercises", []) if e.get("id") in course]
    where = _provenance(data, lang)
    print(t("title", lang) + (f" ({where})" if where else ""))
    for line, _ in report_lines(refresh(data, lang), lang):
        print(line)
    if args.all:
        print()
        print(t("all failures", lang) + colon(lang).rstrip())
        for line in failure_lines(data, lang):
            print(line)
    return 0


def failure_lines(data: dict, lang: str = "en") -> list[str]:
    """Every failing test of the run, with where it failed and its whole message."""
    lines = []
    for record in data.get("tests", []):
        if record.get("outcome") != "failed":
            continue
        where = f" ({record['where']})" if record.get("where") else ""
        title = title_of_test(record["exercise"], record["name"], lang)
        lines.append(f" ✘ {record['exercise']} {title or record['name']}{where}")
        if title:
            lines.append(f"     {label('test', lang)}{record['name']}")
        step = {**record, "message": (record.get("message") or "").strip()}
        message = shown_message(step, lang) or record.get("error_type") or ""
        lines.extend(f"     {line}" for line in message.splitlines() or [""])
        if record.get("example"):
            lines.append(f"     {label('example', lang)}{record['example']}")
    return lines or ["  " + t("none", lang)]


def cmd_list(args: argparse.Namespace) -> int:
    lang = language(args.lang)
    for e in load_catalog():
        requires = f"  ({t('after', lang, ids=', '.join(e.requires))})" if e.requires else ""
        print(f"{e.id}  {e.title_in(lang)}{requires}")
        for qualified in e.functions:
            module, _, name = qualified.partition(".")
            print(f"      exercises/{module}.py  {name}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from lora_kata.cli.watch import Watch

    return Watch(args).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-kata", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lang", choices=("en", "zh"), help="language (default: locale)")
    sub = parser.add_subparsers(dest="command", required=True)

    hint = sub.add_parser("hint", help="show a hint for an exercise")
    hint.add_argument("exercise", nargs="?", help="exercise number (default: the current one)")
    hint.add_argument("--level", type=int, default=1, choices=(1, 2, 3))
    hint.set_defaults(func=cmd_hint)

    lesson = sub.add_parser("lesson", help="print an exercise's lesson")
    lesson.add_argument("exercise", nargs="?")
    lesson.set_defaults(func=cmd_lesson)

    report = sub.add_parser("report", help="print the last run's progress report")
    report.add_argument("--json", action="store_true", help="print the progress JSON instead")
    report.add_argument(
        "--all", action="store_true", help="also list every failing test and its message"
    )
    report.add_argument("--progress", help="progress file (default .lora_kata/progress.json)")
    report.set_defaults(func=cmd_report)

    listing = sub.add_parser("list", help="list the exercises")
    listing.set_defaults(func=cmd_list)

    from lora_kata.experiments.cli import add_parser as add_try_parser

    add_try_parser(sub)

    watch = sub.add_parser("watch", help="rerun what a save affects, at once")
    watch.add_argument("--poll", action="store_true", help=argparse.SUPPRESS)  # always polls
    watch.add_argument("--interval", type=float, default=0.05, help="polling interval, seconds")
    watch.add_argument(
        "--no-worker",
        action="store_true",
        help="a fresh `python -m pytest` per run instead of the warm worker (slower)",
    )
    watch.add_argument("--max-runs", type=int, default=None, help=argparse.SUPPRESS)
    watch.add_argument(
        "--no-clear",
        dest="clear",
        action="store_false",
        help="do not clear the screen between runs",
    )
    watch.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments, after --"
    )
    watch.set_defaults(func=cmd_watch)

    reset = sub.add_parser("reset", help="restore one exercise's stubs from git")
    reset.add_argument("exercise")
    reset.add_argument("--from", dest="ref", help="git ref holding the original stubs")
    reset.set_defaults(func=cmd_reset)  # cli/reset.py

    from lora_kata.cli import export, grade

    export.add_parser(sub)
    grade.add_parser(sub)
    return parser


def kata_root(start: Path) -> Path | None:
    """The kata checkout holding `start` (it or a parent with exercises/ and lora_kata/)."""
    for folder in (start, *start.parents):
        if (folder / "exercises").is_dir() and (folder / "lora_kata" / "__init__.py").is_file():
            return folder
    return None


def _in_this_folders_kata(argv: list[str]) -> int | None:
    """Every command reads the kata in the current folder, never the one this copy of
    lora_kata was installed from: elsewhere, run that folder's own runner (None: we are it)."""
    if any(a in ("-h", "--help") for a in argv[:1]):
        return None
    here = kata_root(Path.cwd().resolve())
    if here is None:
        print(t("not a kata", language(None), folder=Path.cwd()), file=sys.stderr)
        return 2
    if here == REPO_ROOT.resolve() or os.environ.get("LORA_KATA_HANDED_OVER"):
        return None
    env = dict(os.environ, LORA_KATA_HANDED_OVER="1")
    return subprocess.call([sys.executable, "-m", "lora_kata", *argv], cwd=here, env=env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    handed = _in_this_folders_kata(argv)
    if handed is not None:
        return handed
    args = build_parser().parse_args(argv)
    if getattr(args, "pytest_args", None) and args.pytest_args[:1] == ["--"]:
        args.pytest_args = args.pytest_args[1:]
    if (
        args.command == "try"
        and getattr(args, "solutions", False)
        and impl.unavailable("solutions")
    ):
        print(impl.unavailable("solutions"), file=sys.stderr)  # a student repository
        return 2
    try:
        return args.func(args)
    except (KeyError, CatalogueError) as error:  # no such exercise; a course or catalogue typo
        print(error.args[0], file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `lora-kata lesson 02 | head`: the reader left; that is no error of ours. Point stdout
        # at nothing so Python's own flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
