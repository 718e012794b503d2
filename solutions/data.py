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

import json
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
    exists, the path as given (for the error message)."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    from lora_kata import REPO_ROOT  # the kata's root, wherever this package was copied

    in_repo = REPO_ROOT / given
    return in_repo if in_repo.exists() else given


def is_hub_name(path: str | os.PathLike) -> bool:
    """True for "owner/name" that is no local file and no .json/.jsonl path: a Hub data set."""
    text = os.fspath(path)
    return (
        _HUB_NAME.fullmatch(text) is not None
        and not text.endswith((".json", ".jsonl"))
        and not resolve_quotes_path(text).exists()
    )


def _check_row(row: object, where: str) -> None:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [name for name in COLUMNS if name not in row]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(every line needs {', '.join(COLUMNS)})"
        )
    for name, kind in COLUMNS.items():
        if not isinstance(row[name], kind):
            raise ValueError(
                f"{where}: column {name} must be a {kind.__name__}, "
                f"got {type(row[name]).__name__} {row[name]!r}"
            )
    if not all(isinstance(tag, str) for tag in row["tags"]):
        raise ValueError(f"{where}: column tags must be a list of strings, got {row['tags']!r}")


def _validate_jsonl(path: Path) -> None:
    """Check every line ourselves: datasets would report a pyarrow error with no line number,
    or (for a missing column) fill it with None and say nothing."""
    rows = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path} line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not UTF-8 ({error.reason})") from error
            if not line.strip():
                continue  # blank lines carry no row (datasets skips them too)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{where}: malformed JSON ({error.msg} at column {error.colno})"
                ) from error
            _check_row(row, where)
            rows += 1
    if rows == 0:
        raise ValueError(f"{path}: no quotes in it (an empty file?)")


def load_quotes(path: str | os.PathLike = DEFAULT_PATH):
    """The quotes as a datasets.Dataset with columns quote, author and tags."""
    import datasets  # here, not at the top: importing it costs a second

    if is_hub_name(path):
        # Online users can still name the tutorial's data set, e.g. "Abirate/english_quotes".
        try:
            dataset = datasets.load_dataset(os.fspath(path))["train"]
        except Exception as error:  # offline, unknown name, ...: say what was tried
            raise ValueError(
                f"{os.fspath(path)!r} is no local file, and loading it as a Hugging Face Hub "
                f"data set failed: {type(error).__name__}: {error}"
            ) from error
        missing = [name for name in COLUMNS if name not in dataset.column_names]
        if missing:
            raise ValueError(f"{os.fspath(path)}: missing column(s) {', '.join(missing)}")
        return dataset

    resolved = resolve_quotes_path(path)
    if not resolved.is_file():
        raise ValueError(
            f"{resolved}: no such file (the quotes file is data/quotes.jsonl in the kata's "
            "repository; pass another path or a Hub name such as Abirate/english_quotes)"
        )
    _validate_jsonl(resolved)
    return datasets.load_dataset("json", data_files=str(resolved))["train"]


def tokenize_quotes(dataset, tokenizer, max_length: int | None = None):
    """Add input_ids and attention_mask, tokenized from "quote" in batches (as the tutorial),
    each row ending with exactly one tokenizer.eos_token_id, also when truncated to max_length.

    The other columns are kept, as the tutorial's map kept them (its Trainer dropped them
    later); collate_for_causal_lm ignores them.
    """
    if "quote" not in dataset.column_names:
        raise ValueError(f"the dataset has no quote column (columns: {dataset.column_names})")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            "the tokenizer has no eos_token_id: give it one (tokenizer.eos_token = ...), or the "
            "model never sees where a quote ends and never learns to stop"
        )
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must leave room for a token and EOS (≥ 2), got {max_length}")

    def with_eos(samples):
        # No truncation here: EOS goes on first, then a long row is cut to max_length - 1
        # tokens plus EOS. tokenizer(..., truncation=True) would cut the EOS itself off.
        encoded = tokenizer(samples["quote"])
        rows = encoded["input_ids"]
        all_masks = encoded.get("attention_mask") or [[1] * len(row) for row in rows]
        ids, masks = [], []
        for row, mask in zip(rows, all_masks, strict=True):
            # OPT's tokenizer puts </s> only in front; some (LLaMA's with add_eos_token)
            # already end with it: one EOS, never two.
            if not row or row[-1] != eos:
                row, mask = [*row, eos], [*mask, 1]
            if max_length is not None and len(row) > max_length:
                row, mask = [*row[: max_length - 1], eos], mask[:max_length]
            ids.append(row)
            masks.append(mask)
        return {"input_ids": ids, "attention_mask": masks}

    # batched=True hands the tokenizer 1,000 quotes at a time: one fast Rust call, not 1,000.
    return dataset.map(with_eos, batched=True)


def collate_for_causal_lm(features: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of tokenized rows into input_ids, attention_mask and labels tensors."""
    if not features:
        raise ValueError("collate_for_causal_lm needs at least one feature")
    if pad_token_id is None:
        raise ValueError(
            "pad_token_id is None: give the tokenizer a pad token (OPT has <pad> = 1; for "
            "GPT-2 / LLaMA tokenizers, recipes use tokenizer.pad_token = tokenizer.eos_token)"
        )
    ids = [torch.as_tensor(f["input_ids"], dtype=torch.long).reshape(-1) for f in features]
    masks = [
        torch.as_tensor(f["attention_mask"], dtype=torch.long).reshape(-1)
        if "attention_mask" in f
        else torch.ones_like(seq)
        for f, seq in zip(features, ids, strict=True)
    ]
    for i, (seq, mask) in enumerate(zip(ids, masks, strict=True)):
        if seq.shape != mask.shape:
            raise ValueError(
                f"feature {i}: input_ids has {seq.numel()} tokens but attention_mask {mask.numel()}"
            )
    longest = max(seq.numel() for seq in ids)  # the longest in this batch, not a global maximum
    input_ids = torch.full((len(ids), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for i, (seq, mask) in enumerate(zip(ids, masks, strict=True)):
        # Right padding: real tokens keep positions 0..n-1, as in training without padding.
        input_ids[i, : seq.numel()] = seq
        attention_mask[i, : mask.numel()] = mask
    # Mask by attention_mask, not by pad id: when pad == eos the real EOS must stay a label.
    # No shift here: the model shifts labels itself. clone(), or -100 lands in input_ids too.
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
