"""The language of a run, and how its text is laid out in a terminal.

The words themselves are keyed templates in lora_kata/messages/<lang>/ (this package's `msg` for
the tests, `t` for the runner's own words from runner.toml).
"""

from __future__ import annotations

import os
import unicodedata


def language(explicit: str | None = None) -> str:
    """'zh' or 'en': --lang, then LORA_KATA_LANG, then a Chinese locale, else English."""
    for value in (explicit, os.environ.get("LORA_KATA_LANG")):
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def colon(lang: str) -> str:
    """ ": " in English, "：" (full width, no space) in Chinese."""
    return "：" if lang == "zh" else ": "


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: a Chinese character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
