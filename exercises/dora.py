"""DoRA: weight-decomposed low-rank adaptation (exercise 14).

Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353. Each output
row i of a weight matrix is a length (its L2 norm) times a direction (a unit vector). DoRA
trains the lengths itself, as a vector m of out_features values (initialised to the row norms
of W0), and lets LoRA change only the directions:

    V  = W0 + s·B·A                      (out_features, in_features), s = α/r
    n  = ||V[i, :]||₂ for every row i    (out_features,), treated as a constant (no gradient)
    W' = (m / n)[:, None] · V            each row rescaled to the length m[i]
    h  = W'·x + bias                     the bias is not rescaled

At the start B = 0, so V = W0 and m = n: W' = W0 and the layer is the base layer.
Lesson: lessons/en/14-dora.md.
"""

from __future__ import annotations

import json  # noqa: F401  (save_dora_adapter and load_dora_adapter read and write JSON)
from pathlib import Path  # noqa: F401

import safetensors.torch  # noqa: F401
import torch
from torch import nn

from .adapter import (  # noqa: F401  (exercise 09's helpers and file names, to reuse)
    CONFIG_NAME,
    PICKLE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    _check_supported,
    _write_files_atomically,
)
from .inject import LoRAConfig, find_target_modules, inject_lora  # noqa: F401
from .lora import LoRALinear, _is_int8  # noqa: F401

MAGNITUDE_KEY = "lora_magnitude_vector"  # peft's name for m, in its files and modules


