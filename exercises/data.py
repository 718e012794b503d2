"""The quotes data pipeline (exercise 06): load, tokenize, collate for a causal LM.

The tutorial does this in three calls, made explicit here: it loads the Abirate/english_quotes
data set from the Hub with load_dataset, tokenizes its "quote" column with a batched map
(batched=True, so the tokenizer gets a list of quotes per call), and gives its Trainer a
DataCollatorForLanguageModeling with mlm=False as the data collator. This module adds one
thing the tutorial left out: an end-of-sequence token after every quote, so that the
fine-tuned model learns where a quote ends (the tutorial's own sample output runs on past it).
A causal LM shifts inside its loss (the logits at t are scored against labels[t + 1]), so
labels = input_ids, unshifted, with -100 (cross-entropy's ignore_index) on padding only.
Lesson: lessons/en/06-quotes-data.md.
"""

from __future__ import annotations

import json  # noqa: F401  (you will want it in load_quotes)
import os
import re
from pathlib import Path

import torch

DEFAULT_PATH = "data/quotes.jsonl"
# The columns of Abirate/english_quotes, and the JSON type each must have.
COLUMNS = {"quote": str, "author": str, "tags": list}
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_quotes_path(path: str | os.PathLike) -> Path:
    """Where `path` is: as given when that exists (absolute, or relative to the current
    directory); otherwise, for a relative path, the same path under the kata's repository root,
    so that the default "data/quotes.jsonl" works from any working directory. When neither
    exists, the path as given (for the error message). Given: not part of the exercise."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    from lora_kata import REPO_ROOT  # the kata's root, wherever this package was copied

    in_repo = REPO_ROOT / given
    return in_repo if in_repo.exists() else given


def is_hub_name(path: str | os.PathLike) -> bool:
    """True for "owner/name" that is no local file and no .json/.jsonl path: a Hub data set.
    Given: not part of the exercise."""
    text = os.fspath(path)
    return (
        _HUB_NAME.fullmatch(text) is not None
        and not text.endswith((".json", ".jsonl"))
        and not resolve_quotes_path(text).exists()
    )


def load_quotes(path: str | os.PathLike = DEFAULT_PATH):
    """The quotes as a datasets.Dataset with columns quote (str), author (str), tags (list[str]).

    - `import datasets` inside this function (importing it costs a second).
    - A Hub name (is_hub_name(path), e.g. "Abirate/english_quotes"): return
      datasets.load_dataset(name)["train"] (needs a network; not tested here).
    - Otherwise resolved = resolve_quotes_path(path). No such file → ValueError naming it.
    - Read the file yourself, line by line (line numbers from 1, UTF-8; skip blank lines), and
      json.loads each line. Raise ValueError naming the file AND the line, e.g.
      "data/x.jsonl line 7: malformed JSON (...)", for: a line that is not JSON, a JSON value
      that is not an object, a missing column, a column of the wrong type (see COLUMNS; tags is
      a list of strings). A file with no rows at all is a ValueError too.
      Never skip a bad line silently: datasets would give a pyarrow error with no line number,
      or fill a missing column with None.
    - Then return datasets.load_dataset("json", data_files=str(resolved))["train"].
    """
    # TODO(06): validate the file line by line, then load it with datasets' "json" builder.
    raise NotImplementedError("Exercise 06: load_quotes")


def tokenize_quotes(dataset, tokenizer, max_length: int | None = None):
    """Add input_ids and attention_mask, tokenized from the "quote" column, every row ending
    with exactly one end-of-sequence token, eos = tokenizer.eos_token_id.

    - The tutorial's batched map: dataset.map(fn, batched=True). fn gets a batch of rows
      (samples["quote"] is a list of quotes) and tokenizes that list in one call,
      tokenizer(samples["quote"]), not one quote at a time.
    - EOS: OPT's tokenizer puts </s> only in front of a text, so nothing marks where a quote
      ends, and a model fine-tuned on such rows never learns to stop (the tutorial's sample
      generation runs on past its quote). Append eos to every row's input_ids and a 1 to its
      attention_mask, unless the row already ends with eos (some tokenizers append it
      themselves): one EOS, never two.
    - With max_length: a row longer than max_length keeps its first max_length - 1 tokens and
      then eos, so it has exactly max_length tokens with EOS last. (Appending eos after
      tokenizer(..., truncation=True, max_length=max_length) makes rows one too long; cutting
      after appending cuts the EOS off.) Without max_length: no truncation.
    - fn returns {"input_ids": [...], "attention_mask": [...]}, one list per quote: map keeps
      the other columns (quote, author, tags) and the row order, as the tutorial's did;
      collate_for_causal_lm ignores them.
    - A tokenizer whose eos_token_id is None: ValueError saying so.
    """
    # TODO(06): batched map over "quote": tokenize, append one EOS, cut to max_length, EOS last.
    raise NotImplementedError("Exercise 06: tokenize_quotes")


def collate_for_causal_lm(features: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of tokenized rows into a batch for a causal LM.

    features: dicts with "input_ids" (list of n_i ints) and "attention_mask" (n_i ints; all
    ones when absent), maybe with other keys (quote, author, tags) that must be ignored.
    L = max n_i, the longest in this batch. Returns three torch.long tensors of shape (B, L):

        input_ids[i]      = ids_i + [pad_token_id] * (L - n_i)      right padding
        attention_mask[i] = mask_i + [0] * (L - n_i)
        labels            = input_ids, with -100 where attention_mask == 0   (no shift!)

    Mask by attention_mask, not by pad id: when pad == eos a real EOS must stay a label.
    Build labels from a clone of input_ids. ValueError for no features or a pad_token_id of
    None.
    """
    # TODO(06): right-pad, build attention_mask, labels = input_ids with -100 on padding.
    raise NotImplementedError("Exercise 06: collate_for_causal_lm")
