"""Packing (exercise 11): put several whole quotes in one row, so no compute goes to padding.

Padding a micro-batch to its longest quote wastes every pad slot; packing puts quotes side by
side in rows of at most max_length tokens instead. What keeps the maths unchanged is the
mask: a token may attend only to earlier tokens of its own quote, each quote's positions start
at 0, and nothing predicts a quote's first token. Lesson: lessons/en/11-packing.md.
You write padding_waste and pack_quotes; packed_batches (at the end) is given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

IGNORE_INDEX = -100  # cross-entropy's ignore_index


def padding_waste(lengths: list[int], batch_size: int) -> float:
    """The fraction of pad tokens when consecutive runs of batch_size sequences are
    right-padded to their longest.

    lengths [n_0, n_1, ...] are cut into batches of batch_size in order (the last batch may be
    shorter); a batch of b sequences with longest m occupies b·m slots. Then

        waste = (Σ slots − Σ n_i) / Σ slots        (0.0 when Σ slots = 0)

    e.g. lengths [3, 5, 2, 2], batch_size 2: slots 2·5 + 2·2 = 14, tokens 12, waste 2/14.
    batch_size < 1 (or not an int) or a negative length → ValueError.
    """
    # TODO(11): sum len(batch) · max(batch) over consecutive batches; waste = pad slots / slots.
    raise NotImplementedError("Exercise 11: padding_waste")


def pack_quotes(
    features: list[dict], max_length: int, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Whole quotes, first fit, into rows of at most max_length tokens.

    features: tokenized quotes, each a dict with "input_ids" (a list or 1-D tensor of n_q ids,
    starting with BOS and ending with EOS); other keys are ignored.

    Placement, quote by quote in the given order: each quote goes whole into the FIRST row
    (earlier rows included) whose used length + n_q ≤ max_length, after the quotes already
    there; when no row has room, it opens a new row at the end. A quote is never split.
    A quote longer than max_length (or an empty one) → ValueError saying which and why.

    All R rows are right-padded to the longest row L (L ≤ max_length). Returns a dict:
    - input_ids    (R, L) long: the quotes' ids side by side, pad_token_id after them.
    - labels       (R, L) long: input_ids, except IGNORE_INDEX (-100) on padding AND on each
      quote's first token (nothing in its own quote predicts it; the model shifts labels
      itself, so without the -100 the previous quote's last token would learn to predict it).
    - position_ids (R, L) long: 0, 1, ..., n_q − 1 within each quote, as if it stood alone
      (padding: any position < max_length, e.g. 0).
    - attention_mask (R, 1, L, L), a float tensor (torch.float32, like the model), ADDITIVE:
      attention_mask[r, 0, i, j] = 0 when tokens i and j of row r belong to the same quote and
      j ≤ i (causal), and torch.finfo(dtype).min everywhere else: other quotes, and padding
      (as keys and as queries). Not a boolean mask: OPT's eager attention adds the mask to
      the scores, so True/False would add 1/0 and close nothing.

    Then the model's mean loss (and its gradients) on the packed batch equal those on the same
    quotes padded one per row (collate_for_causal_lm): packing changes speed, not maths.
    """
    # TODO(11): first fit into rows, then fill ids, labels, positions and the 4-D float mask.
    raise NotImplementedError("Exercise 11: pack_quotes")


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
