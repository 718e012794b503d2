"""Experiment 06: how much of a padded micro-batch is padding (what exercise 11 attacks)."""

from __future__ import annotations

import torch

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save


def _waste(lengths: list[int], batch_size: int) -> float:
    """Pad tokens / all tokens when consecutive runs of batch_size rows pad to their longest."""
    padded = real = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start : start + batch_size]
        padded += max(chunk) * len(chunk)
        real += sum(chunk)
    return 1 - real / padded


def padding_waste(out_dir=None) -> Outcome:
    data = pieces("data")
    from lora_kata.models.tiny import QUOTES_PATH, quotes_tokenizer

    tokenizer = quotes_tokenizer()
    tokenized = data.tokenize_quotes(data.load_quotes(QUOTES_PATH), tokenizer)
    # The learner's collator decides what is padding: count it from its attention_mask.
    features = [{"input_ids": ids} for ids in tokenized["input_ids"]]
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [lengths[i] for i in order]
    first = data.collate_for_causal_lm([features[i] for i in order[:4]], tokenizer.pad_token_id)
    pads_in_first = int((first["attention_mask"] == 0).sum())
    rows = []
    for batch_size in (1, 2, 4, 8, 16):
        rows.append([batch_size, _waste(shuffled, batch_size), _waste(sorted(lengths), batch_size)])
    fig, (left, right) = new_figure(ncols=2, width=4.6)
    left.hist(lengths, bins=30, color="#4a8")
    left.set(xlabel="tokens per quote (the kata's tokenizer)", ylabel="quotes")
    left.set_title(f"{len(lengths)} quotes, mean {sum(lengths) / len(lengths):.0f} tokens")
    right.plot(
        [r[0] for r in rows], [100 * r[1] for r in rows], "o-", label="shuffled (as trained)"
    )
    right.plot([r[0] for r in rows], [100 * r[2] for r in rows], "s--", label="sorted by length")
    right.set(xscale="log", xlabel="batch size", ylabel="% of tokens that are padding")
    right.set_title("padding waste")
    right.legend(fontsize=8)
    path = save(fig, figure_path("06-padding-waste", out_dir))
    waste4 = rows[2][1]
    return Outcome(
        "padding waste",
        ["batch size", "waste (shuffled)", "waste (sorted by length)"],
        rows,
        path,
        {"waste_batch4": waste4, "pads_in_first_batch": pads_in_first},
    )
