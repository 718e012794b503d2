"""Counting parameters (exercise 03): the tutorial's trainable-parameter line.

One adapted matrix W0 ∈ R^{d×k} adds A (r×k) and B (d×r): r·(k + d) parameters. The tutorial
counts opt-6.7b with r=16 on q_proj and v_proj and prints one line of this format:

    trainable params: <T> || all params: <N> || trainable%: <P>

T and N are plain integers and P is 100 · T / N printed as Python prints a float. For opt-6.7b
(4096 → 4096, 32 layers) T = 32 · 2 · 16 · 8192 = 8388608 of N = 6666862592 parameters, and
P = 0.12582542214183376 (0.126 %).

Lesson: lessons/en/03-counting-parameters.md.
"""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total): how many parameter values the model has, and how many of them train.

    - A parameter counts once even when it is shared or tied (OPT's lm_head.weight IS the input
      embedding's weight): model.parameters() yields each Parameter object once;
      model.state_dict() lists a tied tensor under both names.
    - Trainable means param.requires_grad. Buffers are not parameters.
    - param.numel() is the number of values (it works on the meta device too).
    - Return two Python ints.
    """
    # TODO(03): sum numel() over the model's parameters, and over those that require grad.
    raise NotImplementedError("Exercise 03: count_parameters")


def trainable_parameters_line(model: nn.Module) -> str:
    """The tutorial's line, character for character:

        f"trainable params: {trainable} || all params: {total} || trainable%: {percent}"

    with plain integers (no thousands separators) and percent = 100 * trainable / total, a float
    printed as Python prints it (no rounding), e.g. 0.12582542214183376.
    """
    # TODO(03): format count_parameters(model) like the tutorial's print_trainable_parameters.
    raise NotImplementedError("Exercise 03: trainable_parameters_line")


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """How many parameters LoRA adds to one Linear(in_features → out_features) at rank r.

    A is (r, in_features) and B is (out_features, r).
    lora_parameter_count(4096, 4096, 16) == 131072.
    """
    # TODO(03): the number of values in A plus the number in B.
    raise NotImplementedError("Exercise 03: lora_parameter_count")
