"""Experiments 01 and 02 on a synthetic task where the true update is known.

A frozen layer W0 (d=96 × k=80) must become W0 + ΔW*, where ΔW* has a fast-decaying spectrum
(singular values 4, 2, 1, 0.5, ... like the paper's finding that the useful update is nearly
rank-one). The learner's LoRALinear wraps W0 and learns from (x, (W0 + ΔW*) x) pairs with Adam.
Nothing here needs a language model: the whole sweep takes about a second.
"""

from __future__ import annotations

import torch

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save

D_OUT, K_IN, N_SAMPLES = 96, 80, 512


def _task(seed: int = 0, rank: int = 16):
    """(base layer, inputs, targets, ΔW*): the regression every run solves; ΔW* keeps the
    first `rank` singular values of the spectrum 4, 2, 1, 0.5, ..."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(K_IN, D_OUT, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.randn(D_OUT, K_IN, generator=generator) / K_IN**0.5)
    u, _ = torch.linalg.qr(torch.randn(D_OUT, 16, generator=generator))
    v, _ = torch.linalg.qr(torch.randn(K_IN, 16, generator=generator))
    spectrum = 4.0 * 0.5 ** torch.arange(16, dtype=torch.float32)  # 4, 2, 1, 0.5, ...
    spectrum[rank:] = 0
    delta = (u * spectrum) @ v.T / K_IN**0.5
    x = torch.randn(N_SAMPLES, K_IN, generator=generator)
    with torch.no_grad():
        y = x @ (base.weight + delta).T
    return base, x, y, delta


def _fit(lora, base, x, y, r: int, alpha: float, steps: int, lr: float, seed: int = 0):
    """Train LoRALinear(copy of base, r, alpha) on the task; the loss after every step."""
    import copy

    torch.manual_seed(seed)  # the same A initialisation for the same r
    layer = lora.LoRALinear(copy.deepcopy(base), r, alpha)
    trainable = [p for p in layer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(layer(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return layer, losses, sum(p.numel() for p in trainable)


def rank_sweep(out_dir=None) -> Outcome:
    """01: final loss against trainable parameters for r in {1, 2, 4, 8, 16, 64}."""
    lora = pieces("lora")
    base, x, y, _ = _task()
    start = torch.nn.functional.mse_loss(base(x), y).item()
    rows, finals, params = [], [], []
    for r in (1, 2, 4, 8, 16, 64):
        # alpha = r keeps the scaling at 1 for every r, so only the rank changes.
        _, losses, n = _fit(lora, base, x, y, r=r, alpha=float(r), steps=300, lr=1e-2)
        rows.append([r, n, losses[-1], losses[-1] / start])
        finals.append(losses[-1])
        params.append(n)
    full = D_OUT * K_IN
    fig, (ax,) = new_figure()
    ax.plot(params, finals, "o-", label="LoRA, r = 1 … 64")
    for (r, _n, final, _), p in zip(rows, params, strict=True):
        ax.annotate(f"r={r}", (p, final), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(start, color="grey", ls=":", label="before training")
    ax.axvline(full, color="grey", ls="--", label=f"full ΔW: {full:,} parameters")
    ax.set(xscale="log", yscale="log", xlabel="trainable parameters", ylabel="final MSE")
    ax.set_title("A low-rank ΔW* (singular values 4, 2, 1, 0.5, …)")
    ax.legend(fontsize=8)
    path = save(fig, figure_path("01-rank-sweep", out_dir))
    return Outcome(
        "rank sweep",
        ["r", "trainable params", "final loss", "loss / start"],
        rows,
        path,
        {"start": start, **{f"r{row[0]}": row[2] for row in rows}},
    )


def scaling_at_large_r(out_dir=None) -> Outcome:
    """02: α/r against α/√r (rsLoRA) when r grows, with the same α, lr and steps."""
    lora = pieces("lora")
    # ΔW* of rank 2: every r here can fit it, so only the speed of learning differs.
    base, x, y, _ = _task(seed=1, rank=2)
    alpha, steps, lr = 8.0, 40, 1e-3
    ranks = (4, 16, 64, 256, 1024)
    fig, axes = new_figure(ncols=2, width=4.8)
    rows = []
    for panel, rslora in zip(axes, (False, True), strict=True):
        for r in ranks:
            factor = lora.lora_scaling(alpha, r, rslora=rslora)
            # LoRALinear always multiplies by alpha/r: pass alpha' = factor·r to get `factor`.
            _, losses, _ = _fit(lora, base, x, y, r=r, alpha=factor * r, steps=steps, lr=lr)
            panel.plot(losses, label=f"r={r}")
            rows.append(["α/√r" if rslora else "α/r", r, factor, losses[-1]])
        panel.set(yscale="log", xlabel="Adam step", ylabel="MSE")
        panel.set_title(f"scaling = {'α/√r (rsLoRA)' if rslora else 'α/r'}, α = {alpha:g}")
        panel.legend(fontsize=8)
    path = save(fig, figure_path("02-alpha-over-r-vs-sqrt-r", out_dir))
    numbers = {f"{'rs' if row[0] == 'α/√r' else 'std'}{row[1]}": row[3] for row in rows}
    return Outcome(
        "α/r vs α/√r", ["scaling", "r", "factor", f"loss after {steps}"], rows, path, numbers
    )
