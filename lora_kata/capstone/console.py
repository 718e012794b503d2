"""What the capstone prints: rank 0 speaks, libraries are kept quiet."""

from __future__ import annotations

import sys


class Say:
    """print, on rank 0 only (N ranks printing the same lines would be noise)."""

    def __init__(self, main: bool = True):
        self.main = main

    def __call__(self, *parts, error: bool = False) -> None:
        if self.main:
            print(*parts, file=sys.stderr if error else sys.stdout)


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def quiet_libraries() -> None:
    """No bitsandbytes CPU notices (lora_kata/models/quiet.py; docs/developing.md says what they
    mean), no progress bars for a 548-row map or for loading a small model's weights. (A
    deprecation notice for gradient_checkpointing_enable is left visible: 07 calls
    activation_checkpointing_enable, so the notice means the learner's 07 is behind.)"""
    from lora_kata.models.quiet import silence_bitsandbytes_cpu_notices

    silence_bitsandbytes_cpu_notices()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
