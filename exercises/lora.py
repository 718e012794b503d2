"""The LoRA linear layer (exercises 01, 02 and 05).

A frozen linear layer W0 ∈ R^{d×k} (PyTorch stores it as weight: (out_features=d,
in_features=k)) learns a low-rank update ΔW = (α/r)·B·A with A ∈ R^{r×k}, B ∈ R^{d×r}:

    h = W0·x + (α/r)·B·A·x

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
Lessons: lessons/en/01-lora-layer.md, 02-forward-and-scaling.md, 05-merge-unmerge.md.
"""

from __future__ import annotations

import math  # noqa: F401  (you will need it: math.sqrt)

import torch
from torch import nn


def lora_scaling(alpha: float, r: int, *, rslora: bool = False) -> float:
    """The factor s that multiplies B·A: α/r, or α/√r when `rslora` is True.

    lora_scaling(32, 16) == 2.0;  lora_scaling(32, 16, rslora=True) == 8.0
    """
    # TODO(02): return alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA.
    raise NotImplementedError("Exercise 02: lora_scaling")


def _is_int8(base: nn.Module) -> bool:
    """True for a bitsandbytes quantized layer: Linear8bitLt (its weight is int8, or will be once
    on a GPU) or Linear4bit (its weight is NF4 codes packed two to a uint8)."""
    weight = getattr(base, "weight", None)
    if weight is not None and not weight.is_floating_point():
        return True
    return type(base).__module__.startswith("bitsandbytes")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update.

    h = base(x) + s · B(A(dropout(x))),   s = α/r
    x: (..., k)  →  h: (..., d)          (k = base.in_features, d = base.out_features)
    lora_A: (r, k)   lora_B: (d, r)
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        """Wrap `base` (nn.Linear, or bitsandbytes Linear8bitLt / Linear4bit) without copying it.

        - ValueError for r that is not an int ≥ 1 (a bool is not a rank), alpha ≤ 0, or
          dropout outside [0, 1).
        - Store self.base, self.r, self.alpha; self.merged = False.
        - Freeze every parameter of base (requires_grad False).
        - self.lora_A = nn.Parameter of shape (r, k), kaiming_uniform_ with a=math.sqrt(5)
          (values within ±1/√k); self.lora_B = nn.Parameter of zeros, shape (d, r).
          Both float32, on base.weight's device, whatever base's dtype.
        - self.lora_dropout = nn.Dropout(dropout) (nn.Identity() when dropout is 0).
        """
        super().__init__()
        # TODO(01): validate, keep base, freeze it, create lora_A, lora_B and lora_dropout.
        raise NotImplementedError("Exercise 01: LoRALinear.__init__")

    @property
    def scaling(self) -> float:
        """s = α/r, the factor applied to B·A."""
        return lora_scaling(self.alpha, self.r)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B @ A, shape (out_features, in_features): the same layout as base.weight."""
        # TODO(02): the update as a weight matrix.
        raise NotImplementedError("Exercise 02: LoRALinear.delta_weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = base(x) + s · B(A(dropout(x))); once merged, just base(x).

        x: (..., k) → (..., d). Dropout applies to the update's input only, never to the base
        path. Cast x to lora_A's dtype for the update, and the update back to base(x)'s dtype.
        """
        # TODO(02): the base output plus the scaled low-rank update.
        raise NotImplementedError("Exercise 02: LoRALinear.forward")

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← W0 + ΔW, once (a second merge does nothing); then self.merged = True.

        TypeError (saying why and what to do) if the base is 8-bit or 4-bit: see _is_int8.
        """
        # TODO(05): add the update into base.weight, in base.weight's dtype.
        raise NotImplementedError("Exercise 05: LoRALinear.merge")

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 ← W0 − ΔW if merged, then self.merged = False; otherwise do nothing."""
        # TODO(05): take the update back out of base.weight.
        raise NotImplementedError("Exercise 05: LoRALinear.unmerge")

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"
