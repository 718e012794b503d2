"""Model helpers shared by the exercise tests of 03, 04 and 05 (and any later ones).

- `opt_6_7b_on_meta()`: facebook/opt-6.7b's architecture on the meta device, built once per
  process (about 3 s) and handed out as a deep copy (milliseconds: meta tensors hold no data).
- 8-bit loading lives in lora_kata.testing.int8 (`load_tiny_opt_in_8bit`).
- Name mapping between the kata's LoRALinear (`q_proj.base`, `q_proj.lora_A`) and peft's LoRA
  layers (`base_model.model.` prefix, `q_proj.base_layer`, `q_proj.lora_A.default.weight`).

Nothing here imports transformers, peft or bitsandbytes at module import time.
"""

from __future__ import annotations

import copy
import re
from functools import cache

PEFT_PREFIX = "base_model.model."


@cache
def _opt_6_7b_meta():
    from lora_kata.models.tiny import build_on_meta, opt_6_7b_config

    return build_on_meta(opt_6_7b_config())


def opt_6_7b_on_meta():
    """A fresh (deep-copied) opt-6.7b on the meta device: real shapes, no memory, tied head."""
    return copy.deepcopy(_opt_6_7b_meta())


def peft_model(model, *, r, lora_alpha, target_modules, bias="none", lora_dropout=0.0):
    """peft's get_peft_model on `model` (in place, as peft does), task CAUSAL_LM."""
    import warnings

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=target_modules,
        lora_dropout=lora_dropout,
        bias=bias,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def peft_to_kata_name(name: str) -> str:
    """A peft parameter / module name in the kata's naming (drops the adapter name "default")."""
    name = name.removeprefix(PEFT_PREFIX)
    name = re.sub(r"\.lora_([AB])\.default\.weight$", r".lora_\1", name)
    name = re.sub(r"\.lora_([AB])\.weight$", r".lora_\1", name)  # get_peft_model_state_dict
    return name.replace(".base_layer.", ".base.").removesuffix(".base_layer")


def peft_targeted_names(peft_model) -> list[str]:
    """Dotted names (in the kata's naming) of the modules peft wrapped, in model order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [
        peft_to_kata_name(name)
        for name, module in peft_model.named_modules()
        if isinstance(module, BaseTunerLayer)
    ]


def copy_lora_into_peft(ours, theirs) -> int:
    """Copy every lora_A / lora_B of the kata's model into peft's model; returns how many."""
    import torch

    ours_params = dict(ours.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(ours_params[peft_to_kata_name(name)])
                copied += 1
    return copied


def randomise_lora(model, seed: int = 0, scale: float = 0.2) -> None:
    """Give every lora_A / lora_B seeded random values, B included, so that ΔW is not zero (a
    check of "the right B was loaded" needs B ≠ 0)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_A") or name.endswith("lora_B"):
                values = torch.randn(param.shape, generator=generator) * scale
                param.copy_(values.to(param.dtype))


def token_batch(batch: int = 2, length: int = 9, vocab_size: int = 512, seed: int = 0):
    """Seeded input ids for a tiny OPT (ids 4.. avoid the special tokens)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab_size, (batch, length), generator=generator)
