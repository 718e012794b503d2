"""The LoRA kata's runner: implementation switch, progress report, hints, watch mode.

This package is the kata's machinery, not an exercise: learners edit `exercises/`, never this.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["REPO_ROOT"]
