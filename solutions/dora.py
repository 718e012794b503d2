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

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .adapter import (
    CONFIG_NAME,
    PICKLE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    _adapter_settings,
    _check_supported,
    _write_adapter,
)
from .inject import LoRAConfig, find_target_modules, inject_lora
from .lora import LoRALinear, _is_int8

MAGNITUDE_KEY = "lora_magnitude_vector"  # peft's name for m, in its files and modules


def _base_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's W0 as a float matrix (out_features, in_features): the weight itself for
    a float layer; dequantized for bitsandbytes' Linear8bitLt (int8 · row scale / 127) and
    Linear4bit (NF4 codes · block absmax)."""
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
        super().__init__(base, r, alpha, dropout)
        # m starts as the row norms of W0: with B = 0, V = W0 and m / n = 1.
        norms = torch.linalg.vector_norm(_base_weight(self.base).float(), dim=1)
        self.magnitude = nn.Parameter(norms.to(device=self.lora_A.device, dtype=torch.float32))
        self._merged_norm: torch.Tensor | None = None

    def weight_norm(self) -> torch.Tensor:
        """n = ||W0 + s·B·A||₂ per output row, detached: the paper's §4.3 treats it as a
        constant, so it gets no gradient (and costs no backward pass)."""
        weight = _base_weight(self.base).to(self.lora_A.dtype)
        return torch.linalg.vector_norm(weight + self.delta_weight(), dim=1).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result  # (m/n)·V already lives in base.weight
        scale = self.magnitude / self.weight_norm()  # (out_features,)
        update_input = self.lora_dropout(x.to(self.lora_A.dtype))
        weight = _base_weight(self.base).to(self.lora_A.dtype)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            # No dropout: W0·x is the base output without its bias (saves a matmul).
            bias = getattr(self.base, "bias", None)
            plain = result.to(self.lora_A.dtype)
            base_out = plain - bias.to(plain.dtype) if bias is not None else plain
        else:
            base_out = update_input @ weight.T  # W0·d(x), as peft does under dropout
        update = (update_input @ self.lora_A.T) @ self.lora_B.T * self.scaling
        # base(x) + (m/n − 1)·W0·d(x) + (m/n)·s·B·A·d(x): with no dropout, (m/n)·V·x + bias.
        return result + ((scale - 1) * base_out + scale * update).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← (m/n)[:, None] · (W0 + s·B·A), once; n is remembered for unmerge."""
        if self.merged:
            return
        if _is_int8(self.base):
            raise TypeError(
                "cannot merge DoRA into an 8-bit or 4-bit (bitsandbytes) layer: its weights "
                "cannot hold (m/n)·(W0 + ΔW) exactly. Keep the adapter unmerged, or load the "
                "base model in fp16/fp32 and merge there."
            )
        weight = self.base.weight
        norm = self.weight_norm()
        merged = (self.magnitude / norm)[:, None] * (weight.float() + self.delta_weight())
        weight.copy_(merged.to(weight.dtype))
        self._merged_norm = norm
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 ← W / (m/n)[:, None] − s·B·A with the n of the merge; else nothing."""
        if not self.merged:
            return
        weight = self.base.weight
        scale = self.magnitude / self._merged_norm
        restored = weight.float() / scale[:, None] - self.delta_weight()
        weight.copy_(restored.to(weight.dtype))
        self._merged_norm = None
        self.merged = False


def inject_dora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """inject_lora's rules (targets, freezing, bias, errors), with DoRALinear layers."""
    inject_lora(model, config)
    for name, module in list(model.named_modules()):
        if type(module) is not LoRALinear:
            continue
        base = module.base
        # DoRALinear freezes its base like LoRALinear: keep a bias that `bias` made trainable.
        trainable = [p for p in base.parameters() if p.requires_grad]
        layer = DoRALinear(base, config.r, config.lora_alpha, config.lora_dropout)
        for param in trainable:
            param.requires_grad_(True)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
    return model


def save_dora_adapter(
    model, directory, config: LoRAConfig, *, base_model_name_or_path=None
) -> None:
    """Exercise 09's files for a DoRA model: "use_dora": true in adapter_config.json, and each
    layer's magnitude under "base_model.model.<module>.lora_magnitude_vector" (out_features,)."""
    if config.bias != "none":
        raise ValueError(
            f"save_dora_adapter writes adapter weights only, but config.bias is {config.bias!r}: "
            "its trained biases would be lost. Use bias='none'."
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if not isinstance(module, DoRALinear):
            continue
        if module.r != config.r or module.alpha != config.lora_alpha:
            raise ValueError(
                f"{name} has r={module.r}, alpha={module.alpha} but the config says "
                f"r={config.r}, lora_alpha={config.lora_alpha}"
            )
        prefix = f"base_model.model.{name}"
        for key, value in (
            (f"{prefix}.lora_A.weight", module.lora_A),
            (f"{prefix}.lora_B.weight", module.lora_B),
            (f"{prefix}.{MAGNITUDE_KEY}", module.magnitude),
        ):
            tensors[key] = value.detach().to("cpu").contiguous()
    if not tensors:
        raise ValueError("the model has no DoRALinear layers: inject_dora before saving")
    settings = {
        **_adapter_settings(model, config, base_model_name_or_path),
        "use_dora": True,
    }
    _write_adapter(directory, tensors, settings)


def load_dora_adapter(model, directory) -> nn.Module:
    """inject_dora into the base `model` as `directory`'s DoRA adapter says, and load A, B and
    the magnitudes (ours or peft's files). Errors as exercise 09's load_adapter."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: an adapter directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if not weights_path.is_file():
        if (directory / PICKLE_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"{directory} holds only {PICKLE_WEIGHTS_NAME}, a pickle: it is never loaded"
            )
        raise FileNotFoundError(f"{weights_path} not found")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA layers: load into a fresh base model")
    data = json.loads(config_path.read_text(encoding="utf-8"))
    if data.get("use_dora") is not True:
        raise ValueError(f"{config_path}: use_dora is not true: load it with load_adapter")
    _check_supported({**data, "use_dora": False}, config_path)  # everything else as in 09
    targets = data["target_modules"]
    config = LoRAConfig(
        r=data["r"],
        lora_alpha=data["lora_alpha"],
        target_modules=targets if isinstance(targets, str) else list(targets),
        lora_dropout=data.get("lora_dropout", 0.0),
        bias=data.get("bias", "none"),
    )
    tensors = safetensors.torch.load_file(weights_path)
    expected: dict[str, tuple[str, str, tuple[int, ...]]] = {}
    for name in find_target_modules(model, config.target_modules):
        layer = model.get_submodule(name)
        key = f"base_model.model.{name}"
        expected[f"{key}.lora_A.weight"] = (name, "lora_A", (config.r, layer.in_features))
        expected[f"{key}.lora_B.weight"] = (name, "lora_B", (layer.out_features, config.r))
        expected[f"{key}.{MAGNITUDE_KEY}"] = (name, "magnitude", (layer.out_features,))
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{key}: file {tuple(tensors[key].shape)}, model needs {shape}"
        for key, (_, _, shape) in expected.items()
        if key in tensors and tuple(tensors[key].shape) != shape
    ]
    problems = [
        f"{label} {items}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise ValueError(f"{weights_path} does not fit this model: {'; '.join(problems)}")
    inject_dora(model, config)
    with torch.no_grad():
        for key, tensor in tensors.items():
            name, which, _ = expected[key]
            parameter = getattr(model.get_submodule(name), which)
            parameter.copy_(tensor.to(device=parameter.device, dtype=parameter.dtype))
    return model
