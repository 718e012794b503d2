"""The runner's own words in English and 简体中文, and the language of a run.

The words are keyed templates in lora_kata/messages/<lang>/runner.toml, the same catalogues
(and the same checks in tests/test_messages.py) as the exercise tests' messages; lessons and
hints live in their own files.
"""

from __future__ import annotations

import os
import unicodedata

from lora_kata.messages import template


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


def t(key: str, lang: str, **fields: object) -> str:
    """The runner's text `key` in `lang`, its placeholders filled from `fields`."""
    return template(f"runner.{key}", lang).format(**fields)


def colon(lang: str) -> str:
    """ ": " in English, "：" (full width, no space) in Chinese."""
    return "：" if lang == "zh" else ": "


def label(key: str, lang: str) -> str:
    """A label and its colon: "Next: " in English, "下一步：" in Chinese."""
    return t(key, lang) + colon(lang)


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: a Chinese character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
