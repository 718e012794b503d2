"""The README's sample report, produced by a real run of the kata (not typed by hand).

The scenario: a learner who finished 01 and left the scaling out of `forward` in 02 (the
mutant `scaling_missing_in_forward`), everything else untouched. The block between the
`sample-report` markers in README.md (English) and README.zh-CN.md (Chinese) must equal what
the kata prints for it; tests/test_readme_sample.py checks that. After changing exercises or
tests, regenerate both with:

    python -m tests.readme_sample --write
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.kata_harness import REPO, clean_env, copy_kata, load_mutants

MUTANT = "scaling_missing_in_forward"
READMES = {"en": REPO / "README.md", "zh": REPO / "README.zh-CN.md"}
BEGIN, END = "<!-- sample-report:begin -->", "<!-- sample-report:end -->"
WIDTH = "80"
TITLE = re.compile(r"─+ LoRA kata")


def learner_tree(destination: Path) -> Path:
    """A fresh kata whose exercises/lora.py is the reference with the mutant applied."""
    copy_kata(destination)
    mutant = next(m for m in load_mutants() if m.id == MUTANT)
    source = (REPO / "solutions" / mutant.file).read_text(encoding="utf-8")
    assert source.count(mutant.find) == 1, f"mutant {MUTANT} no longer applies"
    (destination / "exercises" / mutant.file).write_text(
        source.replace(mutant.find, mutant.replace), encoding="utf-8"
    )
    return destination


def report_of_run(tree: Path, lang: str) -> str:
    """The report block `pytest exercises/` prints in that tree (the learner's view)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/", "-q", "-p", "no:cacheprovider"],
        cwd=tree,
        env=clean_env(
            LORA_KATA_LANG=lang, COLUMNS=WIDTH, OMP_NUM_THREADS="1", HYPOTHESIS_PROFILE="ci"
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = done.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if TITLE.match(line)), None)
    if start is None:
        raise AssertionError(f"no report in the run's output:\n{done.stdout[-3000:]}")
    block = []
    for line in lines[start:]:
        # pytest's own summary line (translated under zh): not ours
        if re.match(r"^\d+ (failed|passed|skipped|个)", line):
            break
        block.append(line.rstrip())
    return "\n".join(block).strip("\n")


def fresh_reports() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as folder:
        tree = learner_tree(Path(folder))
        return {lang: report_of_run(tree, lang) for lang in READMES}


def block_in(readme: Path) -> str | None:
    text = readme.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r"\n```\n(.*?)\n```\n" + re.escape(END), text, re.S)
    return match.group(1) if match else None


def write(reports: dict[str, str]) -> None:
    for lang, readme in READMES.items():
        text = readme.read_text(encoding="utf-8")
        if BEGIN not in text:
            raise SystemExit(f"{readme.name} has no {BEGIN} marker")
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + f"{BEGIN}\n```\n{reports[lang]}\n```\n{END}" + text[end:]
        readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    reports = fresh_reports()
    if "--write" in sys.argv:
        write(reports)
        print("updated the sample report in", ", ".join(p.name for p in READMES.values()))
    else:
        for lang, report in reports.items():
            print(f"[{lang}]\n{report}\n")
