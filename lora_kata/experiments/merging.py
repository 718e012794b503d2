"""Experiment 05: merged against unmerged, the same outputs and one matmul fewer."""

from __future__ import annotations

import time

import torch

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save


def _best_ms(fn, repeats: int = 25) -> float:
    """The fastest of `repeats` calls: on a busy machine the minimum is the steadiest estimate
    of what the computation itself costs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return min(times)


def latency(out_dir=None) -> Outcome:
    lora = pieces("lora")
    torch.manual_seed(0)
    rows, ratios = [], []
    shapes = [(1024, 1024, 8), (1024, 4096, 16), (4096, 1024, 64)]
    x_tokens = 256
    for k, d, r in shapes:
        layer = lora.LoRALinear(torch.nn.Linear(k, d), r, 2.0 * r).eval()
        with torch.no_grad():
            layer.lora_B.normal_(std=0.02)  # a trained-looking B, so ΔW ≠ 0
        x = torch.randn(x_tokens, k)
        with torch.no_grad():
            before = layer(x)
            unmerged = _best_ms(lambda layer=layer, x=x: layer(x))
            layer.merge()
            after = layer(x)
            merged = _best_ms(lambda layer=layer, x=x: layer(x))
            plain = _best_ms(lambda layer=layer, x=x: layer.base(x))
        diff = (before - after).abs().max().item()
        rows.append([f"{k}→{d}", r, unmerged, merged, plain, diff])
        ratios.append(unmerged / merged)
    fig, (ax,) = new_figure()
    positions = range(len(rows))
    ax.bar([p - 0.2 for p in positions], [row[2] for row in rows], 0.4, label="unmerged")
    ax.bar([p + 0.2 for p in positions], [row[3] for row in rows], 0.4, label="merged")
    ax.set_xticks(list(positions), [f"{row[0]}, r={row[1]}" for row in rows])
    ax.set(
        ylabel=f"ms per forward ({x_tokens} tokens, CPU, 1 thread)", title="merge: no extra latency"
    )
    ax.legend()
    path = save(fig, figure_path("05-merge-latency", out_dir))
    return Outcome(
        "merge latency",
        ["shape", "r", "unmerged ms", "merged ms", "base ms", "max |Δ output|"],
        rows,
        path,
        {"max_diff": max(row[5] for row in rows), "min_speedup": min(ratios)},
    )
