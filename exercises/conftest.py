"""Loads the kata's runner for `pytest exercises/`. Not an exercise: nothing to edit here."""

from lora_kata.runner.plugin import *  # noqa: F403  (the runner's pytest hooks and options)
