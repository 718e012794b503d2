"""`lora-kata try NN [--solutions]`: the experiment of lesson NN, on your code."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lora_kata.messages import t
from lora_kata.messages.language import language


def cmd_try(args: argparse.Namespace) -> int:
    if args.solutions:
        os.environ["LORA_KATA_IMPL"] = "solutions"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from lora_kata.experiments import EXPERIMENTS, run_and_print

    lang = language(args.lang)
    if args.exercise is None:
        for experiment in EXPERIMENTS.values():
            print(f"lora-kata try {experiment.id}   {experiment.title_in(lang)}")
        return 0
    key = args.exercise.zfill(2)
    if key not in EXPERIMENTS:
        known = ", ".join(EXPERIMENTS)
        print(t("no experiment", lang, number=key, known=known), file=sys.stderr)
        return 2
    return run_and_print(EXPERIMENTS[key], lang, Path(args.out) if args.out else None)


def add_parser(sub) -> None:
    parser = sub.add_parser("try", help="run a lesson's experiment on your code")
    parser.add_argument("exercise", nargs="?", help="lesson number (omit to list them)")
    parser.add_argument(
        "--solutions", action="store_true", help="run it on the reference instead of yours"
    )
    parser.add_argument("--out", help="folder for the picture (default .lora_kata/try)")
    parser.set_defaults(func=cmd_try)
