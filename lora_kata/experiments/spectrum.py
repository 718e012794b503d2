"""Experiment 10: is the trained ΔW really low-rank, and how does it relate to W0?

After a short fine-tune with the learner's finetune (tiny OPT, r=16 on q_proj and v_proj), each
layer's ΔW = delta_weight() is decomposed. The paper's §7.3 asks how much of W0 lies in ΔW's
top directions: ‖Uᵀ W0 V‖_F against the same for random directions, and the amplification
factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F.
"""

from __future__ import annotations

import torch

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save


def _overlap(
    delta: torch.Tensor, w0: torch.Tensor, k: int, generator
) -> tuple[float, float, float]:
    u, _, vh = torch.linalg.svd(delta)
    u, v = u[:, :k], vh[:k].T
    projected = torch.linalg.matrix_norm(u.T @ w0 @ v).item()
    qu, _ = torch.linalg.qr(torch.randn(w0.shape[0], k, generator=generator))
    qv, _ = torch.linalg.qr(torch.randn(w0.shape[1], k, generator=generator))
    random = torch.linalg.matrix_norm(qu.T @ w0 @ qv).item()
    amplification = torch.linalg.matrix_norm(delta).item() / max(projected, 1e-12)
    return projected, random, amplification


def trained_delta(out_dir=None) -> Outcome:
    inject, data, finetune, lora = pieces("inject", "data", "finetune", "lora")
    from lora_kata.models.tiny import QUOTES_PATH, build_tiny_opt, quotes_tokenizer

    model = build_tiny_opt(seed=0)
    r = 16
    inject.inject_lora(
        model, inject.LoRAConfig(r=r, lora_alpha=32, target_modules=["q_proj", "v_proj"])
    )
    dataset = data.load_quotes(QUOTES_PATH)
    finetune.finetune(
        model,
        quotes_tokenizer(),
        dataset,
        max_steps=40,
        batch_size=4,
        grad_accum=2,
        lr=1e-2,
        warmup_steps=5,
        progress=False,
    )
    generator = torch.Generator().manual_seed(0)
    rows, spectra = [], {}
    for name, module in model.named_modules():
        if isinstance(module, lora.LoRALinear):
            with torch.no_grad():
                delta = module.delta_weight().float()
                w0 = module.base.weight.float()
                s = torch.linalg.svdvals(delta)
            energy = (s**2).cumsum(0) / (s**2).sum()
            projected, random, amplification = _overlap(delta, w0, 2, generator)
            short = name.replace("model.decoder.layers.", "L").replace(".self_attn.", ".")
            spectra[short] = (s / s[0]).tolist()[: r + 4]
            rows.append(
                [short, energy[0].item(), energy[3].item(), projected, random, amplification]
            )
    fig, (ax,) = new_figure()
    for short, values in spectra.items():
        ax.plot(range(1, len(values) + 1), values, "o-", ms=3, label=short)
    ax.axvline(r, color="grey", ls=":", label=f"r = {r}")
    ax.set(
        yscale="log",
        xlabel="singular value index",
        ylabel="σᵢ / σ₁",
        title="spectrum of the trained ΔW",
    )
    ax.legend(fontsize=7)
    path = save(fig, figure_path("10-delta-spectrum", out_dir))
    return Outcome(
        "ΔW spectrum",
        [
            "layer",
            "energy in σ1",
            "energy in σ1..4",
            "‖UᵀW0V‖ (k=2)",
            "random dirs",
            "amplification",
        ],
        rows,
        path,
        {"min_energy_top4": min(row[2] for row in rows)},
    )
