"""Finding target modules and injecting LoRA (exercise 04); merging a whole model (exercise 05).

peft's get_peft_model does the same: find the target linear layers by dotted name, replace each
(in place) with a LoRA wrapper around it, freeze everything else. Matching follows peft's
check_target_module_exists: a list entry matches a name exactly or as a suffix after '.', a
string is a regular expression that must match the whole dotted name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from torch import nn

from .lora import LoRALinear

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
        # Fail at the config, with the field's name, not deep inside the model later.
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be an int ≥ 1 (the rank of the update), got {self.r!r}")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)):
            raise ValueError(f"lora_alpha must be a number > 0, got {self.lora_alpha!r}")
        if not self.lora_alpha > 0:  # also rejects NaN
            raise ValueError(
                f"lora_alpha must be > 0 (the update is scaled by lora_alpha / r), "
                f"got {self.lora_alpha!r}"
            )
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias not in BIAS_MODES:
            raise ValueError(
                f"bias must be one of {', '.join(repr(m) for m in BIAS_MODES)}, got {self.bias!r}"
            )
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                raise ValueError("target_modules is an empty string: give a regex or a list")
        elif not isinstance(targets, Iterable) or not all(isinstance(t, str) for t in targets):
            raise ValueError(
                f"target_modules must be a list of module names or a regex string, got {targets!r}"
            )
        elif not list(targets):
            raise ValueError("target_modules is empty: name at least one module, e.g. q_proj")


def _matches(name: str, target_modules: list[str] | str) -> bool:
    if isinstance(target_modules, str):
        # A regex over the whole dotted name: fullmatch, not search (peft does the same).
        return re.fullmatch(target_modules, name) is not None
    # Whole name components only: "proj" must not match "q_proj".
    return any(name == t or name.endswith("." + t) for t in target_modules)


def find_target_modules(model: nn.Module, target_modules: list[str] | str) -> list[str]:
    """Dotted names of the modules that target_modules selects, in model order."""
    # The root ("") is never a target: it cannot be replaced inside itself.
    return [name for name, _ in model.named_modules() if name and _matches(name, target_modules)]


def _describe(target_modules: list[str] | str) -> str:
    if isinstance(target_modules, str):
        return f"regex {target_modules!r}"
    return repr(list(target_modules))


def inject_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Wrap every target linear layer in a LoRALinear, in place; freeze all the rest."""
    names = find_target_modules(model, config.target_modules)
    if not names:
        examples = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:4]
        raise ValueError(
            f"target_modules {_describe(config.target_modules)} matched no module. A list entry "
            f"must equal a module's name or its last parts after a '.', a string must match the "
            f"whole name as a regex; linear layers here are named like {examples}"
        )
    # Check every match before changing anything, so a bad config leaves the model untouched.
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        module = model.get_submodule(name)
        if any(name == w or name.startswith(w + ".") for w in wrapped):
            raise ValueError(
                f"{name} already has LoRA (inject_lora was called twice on this model?): "
                f"inject once, or start again from a fresh model"
            )
        # bitsandbytes' Linear8bitLt and Linear4bit subclass nn.Linear: no bitsandbytes import.
        if not isinstance(module, nn.Linear):
            raise TypeError(
                f"target {name} is a {type(module).__name__}, not a linear layer (nn.Linear, "
                f"Linear8bitLt or Linear4bit): narrow target_modules "
                f"{_describe(config.target_modules)}"
            )
    # Freeze first, then inject: the new lora_A/lora_B are created trainable.
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        # setattr on the parent: setattr(model, "a.b.c", ...) would add a new child literally
        # called "a.b.c" and leave the real layer in place.
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        setattr(parent, child, LoRALinear(base, config.r, config.lora_alpha, config.lora_dropout))
    # peft's bias modes: "all" trains every bias in the model, "lora_only" only the wrapped
    # layers' biases. A trained bias changes the base model itself.
    if config.bias == "all":
        for name, param in model.named_parameters():
            if name == "bias" or name.endswith(".bias"):
                param.requires_grad_(True)
    elif config.bias == "lora_only":
        for name in names:
            bias = model.get_submodule(name).base.bias
            if bias is not None:
                bias.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict:
    """The LoRA tensors of model.state_dict() (keys such as "...q_proj.lora_A"), and nothing
    of the base model except the biases that train (bias="all" or "lora_only"), as peft saves."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f"{name}." if name else ""
            keys.update((prefix + "lora_A", prefix + "lora_B"))
    # A trained bias is part of what was learned: without it the adapter is incomplete.
    keys.update(
        name
        for name, param in model.named_parameters()
        if param.requires_grad and (name == "bias" or name.endswith(".bias"))
    )
    return {k: v for k, v in model.state_dict().items() if k in keys}


def _lora_layers(model: nn.Module) -> list[LoRALinear]:
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not layers:
        raise ValueError("the model has no LoRALinear layers: call inject_lora first")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRALinear (W0 ← W0 + ΔW): inference then costs what the base model costs."""
    for layer in _lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Unmerge every merged LoRALinear (W ← W − ΔW); unmerged layers are left alone."""
    for layer in _lora_layers(model):
        layer.unmerge()
    return model
