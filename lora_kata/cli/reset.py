"""`lora-kata reset NN`: put exercise NN's stubs back from git; the learner's other work in the
same files stays, and their version is saved under .lora_kata/backup/ first."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from lora_kata import REPO_ROOT
from lora_kata.catalog import by_id
from lora_kata.messages import t
from lora_kata.messages.language import language
from lora_kata.runner.splice import replace_definitions


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)


START_TAG = "lora-kata-start"  # the starter commit of a student repository (cli/export.py)


def _pristine_ref(explicit: str | None) -> str:
    """Where the untouched stubs are: --from; in a student repository (`lora-kata
    export-student`, no solutions/) the starter commit: its tag, else the first commit (a
    GitHub Classroom copy keeps no tags), never the learner's own pushed work; in the
    instructor's checkout the upstream branch, else HEAD."""
    if explicit:
        return explicit
    if _git("rev-parse", "--verify", "--quiet", f"refs/tags/{START_TAG}").returncode == 0:
        return START_TAG
    if not (REPO_ROOT / "solutions").is_dir():
        roots = _git("rev-list", "--max-parents=0", "HEAD").stdout.split()
        if roots:
            return roots[-1]
    for ref in ("@{upstream}", "origin/HEAD"):
        if _git("rev-parse", "--verify", "--quiet", ref).returncode == 0:
            return ref
    return "HEAD"


def cmd_reset(args: argparse.Namespace) -> int:
    lang = language(getattr(args, "lang", None))
    exercise = by_id(args.exercise)
    ref = _pristine_ref(args.ref)
    backups = REPO_ROOT / ".lora_kata" / "backup"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for module in exercise.modules:
        relative = f"exercises/{module}.py"
        shown = _git("show", f"{ref}:{relative}")
        if shown.returncode != 0:
            error = shown.stderr.strip()
            print(t("reset unreadable", lang, file=relative, ref=ref, error=error), file=sys.stderr)
            return 2
        path = REPO_ROOT / relative
        current = path.read_text(encoding="utf-8")
        names = [f.split(".", 1)[1] for f in exercise.functions if f.startswith(module + ".")]
        try:
            restored = replace_definitions(current, shown.stdout, names)
        except SyntaxError as error:
            print(
                t("reset unparsable", lang, file=relative, line=error.lineno, ref=ref),
                file=sys.stderr,
            )
            return 2
        backups.mkdir(parents=True, exist_ok=True)
        backup = backups / f"{module}.py.{stamp}"
        backup.write_text(current, encoding="utf-8")  # nothing the learner wrote is lost
        tmp = path.with_suffix(".py.tmp")
        tmp.write_text(restored, encoding="utf-8")
        os.replace(tmp, path)
        saved = backup.relative_to(REPO_ROOT)
        print(t("reset done", lang, names=", ".join(names), file=relative, ref=ref, saved=saved))
    return 0
