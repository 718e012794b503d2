"""The capstone's command line, now the package lora_kata/capstone/ (one concern per module).

This module keeps the names older callers import (`python -m solutions.finetune` ends with
`from lora_kata.cli_finetune import main`; exercise 10's tests and the benchmarks use the rest).
"""

from lora_kata.capstone.arguments import device_map_from, parse_args, settings_for
from lora_kata.capstone.models import (
    ModelChoice,
    build_small_opt,
    cached_snapshot,
    choose_model,
    input_device,
    load_prepared,
)
from lora_kata.capstone.outputs import plot_losses
from lora_kata.capstone.pieces import MODULES, implementation_modules
from lora_kata.capstone.run import main
from lora_kata.capstone.settings import (
    CACHED_DEFAULT,
    LORA_SETTINGS,
    PROMPT,
    QUOTES,
    SMALL,
    SMALL_OPT,
    TUTORIAL,
)

__all__ = [
    "CACHED_DEFAULT",
    "LORA_SETTINGS",
    "MODULES",
    "PROMPT",
    "QUOTES",
    "SMALL",
    "SMALL_OPT",
    "TUTORIAL",
    "ModelChoice",
    "build_small_opt",
    "cached_snapshot",
    "choose_model",
    "device_map_from",
    "implementation_modules",
    "input_device",
    "load_prepared",
    "main",
    "parse_args",
    "plot_losses",
    "settings_for",
]