def _base_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's W0 as a float matrix (out_features, in_features): the weight itself for
    a float layer; dequantized for bitsandbytes' Linear8bitLt (int8 · row scale / 127) and
    Linear4bit (NF4 codes · block absmax). Given: use it wherever you need W0."""
    weight = base.weight
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes.functional as F

        return F.dequantize_4bit(weight.data, weight.quant_state)
    if weight.is_floating_point():
        return weight
    scales = getattr(weight, "SCB", None)
    if scales is None:  # after the first forward bitsandbytes keeps them on the layer
        scales = base.state.SCB
    return weight.data.float() * (scales.float()[:, None] / 127)


class DoRALinear(LoRALinear):
    """LoRALinear plus a trainable magnitude per output row (peft's lora_magnitude_vector)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        """Everything LoRALinear.__init__ does (call it first), then:

        - self.magnitude = nn.Parameter of shape (out_features,), float32, on lora_A's device,
          trainable, holding the row norms of W0: magnitude[i] = ||W0[i, :]||₂
          (torch.linalg.vector_norm(_base_weight(self.base).float(), dim=1)). One value per
          OUTPUT row (dim=1 of the (out, in) weight), not per input column.
        - Anything unmerge will need later (see merge) may start as None.
        """
        super().__init__(base, r, alpha, dropout)
        # TODO(14): the magnitude: the row norms of W0, as a float32 nn.Parameter.
        raise NotImplementedError("Exercise 14: DoRALinear.__init__")

    def weight_norm(self) -> torch.Tensor:
        """n = ||W0 + s·B·A||₂ for every output row: shape (out_features,), DETACHED.

        W0 = _base_weight(self.base) in lora_A's dtype; s·B·A = self.delta_weight(). The
        paper's §4.3 treats n as a constant: .detach() it, so no gradient flows through the
        norm (peft does the same). It is the norm of the whole V = W0 + s·B·A, not of W0 alone
        (that would be the magnitude's starting value, and wrong as soon as B ≠ 0).
        """
        # TODO(14): the row norms of W0 + ΔW, detached.
        raise NotImplementedError("Exercise 14: DoRALinear.weight_norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) → (..., out_features), in the base output's dtype.

        merged: base(x) alone. Otherwise, with scale = magnitude / weight_norm() (out_features,)
        and d(x) = lora_dropout(x cast to lora_A's dtype):
            base(x) + (scale − 1) ⊙ W0·d(x) + scale ⊙ s·B·A·d(x)
        (peft's formula). With dropout off that is (m/n) ⊙ (W0 + s·B·A)·x + bias: the bias
        is NOT rescaled. W0·x without the bias is base(x) − bias when d is the identity
        (no dropout, or eval mode), else compute W0·d(x) from _base_weight.
        The magnitude gets a gradient through scale; the norm gets none.
        """
        # TODO(14): scale = m / n; add (scale − 1)·W0·d(x) + scale·s·B·A·d(x) to base(x).
        raise NotImplementedError("Exercise 14: DoRALinear.forward")

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← (m/n)[:, None] · (W0 + s·B·A) in base.weight (in its dtype), once; then
        self.merged = True. A second merge does nothing.

        - TypeError (as LoRALinear.merge, exercise 05) for an 8-bit or 4-bit base: _is_int8.
        - Remember n (weight_norm() before the merge): unmerge needs it, and cannot recompute
          it from the merged weight.
        Afterwards forward(x) = base(x) equals the unmerged output to float rounding.
        """
        # TODO(14): rescale W0 + ΔW row by row to m, in place; keep n for unmerge.
        raise NotImplementedError("Exercise 14: DoRALinear.merge")

    @torch.no_grad()
    def unmerge(self) -> None:
        """If merged: W0 ← W / (m/n)[:, None] − s·B·A, with the n remembered by merge;
        self.merged = False. Otherwise nothing. W0 comes back to float rounding."""
        # TODO(14): undo the rescaling with the remembered n, then subtract ΔW.
        raise NotImplementedError("Exercise 14: DoRALinear.unmerge")


def inject_dora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Exercise 04's inject_lora, with DoRALinear instead of LoRALinear; in place, returns model.

    The same targets, freezing, `bias` modes and errors (ValueError when nothing matches,
    TypeError for a non-linear match). One way: inject_lora(model, config), then replace each
    LoRALinear it made by DoRALinear(its base, config.r, config.lora_alpha,
    config.lora_dropout) at the same dotted name (setattr on the parent). DoRALinear freezes
    its base: a bias that config.bias made trainable must stay trainable.
    """
    # TODO(14): inject_lora's rules with DoRALinear layers.
    raise NotImplementedError("Exercise 14: inject_dora")


def save_dora_adapter(
    model, directory, config: LoRAConfig, *, base_model_name_or_path=None
) -> None:
    """Exercise 09's save_adapter for a model made by inject_dora, in peft's DoRA format.

    As save_adapter (same files, same checks, _write_files_atomically), except:
    - one more tensor per DoRALinear <name>: "base_model.model.<name>.lora_magnitude_vector"
      (MAGNITUDE_KEY, no ".weight"), the magnitude, shape (out_features,);
    - "use_dora": true in adapter_config.json.
    ValueError if the model has no DoRALinear. PeftModel.from_pretrained loads the result
    and gives the same logits.
    """
    # TODO(14): save_adapter's files plus each magnitude, with "use_dora": true.
    raise NotImplementedError("Exercise 14: save_dora_adapter")


def load_dora_adapter(model, directory) -> nn.Module:
    """Exercise 09's load_adapter for a DoRA adapter (ours or peft's save_pretrained).

    As load_adapter (same file errors, checked before the model is touched), except:
    - ValueError unless the config says "use_dora": true; the other settings are checked by
      _check_supported(data with use_dora set to False, path);
    - each target also needs "base_model.model.<name>.lora_magnitude_vector" of shape
      (out_features,): missing, unexpected or misshapen keys → ValueError naming them;
    - inject_dora(model, config), then copy lora_A, lora_B and magnitude into each layer.
    The loaded model's logits equal peft's on the same files.
    """
    # TODO(14): check, inject_dora, copy A, B and the magnitudes.
    raise NotImplementedError("Exercise 14: load_dora_adapter")
