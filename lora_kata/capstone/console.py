"""What the capstone prints: rank 0 speaks, libraries are kept quiet."""

from __future__ import annotations

import logging
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


class _Once(logging.Filter):
    """Let a repeated log message through once (bitsandbytes logs one per CPU matmul)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet_libraries() -> None:
    """One bitsandbytes CPU-cast message instead of one per matmul; no progress bar for a
    548-row map. (A deprecation notice for gradient_checkpointing_enable is left visible: 07
    calls activation_checkpointing_enable, so the notice means the learner's 07 is behind.)"""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _Once) for f in bnb_logger.filters):
        bnb_logger.addFilter(_Once())
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
