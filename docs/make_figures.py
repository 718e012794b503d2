"""Draw the lessons' pictures into lessons/figures/ (run it again after changing anything).

    python docs/make_figures.py            # every figure, experiments included (~1 minute)
    python docs/make_figures.py --no-try   # only the drawings

The drawings explain (the two paths of LoRA's forward pass, the module tree before and after
injection, the learning-rate schedule, an int8 row with an outlier column); the experiment
plots are `lora-kata try NN --solutions` run on the reference and copied here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FIGURES = REPO / "lessons" / "figures"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _box(ax, x, y, w, h, text, color, fontsize=10):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="black", lw=1)
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1.2))


def two_paths(path: Path) -> None:
    """LoRA's forward pass (the paper's Figure 1): a frozen path and a low-rank path, summed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    _box(ax, 4.2, 5.0, 1.6, 0.6, "h  (d)", "#eee")
    _box(ax, 4.6, 4.0, 0.8, 0.5, "+", "#fff", 14)
    _box(ax, 1.0, 1.6, 3.0, 1.8, "W0\nd × k\nfrozen", "#9cc3e6", 11)
    _box(ax, 6.2, 2.9, 3.2, 0.6, "B  (d × r)   starts at 0", "#f4b183")
    _box(ax, 6.2, 1.5, 3.2, 0.6, "A  (r × k)   random", "#f4b183")
    _box(ax, 6.9, 2.25, 1.8, 0.45, "r numbers", "#fff", 9)
    _box(ax, 4.2, 0.2, 1.6, 0.6, "x  (k)", "#eee")
    _arrow(ax, (5.0, 0.8), (2.5, 1.6))
    _arrow(ax, (5.0, 0.8), (7.8, 1.5))
    _arrow(ax, (7.8, 2.1), (7.8, 2.25))
    _arrow(ax, (7.8, 2.7), (7.8, 2.9))
    _arrow(ax, (2.5, 3.4), (4.7, 4.1))
    _arrow(ax, (7.8, 3.5), (5.35, 4.1))
    ax.text(6.9, 3.8, "× α/r", fontsize=11)
    _arrow(ax, (5.0, 4.5), (5.0, 5.0))
    ax.text(
        5.0,
        -0.25,
        "h = W0·x + (α/r)·B·A·x     trainable: r·(d + k) instead of d·k",
        ha="center",
        fontsize=10,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def module_tree(path: Path) -> None:
    """One OPT attention block before and after inject_lora(target_modules=["q_proj","v_proj"])."""
    plt = _plt()
    before = [
        ("self_attn (OPTAttention)", 0, "#eee"),
        ("k_proj  Linear(4096 → 4096)", 1, "#9cc3e6"),
        ("v_proj  Linear(4096 → 4096)", 1, "#9cc3e6"),
        ("q_proj  Linear(4096 → 4096)", 1, "#9cc3e6"),
        ("out_proj  Linear(4096 → 4096)", 1, "#9cc3e6"),
    ]
    after = [
        ("self_attn (OPTAttention)", 0, "#eee"),
        ("k_proj  Linear  (frozen)", 1, "#9cc3e6"),
        ("v_proj  LoRALinear", 1, "#f4b183"),
        ("base  Linear  (frozen)", 2, "#9cc3e6"),
        ("lora_A  16 × 4096", 2, "#f4b183"),
        ("lora_B  4096 × 16", 2, "#f4b183"),
        ("q_proj  LoRALinear", 1, "#f4b183"),
        ("base  Linear  (frozen)", 2, "#9cc3e6"),
        ("lora_A  16 × 4096", 2, "#f4b183"),
        ("lora_B  4096 × 16", 2, "#f4b183"),
        ("out_proj  Linear  (frozen)", 1, "#9cc3e6"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, rows, title in (
        (axes[0], before, "before: model.decoder.layers[i].self_attn"),
        (axes[1], after, 'after inject_lora(r=16, ["q_proj", "v_proj"])'),
    ):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, len(after) + 1)
        ax.axis("off")
        ax.set_title(title, fontsize=10)
        for i, (text, depth, color) in enumerate(rows):
            y = len(after) - i
            _box(ax, 0.3 + 1.2 * depth, y - 0.35, 6.0, 0.7, text, color, 9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def lr_schedule(path: Path) -> None:
    """The tutorial's schedule: warmup over 100 steps to 2e-4, then linear decay to 0 at 200."""
    from solutions.train import linear_warmup_lr

    plt = _plt()
    steps = list(range(201))
    lrs = [linear_warmup_lr(s, base_lr=2e-4, warmup_steps=100, max_steps=200) for s in steps]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, lrs)
    ax.axvline(100, color="grey", ls=":")
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="warmup 100, max_steps 200")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def int8_outlier(path: Path) -> None:
    """Why LLM.int8 keeps outlier columns in fp16: absmax quantization of one row."""
    import torch

    plt = _plt()
    generator = torch.Generator().manual_seed(0)
    row = torch.randn(64, generator=generator) * 0.5
    row[17] = 20.0  # an outlier feature (LLM.int8, Dettmers et al. 2022, §3)

    def quantize(values):
        scale = values.abs().max() / 127  # absmax: the largest magnitude maps to 127
        return torch.round(values / scale) * scale

    with_outlier = quantize(row)
    rest = torch.cat([row[:17], row[18:]])
    without = quantize(rest)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].bar(range(64), row.tolist(), color=["#c55" if i == 17 else "#4a8" for i in range(64)])
    axes[0].set(title="one row: 63 ordinary values and one outlier column", xlabel="column")
    err_all = (with_outlier - row).abs()
    err_rest = (without - rest).abs()
    axes[1].plot(
        [e for i, e in enumerate(err_all.tolist()) if i != 17],
        "o",
        ms=3,
        label=f"absmax over the row (step {row.abs().max() / 127:.3f})",
    )
    axes[1].plot(
        err_rest.tolist(),
        "s",
        ms=3,
        label=f"outlier kept aside (step {rest.abs().max() / 127:.4f})",
    )
    axes[1].set(yscale="log", title="rounding error of the ordinary values", xlabel="column")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def experiment_plots() -> None:
    os.environ["LORA_KATA_IMPL"] = "solutions"
    from lora_kata.experiments import EXPERIMENTS, run

    for experiment in EXPERIMENTS.values():
        outcome = run(experiment)
        if outcome.figure is not None:
            shutil.copy(outcome.figure, FIGURES / outcome.figure.name)
            print(f"  {outcome.figure.name}  ({outcome.seconds:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-try", action="store_true", help="skip the experiment plots")
    args = parser.parse_args()
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name, draw in (
        ("lora-two-paths.png", two_paths),
        ("module-tree.png", module_tree),
        ("lr-schedule.png", lr_schedule),
        ("int8-outlier.png", int8_outlier),
    ):
        draw(FIGURES / name)
        print(f"  {name}")
    if not args.no_try:
        experiment_plots()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
