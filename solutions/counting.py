"""Counting parameters (exercise 03): the tutorial's trainable-parameter line.

One adapted matrix W0 ∈ R^{d×k} adds A (r×k) and B (d×r): r·(k + d) parameters. The tutorial
counts opt-6.7b with r=16 on q_proj and v_proj and prints one line of this format:

    trainable params: <T> || all params: <N> || trainable%: <P>

T and N are plain integers and P is 100 · T / N printed as Python prints a float. For opt-6.7b
(4096 → 4096, 32 layers) T = 32 · 2 · 16 · 8192 = 8388608 of N = 6666862592 parameters, and
P = 0.12582542214183376 (0.126 %).
"""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameter values; a shared or tied parameter counts once."""
    trainable = total = 0
    # parameters() yields each Parameter object once, so OPT's lm_head (the same tensor as
    # the input embedding) is not counted twice; state_dict() would list it under both names.
    # Buffers (running statistics, position ids) are not parameters and are not counted.
    for param in model.parameters():
        n = param.numel()  # a shape product: works on the meta device, no memory needed
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def trainable_parameters_line(model: nn.Module) -> str:
    """The tutorial's print_trainable_parameters line, character for character."""
    trainable, total = count_parameters(model)
    # Plain ints and the float's repr: the format the tutorial printed (today's peft adds
    # thousands separators and rounds to 4 decimals, which would not compare equal).
    return (
        f"trainable params: {trainable} || all params: {total} || "
        f"trainable%: {100 * trainable / total}"
    )


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Parameters LoRA adds to one in→out linear layer: A (r×in) plus B (out×r)."""
    # Not r·in·out: that is the size of the full ΔW, which LoRA never stores.
    return r * (in_features + out_features)
