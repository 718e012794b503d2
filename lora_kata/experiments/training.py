"""Experiment 08: warmup on and off, and accumulation against one big batch, as loss curves.

A tiny OPT (random weights, hidden 32) with LoRA on q_proj and v_proj trains on the quotes with
the learner's train_step and linear_warmup_lr; every run sees the same quotes in the same order.
"""

from __future__ import annotations

import torch

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save

STEPS, ROWS = 20, 16


def _batches(data, tokenizer, steps: int, rows: int, equal_length: int | None = None):
    """steps × rows tokenized quotes, seeded order; with equal_length, only quotes at least
    that long, cut to it, so every row holds the same number of tokens."""
    from lora_kata.models.tiny import QUOTES_PATH

    tokenized = data.tokenize_quotes(data.load_quotes(QUOTES_PATH), tokenizer, max_length=64)
    features = [
        {"input_ids": i, "attention_mask": m}
        for i, m in zip(tokenized["input_ids"], tokenized["attention_mask"], strict=True)
    ]
    if equal_length is not None:
        features = [
            {key: list(value)[:equal_length] for key, value in f.items()}
            for f in features
            if len(f["input_ids"]) >= equal_length
        ]
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(0)).tolist()
    order = (order * (1 + steps * rows // len(order)))[: steps * rows]
    return [[features[i] for i in order[s * rows : (s + 1) * rows]] for s in range(steps)]


def _train(inject, train, data, tokenizer, steps_rows, *, lr, warmup, micro: int):
    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(seed=0)
    # Every linear layer of the random tiny base: q and v alone barely move its loss.
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    inject.inject_lora(model, inject.LoRAConfig(r=8, lora_alpha=16, target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: train.linear_warmup_lr(
            s, base_lr=1.0, warmup_steps=warmup, max_steps=len(steps_rows)
        ),
    )
    losses = []
    for rows in steps_rows:
        size = len(rows) // micro
        micro_batches = [
            data.collate_for_causal_lm(rows[i * size : (i + 1) * size], tokenizer.pad_token_id)
            for i in range(micro)
        ]
        losses.append(train.train_step(model, micro_batches, optimizer, scheduler=scheduler))
    return losses


def _first_gap(a: list[float], b: list[float]) -> float:
    """The gap of the first step's reported loss: the same model, the same rows, before any
    update, so only how the mean is taken differs. (Later steps drift apart for either: Adam
    divides by tiny gradients' sizes and magnifies float rounding.)"""
    return abs(a[0] - b[0])


def warmup_and_accumulation(out_dir=None) -> Outcome:
    inject, train, data = pieces("inject", "train", "data")
    from lora_kata.models.tiny import quotes_tokenizer

    torch.manual_seed(0)
    tokenizer = quotes_tokenizer()
    real = _batches(data, tokenizer, STEPS, ROWS)
    equal = _batches(data, tokenizer, STEPS, ROWS, equal_length=24)
    lr = 3e-2  # large on purpose: warmup matters most when the first steps are big

    def train_run(batches, warmup, micro):
        return _train(inject, train, data, tokenizer, batches, lr=lr, warmup=warmup, micro=micro)

    runs = {
        "warmup 10, 4 × 4": train_run(real, 10, 4),
        "no warmup, 4 × 4": train_run(real, 0, 4),
        "warmup 10, 1 × 16": train_run(real, 10, 1),
        "equal rows, 4 × 4": train_run(equal, 10, 4),
        "equal rows, 1 × 16": train_run(equal, 10, 1),
    }
    gap_real = _first_gap(runs["warmup 10, 4 × 4"], runs["warmup 10, 1 × 16"])
    gap_equal = _first_gap(runs["equal rows, 4 × 4"], runs["equal rows, 1 × 16"])
    fig, (left, right) = new_figure(ncols=2, width=4.8)
    for name in ("warmup 10, 4 × 4", "no warmup, 4 × 4"):
        left.plot(runs[name], label=name)
    left.set(xlabel="optimizer step", ylabel="mean loss", title=f"warmup on and off (lr {lr:g})")
    left.legend(fontsize=8)
    for name, style in (
        ("warmup 10, 4 × 4", "-"),
        ("warmup 10, 1 × 16", "--"),
        ("equal rows, 4 × 4", "-"),
        ("equal rows, 1 × 16", "--"),
    ):
        right.plot(runs[name], style, label=name)
    right.set(xlabel="optimizer step", ylabel="mean loss")
    right.set_title(f"step-0 gap: {gap_real:.0e} (quotes), {gap_equal:.0e} (equal rows)")
    right.legend(fontsize=7)
    path = save(fig, figure_path("08-warmup-and-accumulation", out_dir))
    # The step-0 gap gets its own column, on the 4 × 4 row it compares with its 1 × 16 twin.
    gaps = {"warmup 10, 4 × 4": gap_real, "equal rows, 4 × 4": gap_equal}
    rows = [
        [name, losses[0], min(losses), losses[-1], gaps.get(name, "")]
        for name, losses in runs.items()
    ]
    return Outcome(
        "warmup and accumulation",
        ["run", "first loss", "lowest", "last", "first-loss gap to 1 × 16"],
        rows,
        path,
        {"gap_real_quotes": gap_real, "gap_equal_rows": gap_equal},
    )
