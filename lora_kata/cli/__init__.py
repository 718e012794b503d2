"""The command-line room: `lora-kata …` (and `python -m lora_kata …`).

    main     the commands: hint, lesson, report, list, reset, watch, try
    watch    `lora-kata watch`: rerun what a save affects, and report
    worker   the warm worker watch forks its pytest runs from

It is the top room: it may import every other one, and none imports it.
"""

from lora_kata.cli.main import main

__all__ = ["main"]
