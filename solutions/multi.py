"""Many LoRA adapters on one base model, in one batch (exercise 15).

A server that holds one base model and many small fine-tunes (one per customer, task or
language) can answer requests for all of them in the same batch: every row goes through the
shared frozen W0, and each row adds the low-rank update of its own adapter n:

    h_i = W0·x_i + bias + s_n·B_n·A_n·x_i      n = route[i]   (None: the base alone)

Merging is no option there: W0 + ΔW_n serves one adapter at a time. So each adapter present in
the batch runs once, over its own rows only (gather the rows, two thin matmuls, add back).
Lesson: lessons/en/15-multi-lora.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .adapter import CONFIG_NAME, PICKLE_WEIGHTS_NAME, WEIGHTS_NAME, _check_supported
from .inject import find_target_modules
from .lora import lora_scaling


class MultiLoRALinear(nn.Module):
    """One frozen linear layer shared by named LoRA adapters of any ranks."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        for param in base.parameters():
            param.requires_grad_(False)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.scaling: dict[str, float] = {}
        self.route: list[str | None] | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def add_adapter(
        self, name: str, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float
    ) -> None:
        """Hold adapter `name`: A (r, in_features), B (out_features, r), its scaling s."""
        r = lora_A.shape[0]
        if tuple(lora_A.shape) != (r, self.in_features) or tuple(lora_B.shape) != (
            self.out_features,
            r,
        ):
            raise ValueError(
                f"adapter {name!r}: lora_A {tuple(lora_A.shape)} and lora_B "
                f"{tuple(lora_B.shape)} do not fit a layer ({self.out_features}, "
                f"{self.in_features}): want (r, {self.in_features}) and ({self.out_features}, r)"
            )
        device = self.base.weight.device
        self.lora_A[name] = nn.Parameter(
            lora_A.detach().to(device, torch.float32).clone(), requires_grad=False
        )
        self.lora_B[name] = nn.Parameter(
            lora_B.detach().to(device, torch.float32).clone(), requires_grad=False
        )
        self.scaling[name] = float(scaling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        route = self.route
        if route is None:
            return result
        if len(route) != x.shape[0]:
            raise ValueError(f"the route names {len(route)} adapters for a batch of {x.shape[0]}")
        for name in dict.fromkeys(route):
            if name is None or name not in self.lora_A:
                continue  # the base alone (an adapter that does not target this layer too)
            rows = torch.tensor([i for i, n in enumerate(route) if n == name], device=x.device)
            A, B = self.lora_A[name], self.lora_B[name]
            update = (x[rows].to(A.dtype) @ A.T) @ B.T * self.scaling[name]
            result = result.index_add(0, rows, update.to(result.dtype))
        return result


def _read_adapter(model: nn.Module, name: str, directory) -> tuple[dict, dict]:
    """(module name -> (A, B), scaling) of one adapter directory, checked as exercise 09 does."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"adapter {name!r}: {config_path} not found")
    if not weights_path.is_file():
        if (directory / PICKLE_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"adapter {name!r}: {directory} holds only {PICKLE_WEIGHTS_NAME}, a pickle: "
                "it is never loaded"
            )
        raise FileNotFoundError(f"adapter {name!r}: {weights_path} not found")
    data = json.loads(config_path.read_text(encoding="utf-8"))
    try:
        _check_supported(data, config_path)
    except ValueError as error:
        raise ValueError(f"adapter {name!r}: {error}") from None
    targets = data["target_modules"]
    names = [
        n
        for n in find_target_modules(model, targets if isinstance(targets, str) else list(targets))
        if not isinstance(model.get_submodule(n.rpartition(".")[0]), MultiLoRALinear)
    ]
    tensors = safetensors.torch.load_file(weights_path)
    r = data["r"]
    expected = {}
    for module_name in names:
        layer = model.get_submodule(module_name)
        key = f"base_model.model.{module_name}"
        expected[f"{key}.lora_A.weight"] = (r, layer.in_features)
        expected[f"{key}.lora_B.weight"] = (layer.out_features, r)
    problems = []
    if missing := sorted(set(expected) - set(tensors)):
        problems.append(f"missing keys {missing}")
    if unexpected := sorted(set(tensors) - set(expected)):
        problems.append(f"unexpected keys {unexpected}")
    if mismatched := [
        f"{key}: file {tuple(tensors[key].shape)}, model needs {shape}"
        for key, shape in expected.items()
        if key in tensors and tuple(tensors[key].shape) != shape
    ]:
        problems.append(f"shape mismatches {mismatched}")
    if problems:
        raise ValueError(f"adapter {name!r}: {weights_path} does not fit: {'; '.join(problems)}")
    pairs = {
        n: (
            tensors[f"base_model.model.{n}.lora_A.weight"],
            tensors[f"base_model.model.{n}.lora_B.weight"],
        )
        for n in names
    }
    return pairs, lora_scaling(data["lora_alpha"], r)


def load_adapters(model: nn.Module, directories: dict[str, str | os.PathLike]) -> nn.Module:
    """Load several peft-format LoRA adapters onto one base model, each under its name."""
    for name in directories:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"adapter names must be non-empty strings without '.', got {name!r}")
    # Read and check every directory before the model changes.
    adapters = {name: _read_adapter(model, name, path) for name, path in directories.items()}
    for name, (pairs, scaling) in adapters.items():
        for module_name, (lora_A, lora_B) in pairs.items():
            layer = model.get_submodule(module_name)
            if not isinstance(layer, MultiLoRALinear):
                parent_name, _, child = module_name.rpartition(".")
                layer = MultiLoRALinear(layer)
                setattr(model.get_submodule(parent_name), child, layer)
            layer.add_adapter(name, lora_A, lora_B, scaling)
    return model


@contextlib.contextmanager
def routed(model: nn.Module, adapter_names: list[str | None]):
    """Within the block, row i of every batch goes through adapter adapter_names[i]."""
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    loaded = sorted({name for layer in layers for name in layer.lora_A})
    unknown = sorted({n for n in adapter_names if n is not None and n not in loaded})
    if unknown:
        raise ValueError(f"unknown adapter(s) {unknown}: the loaded adapters are {loaded}")
    route = list(adapter_names)
    for layer in layers:
        layer.route = route
    try:
        yield model
    finally:
        for layer in layers:
            layer.route = None
