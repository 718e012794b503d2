"""Packing (exercise 11): put several whole quotes in one row, so no compute goes to padding.

Padding a micro-batch to its longest quote wastes every pad slot; packing puts quotes side by
side in rows of at most max_length tokens instead. What keeps the maths unchanged is the
mask: a token may attend only to earlier tokens of its own quote, each quote's positions start
at 0, and nothing predicts a quote's first token. Lesson: lessons/en/11-packing.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

IGNORE_INDEX = -100  # cross-entropy's ignore_index


def padding_waste(lengths: list[int], batch_size: int) -> float:
    """The fraction of pad tokens when consecutive runs of batch_size sequences are
    right-padded to their longest (0.0 when there are no tokens at all)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lengths = [int(n) for n in lengths]
    if any(n < 0 for n in lengths):
        raise ValueError(f"lengths must be ≥ 0, got {min(lengths)}")
    slots = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        slots += len(batch) * max(batch)  # every row padded to the batch's longest
    if slots == 0:
        return 0.0
    return (slots - sum(lengths)) / slots


def _first_fit(lengths: list[int], max_length: int) -> list[list[int]]:
    """Row by row, the indices of the quotes placed there: each quote into the first row
    with room for all of it, earlier rows included; a new row when none has room."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i, n in enumerate(lengths):
        for r in range(len(rows)):
            if used[r] + n <= max_length:
                rows[r].append(i)
                used[r] += n
                break
        else:
            rows.append([i])
            used.append(n)
    return rows


def pack_quotes(
    features: list[dict], max_length: int, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Whole quotes, first fit, into rows of at most max_length tokens, right-padded to the
    longest row L: input_ids, labels, position_ids (rows, L) and a 4-D float attention_mask
    (rows, 1, L, L) that is 0 where a token may attend and the dtype's minimum elsewhere."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None: give the tokenizer a pad token")
    if not features:
        raise ValueError("pack_quotes needs at least one quote")
    quotes = [torch.as_tensor(f["input_ids"], dtype=torch.long).reshape(-1) for f in features]
    for i, quote in enumerate(quotes):
        if quote.numel() == 0:
            raise ValueError(f"quote {i} has no tokens")
        if quote.numel() > max_length:
            raise ValueError(
                f"quote {i} has {quote.numel()} tokens, more than max_length={max_length}: "
                "packing never splits a quote, so truncate when tokenizing "
                "(tokenize_quotes(..., max_length=...)) or raise max_length"
            )
    rows = _first_fit([q.numel() for q in quotes], max_length)
    longest = max(sum(quotes[i].numel() for i in row) for row in rows)

    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), longest), dtype=torch.long)
    allowed = torch.zeros((len(rows), longest, longest), dtype=torch.bool)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = quotes[i].numel()
            end = start + n
            input_ids[r, start:end] = quotes[i]
            # The first token stays -100: only the previous quote's EOS could "predict" it.
            labels[r, start + 1 : end] = quotes[i][1:]
            position_ids[r, start:end] = torch.arange(n)  # as if the quote were alone
            # Causal within the quote, closed to other quotes and to padding.
            allowed[r, start:end, start:end] = torch.ones(n, n, dtype=torch.bool).tril()
            start = end
    # Additive: OPT's eager attention adds the mask to the scores, so "closed" must be a very
    # negative float (a boolean mask would add 1 or 0 and close nothing).
    dtype = torch.float32
    attention_mask = torch.zeros((len(rows), 1, longest, longest), dtype=dtype)
    attention_mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "attention_mask": attention_mask,
    }


def packed_batches(
    features: list[dict],
    order: Iterator[int],
    batch_size: int,
    max_length: int,
    pad_token_id: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """GIVEN (not an exercise): packed micro-batches of exactly batch_size rows, for finetune.

    Takes quote indices from `order` (the shuffled order) and places them first fit until the
    next quote fits in none of batch_size rows; that quote opens the next micro-batch. Each
    micro-batch is pack_quotes(those quotes, max_length, pad_token_id). When `order` runs out,
    the last, partly filled micro-batch is yielded too.
    """
    carried: int | None = None
    while True:
        chosen: list[int] = []
        used: list[int] = []
        # chain, not a generator with `yield from`: leaving that loop early would close `order`.
        for i in itertools.chain([] if carried is None else [carried], order):
            n = len(features[i]["input_ids"])
            if n > max_length:
                raise ValueError(
                    f"quote {i} has {n} tokens, more than max_length={max_length}: "
                    "truncate it when tokenizing"
                )
            row = next((r for r, u in enumerate(used) if u + n <= max_length), None)
            if row is None and len(used) == batch_size:
                carried = i  # no room left in this micro-batch: it opens the next one
                break
            if row is None:
                used.append(n)
            else:
                used[row] += n
            chosen.append(i)
        else:
            carried = None
        if not chosen:
            return
        yield _open_padding_rows(
            pack_quotes([features[i] for i in chosen], max_length, pad_token_id)
        )
        if carried is None:
            return  # `order` ran out


def _open_padding_rows(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Let each padding token attend to itself. A query row closed everywhere becomes all -inf
    once fp16 autocast casts the mask, and softmax of that is NaN, which backward spreads into
    the LoRA gradients; padding's outputs feed no label, so this changes no loss or gradient."""
    mask = batch["attention_mask"]
    if not mask.is_floating_point():
        return batch  # not the additive mask pack_quotes should return: leave it to the tests
    dead = (mask != 0).all(dim=-1)  # (rows, 1, L): query positions that see nothing
    if dead.any():
        mask = mask.clone()
        mask.diagonal(dim1=-2, dim2=-1)[dead] = 0
        batch = {**batch, "attention_mask": mask}
    return batch
