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
import json  # noqa: F401  (load_adapters reads exercise 09's files)
import os
from pathlib import Path  # noqa: F401

import safetensors.torch  # noqa: F401
import torch
from torch import nn

from .adapter import (  # noqa: F401  (exercise 09's file names and checks, to reuse)
    CONFIG_NAME,
    PICKLE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    _check_supported,
)
from .inject import find_target_modules  # noqa: F401
from .lora import lora_scaling  # noqa: F401


class MultiLoRALinear(nn.Module):
    """One frozen linear layer shared by named LoRA adapters of any ranks."""

    def __init__(self, base: nn.Module):
        """Given: the base (frozen), empty adapter dictionaries, no route."""
        super().__init__()
        self.base = base
        for param in base.parameters():
            param.requires_grad_(False)
        self.lora_A = nn.ParameterDict()  # name -> (r_n, in_features)
        self.lora_B = nn.ParameterDict()  # name -> (out_features, r_n)
        self.scaling: dict[str, float] = {}  # name -> s_n
        self.route: list[str | None] | None = None  # the adapter of each batch row

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def add_adapter(
        self, name: str, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float
    ) -> None:
        """Hold adapter `name`: self.lora_A[name] = A (r, in_features), self.lora_B[name] = B
        (out_features, r), self.scaling[name] = float(scaling).

        Store copies as float32 nn.Parameters on the base weight's device (requires_grad off:
        they serve, they do not train). Each adapter has its own r. A or B of the wrong shape →
        ValueError naming the adapter and the shapes.
        """
        # TODO(15): check the shapes, store fp32 copies of A and B, and the scaling.
        raise NotImplementedError("Exercise 15: MultiLoRALinear.add_adapter")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, ..., in_features) → (batch, ..., out_features).

        result = base(x). If self.route is None: that is all. Else route[i] names the adapter
        of batch row i (len(route) != batch → ValueError); for each adapter n present in the
        route (and held by this layer: an adapter that does not target it adds nothing here):
            rows = the indices i with route[i] == n
            result[rows] += s_n · (x[rows] @ A_nᵀ) @ B_nᵀ      (in lora_A's dtype, cast back)
        None rows keep base(x). ONE pass per adapter, over its rows only: no Python loop over
        the rows of x, and never an adapter over rows that are not its own. Out of place
        (result.index_add) is simplest: autograd and the base output stay intact.
        """
        # TODO(15): for each adapter in the route, gather its rows, add its update to them.
        raise NotImplementedError("Exercise 15: MultiLoRALinear.forward")


def load_adapters(model: nn.Module, directories: dict[str, str | os.PathLike]) -> nn.Module:
    """Load several LoRA adapters in exercise 09's (peft's) format onto one base model.

    directories: adapter name -> directory. For each adapter, read and check its files as
    exercise 09's load_adapter does, and say which adapter is wrong in every error:
    - FileNotFoundError when CONFIG_NAME or WEIGHTS_NAME is missing (ValueError for a
      pickle-only directory: never unpickle); _check_supported(data, path) (LoRA only);
    - targets = find_target_modules(model, data["target_modules"]) (skip a `.base` inside a
      MultiLoRALinear); each needs "base_model.model.<name>.lora_A.weight" (r, in_features)
      and ".lora_B.weight" (out_features, r): missing, unexpected or misshapen → ValueError.
    Check every directory before changing the model. Then each targeted layer becomes (once)
    a MultiLoRALinear at the same dotted name, and gets add_adapter(name, A, B,
    lora_scaling(lora_alpha, r)). Names: non-empty strings without '.'. Returns the model.
    """
    # TODO(15): read and check every directory, then wrap targets and add each adapter.
    raise NotImplementedError("Exercise 15: load_adapters")


@contextlib.contextmanager
def routed(model: nn.Module, adapter_names: list[str | None]):
    """with routed(model, ["fr", None, "de"]): model(...) — row i uses adapter_names[i].

    An adapter name no MultiLoRALinear of the model holds → ValueError listing the loaded
    names, before anything is set. Otherwise set route = list(adapter_names) on every
    MultiLoRALinear, yield, and set every route back to None afterwards, also when the block
    raises (try/finally). model.generate works inside the block: the batch keeps its rows.
    """
    # TODO(15): check the names, set the route on every MultiLoRALinear, clear it after.
    raise NotImplementedError("Exercise 15: routed")
    yield  # a generator, so contextmanager accepts it
