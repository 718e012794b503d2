"""Finding English prose in text meant to be Chinese (tests/test_messages.py checks the
catalogues with it, tests/test_chinese_report.py what a run under zh prints)."""

from __future__ import annotations

import re

# Three or more plain English words in a row ("should be zero"): code such as `lora_A`,
# `base(x)`, `nn.Linear` or `r=4` is not a word here, so a Chinese sentence may quote code.
ENGLISH_RUN = re.compile(r"(?<![\w.(-])[A-Za-z]{2,}(?:[ ,;:']+[A-Za-z]+){2,}(?![\w(.=-])")


def english_sentences(text: str) -> list[str]:
    """The runs of English words in `text`, after code spans and placeholders are removed."""
    # Code spans and quoted output ('index out of range', or “...” around an exception's text:
    # what a library or the learner's own code said) are not prose.
    text = re.sub(r"`[^`]*`|'[^'\n]*'|\"[^\"\n]*\"|“[^”]*”", " ", text)
    text = re.sub(r"\{[^{}]*\}", " 0 ", text)
    return [m.group(0) for m in ENGLISH_RUN.finditer(text)]
