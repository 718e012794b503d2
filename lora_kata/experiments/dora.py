"""Experiment 14: LoRA against DoRA on the same small task, with the same budget.

A frozen layer W0 (d=96 × k=80) must become a teacher that differs from it in two ways: each
row is stretched or shrunk by its own factor (lengths), and a rank-2 ΔW* turns the rows
(directions). The learner's LoRALinear and DoRALinear start from the same A (same seed), with
the same r, α, Adam learning rate and number of steps, and learn from (x, teacher(x)) pairs.
Nothing here needs a language model: both runs take about a second.
"""

from __future__ import annotations

import time

import torch

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save

D_OUT, K_IN, N_SAMPLES = 96, 80, 512
R, ALPHA, STEPS, LR = 4, 4.0, 300, 1e-2


def _task(seed: int = 0):
    """(base layer, inputs, targets): teacher = diag(c) · (W0 + ΔW*), c from 0.5 to 2."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(K_IN, D_OUT, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.randn(D_OUT, K_IN, generator=generator) / K_IN**0.5)
    u, _ = torch.linalg.qr(torch.randn(D_OUT, 2, generator=generator))
    v, _ = torch.linalg.qr(torch.randn(K_IN, 2, generator=generator))
    turn = (u * torch.tensor([2.0, 1.0])) @ v.T / K_IN**0.5
    lengths = 2.0 ** (2 * torch.rand(D_OUT, generator=generator) - 1)  # 0.5 … 2 per row
    teacher = lengths[:, None] * (base.weight.detach() + turn)
    x = torch.randn(N_SAMPLES, K_IN, generator=generator)
    return base, x, x @ teacher.T


def _fit(make, base, x, y):
    """Adam on one layer made by make(copy of base); (losses, trainable count, s per step)."""
    import copy

    torch.manual_seed(0)  # the same A for both methods
    layer = make(copy.deepcopy(base))
    trainable = [p for p in layer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=LR)
    losses = []
    started = 0.0
    for step in range(STEPS):
        if step == STEPS // 2:  # time the second half: the first steps warm up the allocator
            started = time.perf_counter()
        loss = torch.nn.functional.mse_loss(layer(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = (time.perf_counter() - started) / (STEPS - STEPS // 2)
    return losses, sum(p.numel() for p in trainable), seconds


def lora_against_dora(out_dir=None) -> Outcome:
    """14: the loss curves of LoRA and DoRA at the same r, α, learning rate and steps."""
    lora, dora = pieces("lora", "dora")
    base, x, y = _task()
    start = torch.nn.functional.mse_loss(base(x), y).item()
    runs = {
        "LoRA": _fit(lambda b: lora.LoRALinear(b, R, ALPHA), base, x, y),
        "DoRA": _fit(lambda b: dora.DoRALinear(b, R, ALPHA), base, x, y),
    }
    fig, (ax,) = new_figure()
    rows = []
    for name, (losses, count, seconds) in runs.items():
        ax.plot(losses, label=f"{name} ({count:,} trainable)")
        rows.append([name, count, losses[STEPS // 10 - 1], losses[-1], seconds * 1e3])
    ax.axhline(start, color="grey", ls=":", label="before training")
    ax.set(yscale="log", xlabel="Adam step", ylabel="MSE")
    ax.set_title(f"Teacher: rows stretched 0.5–2× and turned by rank 2; r = {R}")
    ax.legend(fontsize=8)
    path = save(fig, figure_path("14-lora-vs-dora", out_dir))
    return Outcome(
        "LoRA vs DoRA",
        ["method", "trainable params", f"loss after {STEPS // 10}", "final loss", "ms per step"],
        rows,
        path,
        {
            "start": start,
            "lora": runs["LoRA"][0][-1],
            "dora": runs["DoRA"][0][-1],
            "extra": runs["DoRA"][1] - runs["LoRA"][1],
        },
    )
