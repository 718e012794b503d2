"""Experiment 03: a memory budget for opt-6.7b, computed on the meta device (no memory used).

It explains the tutorial's figures: about 13 GB in fp16, about 7 GB loaded in 8-bit, and
"16 GB is not enough, about 20 GB in the end" for training. Weights and optimizer states are
exact counts; activations are an estimate (they depend on tokens per micro-batch and on
gradient checkpointing), so the table shows them over a range of micro-batch sizes.
"""

from __future__ import annotations

from lora_kata.experiments.common import Outcome, figure_path, new_figure, pieces, save

GB = 1e9  # the tutorial's "GB" (decimal), as checkpoint sizes are quoted


def _split_parameters(model) -> tuple[int, int, int]:
    """(values in Linear layers bitsandbytes quantizes, their output rows, all other values).

    LLM.int8 quantizes every nn.Linear except lm_head (OPT ties lm_head to the embeddings);
    embeddings, layer norms and biases stay 16-bit. Each int8 row keeps one fp32 scale (SCB).
    """
    import torch

    quantized = rows = 0
    seen = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            quantized += module.weight.numel()
            rows += module.out_features
            seen.add(id(module.weight))
    other = sum(p.numel() for p in model.parameters() if id(p) not in seen)
    return quantized, rows, other


def activations_bytes(tokens: int, hidden: int, layers: int, vocab: int, checkpointing: bool):
    """A rough fp16 estimate of what the backward pass keeps for `tokens` tokens.

    Without checkpointing each layer keeps about 34·h bytes per token (Korthikanti et al.
    2022, attention scores left out: quotes are short); with it, only each layer's input
    (2·h bytes) plus one layer recomputed at a time. The logits cost ~10 bytes per vocabulary
    entry per token (fp16 logits, their fp32 copy, and its gradient).
    """
    per_layer = 2 * hidden if checkpointing else 34 * hidden
    recompute = 34 * hidden if checkpointing else 0
    return tokens * (layers * per_layer + recompute + 10 * vocab)


def budget(out_dir=None) -> Outcome:
    counting = pieces("counting")
    from lora_kata.testing.lora_models import opt_6_7b_on_meta

    model = opt_6_7b_on_meta()
    config = model.config
    _, total = counting.count_parameters(model)
    quantized, rows, other = _split_parameters(model)
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    lora = layers * 2 * counting.lora_parameter_count(h, h, 16)  # r=16 on q_proj and v_proj

    fp16 = 2 * total
    int8 = quantized + 4 * rows + 2 * other
    # prepare_for_int8_training casts the non-int8 values (embeddings, norms, biases) to fp32.
    prepared = quantized + 4 * rows + 4 * other
    lora_states = 16 * lora  # fp32 weight + gradient + Adam's two moments
    full_adam = 16 * total  # fp16 weight + fp16 grad + fp32 master + two fp32 moments
    rows_out = [
        ["fp16 weights (the checkpoint)", fp16 / GB],
        ["8-bit load: int8 Linear + fp32 row scales + fp16 rest", int8 / GB],
        ["after preparation: the rest cast to fp32", prepared / GB],
        [f"LoRA r=16 q,v: {lora:,} values × 16 bytes", lora_states / GB],
        ["full fine-tuning with Adam (16 bytes / parameter)", full_adam / GB],
    ]
    tokens_axis = [4 * n for n in (32, 64, 128, 256, 512)]
    with_ckpt = [
        (prepared + lora_states + activations_bytes(t, h, layers, vocab, True)) / GB
        for t in tokens_axis
    ]
    without = [
        (prepared + lora_states + activations_bytes(t, h, layers, vocab, False)) / GB
        for t in tokens_axis
    ]
    for t, a, b in zip(tokens_axis, with_ckpt, without, strict=True):
        rows_out.append(
            [f"8-bit LoRA training, 4 × {t // 4} tokens: ckpt / no ckpt", f"{a:.1f} / {b:.1f}"]
        )

    fig, (left, right) = new_figure(ncols=2, width=5.0)
    labels = ["fp16", "8-bit", "prepared", "full FT\n(Adam)"]
    values = [fp16 / GB, int8 / GB, prepared / GB, full_adam / GB]
    left.bar(labels, values, color=["#888", "#4a8", "#4a8", "#c55"])
    for i, v in enumerate(values):
        left.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    left.set(ylabel="GB", title="opt-6.7b: weights (+ optimizer for full FT)")
    right.plot(tokens_axis, with_ckpt, "o-", label="8-bit LoRA, gradient checkpointing")
    right.plot(tokens_axis, without, "s-", label="8-bit LoRA, no checkpointing")
    right.axhline(16, color="grey", ls=":", label="a 16 GB card")
    right.set(xscale="log", xlabel="tokens per micro-batch", ylabel="GB (estimate)")
    right.set_title("training: weights + LoRA states + activations")
    right.legend(fontsize=7)
    path = save(fig, figure_path("03-memory-budget", out_dir))
    numbers = {
        "total": total,
        "fp16_gb": fp16 / GB,
        "int8_gb": int8 / GB,
        "prepared_gb": prepared / GB,
        "full_adam_gb": full_adam / GB,
        "lora": lora,
    }
    return Outcome("memory budget", ["what", "GB"], rows_out, path, numbers)
