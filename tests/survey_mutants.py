"""Find the `fails` list of mutants: run each one and print the tests of its exercise it fails.

    python -m tests.survey_mutants              # mutants without a `fails` list
    python -m tests.survey_mutants 11- 12-nf4   # mutants whose "NN-id" starts with one of these
    python -m tests.survey_mutants --write      # also write the lists into tests/mutants/NN.toml
    python -m tests.survey_mutants 02- --lang zh  # the messages in Chinese (`expect` is English)

Read what it prints before writing: a failing test whose message blames another mistake is a
test to fix (make it compute its expectation from the learner's other pieces), not a name to
add to the list. It also says when the report lacks the mutant's `expect` phrase.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from tests.kata_harness import (
    MUTANTS_DIR,
    exercise_test_path,
    load_mutants,
    normalise,
    run_kata_warm,
    stop_warm,
    test_function_name,
)


def survey(mutant, lang: str = "en") -> tuple[list[str], list[str], bool]:
    """(failing test functions, their first messages, whether the report shows `expect`)."""
    with tempfile.TemporaryDirectory() as folder:
        impl = mutant.apply(Path(folder))
        run = run_kata_warm(impl, exercise_test_path(mutant.exercise), "--run-waiting", lang=lang)
    failed = [
        t
        for t in run.tests(mutant.exercise)
        if t["outcome"] == "failed" and t.get("why") != "timeout"
    ]
    names = sorted({test_function_name(t["name"]) for t in failed})
    messages = [f"{t['name']}: {t.get('message', '')[:200]}" for t in failed]
    return names, messages, normalise(mutant.expect) in normalise(run.output)


def write_fails(mutant, names: list[str]) -> None:
    """Insert (or replace) `fails = [...]` in the mutant's table in tests/mutants/NN.toml."""
    path = MUTANTS_DIR / f"{mutant.exercise}.toml"
    text = path.read_text(encoding="utf-8")
    tables = re.split(r"(?m)^(?=\[\[mutant\]\])", text)
    listed = "fails = [" + ", ".join(f'"{n}"' for n in names) + "]"
    if len(listed) > 100:
        listed = "fails = [\n" + "".join(f'  "{n}",\n' for n in names) + "]"
    for i, table in enumerate(tables):
        if re.search(rf'(?m)^id = "{re.escape(mutant.id)}"$', table):
            table = re.sub(r"(?ms)^fails = \[.*?\]\n", "", table)
            tables[i] = (
                table.rstrip("\n") + "\n" + listed + "\n" + ("\n" if i < len(tables) - 1 else "")
            )
    path.write_text("".join(tables), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help='"NN-id" prefixes (default: no fails list)')
    parser.add_argument("--write", action="store_true", help="write the lists into the TOML")
    parser.add_argument(
        "--lang", choices=("en", "zh"), default="en", help="the messages' language (default en)"
    )
    args = parser.parse_args(argv)
    chosen = [
        m
        for m in load_mutants()
        if (any(f"{m.exercise}-{m.id}".startswith(p) for p in args.prefixes))
        or (not args.prefixes and not m.fails)
    ]
    problems = 0
    try:
        for mutant in chosen:
            names, messages, named = survey(mutant, args.lang)
            print(f"{mutant.exercise}-{mutant.id}: fails {names}")
            for line in messages:
                print(f"    {line}")
            if not names or (not named and args.lang == "en"):
                problems += 1
                print(
                    "    !! "
                    + ("caught by no test" if not names else f"the report lacks {mutant.expect!r}")
                )
            elif args.write:
                write_fails(mutant, names)
    finally:
        stop_warm()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
