"""`lora-kata try NN`: one small experiment per lesson, run on the learner's own code.

Each experiment imports the pieces it needs from the implementation under test (exercises/ by
default, solutions/ with --solutions), prints a small table, saves a PNG under
`.lora_kata/try/`, and returns an `Outcome`. A piece that is still a stub raises the stub's
NotImplementedError("Exercise NN: ..."), which `run` turns into "finish NN first".
"""

from __future__ import annotations

from lora_kata.experiments.common import FinishFirst, Outcome, run, run_and_print
from lora_kata.experiments.registry import EXPERIMENTS, Experiment

__all__ = ["EXPERIMENTS", "Experiment", "FinishFirst", "Outcome", "run", "run_and_print"]
