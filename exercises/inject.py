"""Finding target modules and injecting LoRA (exercise 04); merging a whole model (exercise 05).

    for each target name n (an nn.Linear, or a bitsandbytes Linear8bitLt or Linear4bit):
        model.n  ←  LoRALinear(base=model.n, r, lora_alpha, lora_dropout)     # same dotted name
    trainable = every lora_A and lora_B  ∪  the biases chosen by `bias`;  all else frozen

Lessons: lessons/en/04-injecting-lora.md, lessons/en/05-merge-unmerge.md.
"""

from __future__ import annotations

import dataclasses
import re  # noqa: F401  (find_target_modules needs re.fullmatch)

from torch import nn

from .lora import LoRALinear  # noqa: F401  (inject_lora and merge_lora need it)

BIAS_MODES = ("none", "all", "lora_only")


@dataclasses.dataclass
class LoRAConfig:
    """LoRA's hyperparameters, with peft's LoraConfig field names."""

    r: int = 8
    lora_alpha: float = 8.0
    target_modules: list[str] | str = ("q_proj", "v_proj")
    lora_dropout: float = 0.0
    bias: str = "none"

    def __post_init__(self) -> None:
        """Runs after the dataclass's __init__: raise ValueError, naming the field, when

        - r is not an int ≥ 1 (a bool such as True is not a rank),
        - lora_alpha is not > 0,
        - lora_dropout is outside [0, 1),
        - bias is not one of BIAS_MODES ("none", "all", "lora_only"),
        - target_modules is empty (an empty list or tuple, or an empty string).
        """
        # TODO(04): check each field and raise ValueError with a message that names it.
        raise NotImplementedError("Exercise 04: LoRAConfig.__post_init__")


def find_target_modules(model: nn.Module, target_modules: list[str] | str) -> list[str]:
    """The dotted names (as in model.named_modules()) of the modules to adapt, in model order.

    - A list (or tuple) of names: a module named n matches an entry t when n == t or
      n.endswith("." + t). So "q_proj" matches "model.decoder.layers.0.self_attn.q_proj",
      and "proj" matches nothing (whole name parts only, never a substring).
    - A string: a regular expression that must match the WHOLE name: re.fullmatch(pattern, n).
    - Skip the root module (its name is "").
    """
    # TODO(04): walk model.named_modules() and keep the names that match.
    raise NotImplementedError("Exercise 04: find_target_modules")


def inject_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Replace each target with LoRALinear(target, config.r, config.lora_alpha,
    config.lora_dropout), in place, and return the same model.

    1. names = find_target_modules(model, config.target_modules). Check them all before changing
       anything:
       - no names → ValueError that shows config.target_modules;
       - a name that is (or lies inside) a LoRALinear → ValueError: LoRA is already injected;
       - a module that is not an nn.Linear (bitsandbytes' Linear8bitLt and Linear4bit are
         subclasses of it)
         → TypeError naming it.
    2. Freeze every parameter of the model (requires_grad_(False)).
    3. For each name "a.b.c": parent = model.get_submodule("a.b"); setattr(parent, "c", lora).
    4. bias: "none" → nothing more; "all" → every parameter named "bias" or ending in ".bias"
       trains; "lora_only" → only the biases of the wrapped layers (lora.base.bias) train.
    """
    # TODO(04): find, check, freeze, replace at the parent, then apply the bias mode.
    raise NotImplementedError("Exercise 04: inject_lora")


def lora_state_dict(model: nn.Module) -> dict:
    """The entries of model.state_dict() that hold what LoRA trained, and nothing else:

    - "<module>.lora_A" and "<module>.lora_B" for every LoRALinear in the model;
    - plus any bias parameter that is trainable (bias="all" or "lora_only" made it so),
      as peft's get_peft_model_state_dict does. Never the frozen base weights.
    """
    # TODO(04): filter model.state_dict() down to the LoRA tensors (and the trainable biases).
    raise NotImplementedError("Exercise 04: lora_state_dict")


def merge_lora(model: nn.Module) -> nn.Module:
    """Call merge() on every LoRALinear in the model; return the model.

    ValueError if the model has no LoRALinear at all (nothing to merge: inject_lora first?).
    """
    # TODO(05): merge every LoRALinear found in model.modules().
    raise NotImplementedError("Exercise 05: merge_lora")


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Call unmerge() on every LoRALinear in the model; return the model.

    ValueError if the model has no LoRALinear at all.
    """
    # TODO(05): unmerge every LoRALinear found in model.modules().
    raise NotImplementedError("Exercise 05: unmerge_lora")
