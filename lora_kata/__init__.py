"""The LoRA kata's machinery: not an exercise (learners edit `exercises/`, never this).

A room per concern, each a package whose docstring says what it is for and what it may import;
arrows point down this list only (tests/test_architecture.py checks it):

    cli/          the command line: hint, lesson, report, list, reset, try, watch
    experiments/  `lora-kata try NN`: each lesson's experiment, a table and a picture
    runner/       `pytest exercises/`: the plugin, gating, timeouts, progress, the report
    testing/      what exercises/tests/ import: strategies, tiny and quantized models, helpers
    capstone/     `python -m exercises.finetune`: the whole 8-bit LoRA fine-tune
    models/       models and tokenizers built offline (tiny OPTs, the demo base)
    catalog/      the exercises (NN_*.toml: titles, functions, hints) and the implementation switch
    messages/     every word in English and 简体中文, and the choice of language
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["REPO_ROOT"]
