"""The LoRA linear layer (exercises 01, 02 and 05).

A frozen linear layer W0 ∈ R^{d×k} (PyTorch stores it as weight: (out_features=d,
in_features=k)) learns a low-rank update ΔW = (α/r)·B·A with A ∈ R^{r×k}, B ∈ R^{d×r}:

    h = W0·x + (α/r)·B·A·x

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lora_scaling(alpha: float, r: int, *, rslora: bool = False) -> float:
    """The factor s that multiplies B·A: α/r, or α/√r for rank-stabilised LoRA.

    Dividing by r keeps the update's size roughly independent of r, so α can be set once
    ("set α to the first r tried and leave it"). rsLoRA (Kalajdzievski 2023,
    arXiv:2312.03732) shows α/√r keeps learning stable at large r.
    """
    return alpha / math.sqrt(r) if rslora else alpha / r


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
    x: (..., k)  →  h: (..., d)
    lora_A: (r, k), kaiming-uniform with a=√5, so |A_ij| ≤ 1/√k (what nn.Linear(k, r) does)
    lora_B: (d, r), zeros, so ΔW = 0 and the layer starts as exactly the base layer
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        # bool is an int in Python; r=True is a bug, not a rank.
        if isinstance(r, bool) or not isinstance(r, int):
            raise ValueError(f"r must be a whole number (int) ≥ 1, got {r!r}")
        if r < 1:
            raise ValueError(f"r must be ≥ 1 (the rank of the update), got {r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (it scales the update by alpha/r), got {alpha}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not hasattr(base, "in_features") or not hasattr(base, "out_features"):
            raise TypeError(
                "LoRALinear wraps a linear layer (nn.Linear, or bitsandbytes Linear8bitLt or "
                f"Linear4bit), got {type(base).__name__}"
            )
        self.base = base
        self.r = r
        self.alpha = alpha
        self.merged = False
        # The pretrained weights stay frozen: only A and B learn.
        for param in base.parameters():
            param.requires_grad_(False)
        # fp32 adapters even on an fp16/int8 base (as peft): tiny, and Adam updates of
        # 2e-4 vanish in fp16 rounding. Same device as the base weight (meta included).
        device = base.weight.device
        self.lora_A = nn.Parameter(
            torch.empty(r, base.in_features, device=device, dtype=torch.float32)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, device=device, dtype=torch.float32)
        )
        # A random, B zero: ΔW = B·A = 0 at the start, yet B's gradient is not zero.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

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
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result  # ΔW already lives in base.weight
        # Dropout only on the update's input: the frozen path must stay deterministic.
        update_input = self.lora_dropout(x.to(self.lora_A.dtype))
        update = (update_input @ self.lora_A.T) @ self.lora_B.T
        return result + (self.scaling * update).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← W0 + ΔW, once: afterwards forward costs one matmul, like the base layer."""
        if self.merged:
            return
        if _is_int8(self.base):
            raise TypeError(
                "cannot merge LoRA into an 8-bit or 4-bit (bitsandbytes) layer: int8 or NF4 "
                "weights cannot hold W0 + ΔW exactly. Keep the adapter unmerged, or load the "
                "base model in fp16/fp32 and merge there."
            )
        weight = self.base.weight
        weight += self.delta_weight().to(weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 ← W0 − ΔW if merged (W0 comes back up to float rounding); else nothing."""
        if not self.merged:
            return
        weight = self.base.weight
        weight -= self.delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"
