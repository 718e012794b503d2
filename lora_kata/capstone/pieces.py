"""Which implementation the capstone runs, and whether it has what the flags ask for.

The capstone always uses the learner's exercises 03, 04, 06-10. Two flags reach further:
--quant 4bit needs exercise 12 (`qlora.load_in_4bit`), --packing / --max-length need
exercise 11's `finetune(..., packing=..., max_length=...)`. They are passed only when asked
for, so a learner who has not reached those exercises runs the tutorial's job unchanged; when
asked for and missing, PieceMissing says which exercise provides them.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from types import ModuleType, SimpleNamespace

MODULES = ("counting", "inject", "data", "int8", "adapter", "finetune")


class PieceMissing(RuntimeError):
    """A flag needs a piece of the implementation that it does not have (yet)."""


def implementation_modules(impl) -> SimpleNamespace:
    """The modules a run uses, from `impl`: "exercises", "solutions", a package directory
    (as LORA_KATA_IMPL), an importable package name, or an object/mapping holding them."""
    if isinstance(impl, str | os.PathLike):
        impl = str(impl)
        return SimpleNamespace(**{m: _import(impl, m) for m in MODULES}, name=impl)
    if isinstance(impl, dict):
        return SimpleNamespace(**impl)
    return impl


def _import(impl: str, module: str) -> ModuleType:
    from lora_kata.catalog import impl as switch

    if impl in switch.NAMED or Path(impl).is_dir():
        return switch.load(module, impl)
    return importlib.import_module(f"{impl}.{module}")


def _optional_module(modules, module: str) -> ModuleType | None:
    """modules.<module> if present; else imported from the implementation by name (only when
    a flag needs it: a learner's unfinished qlora.py must not break an 8-bit run)."""
    found = getattr(modules, module, None)
    if found is not None:
        return found
    name = getattr(modules, "name", None)
    if not name:
        return None
    try:
        return _import(name, module)
    except ModuleNotFoundError:
        return None


def load_quantized(modules, path: str, quant: str, *, device_map=None, cuda: bool = False):
    """The base model in 8 bits (the tutorial: int8.load_in_8bit) or in 4 bits
    (qlora.load_in_4bit: NF4 with double quantization, as the QLoRA paper)."""
    if quant == "8bit":
        return modules.int8.load_in_8bit(path, device_map=device_map)
    if quant != "4bit":
        raise ValueError(f"--quant must be 8bit or 4bit, got {quant!r}")
    qlora = _optional_module(modules, "qlora")
    loader = getattr(qlora, "load_in_4bit", None)
    if loader is None:
        where = getattr(modules, "name", None) or "this implementation"
        raise PieceMissing(
            f"--quant 4bit needs qlora.load_in_4bit (exercise 12), and {where} has no "
            f"{'qlora.py' if qlora is None else 'load_in_4bit in qlora.py'} yet. Run without "
            "--quant (8-bit, the tutorial's), or do exercise 12 first."
        )
    import torch

    # The matmuls run in compute_dtype: fp16 on CUDA like the loop's fp16 autocast; fp32 on
    # the CPU, where the loop runs fp32 (and fp16 matmuls are slow).
    compute_dtype = torch.float16 if cuda else torch.float32
    return loader(path, double_quant=True, compute_dtype=compute_dtype, device_map=device_map)


def finetune_options(finetune, args) -> dict:
    """The exercise-11 keywords for finetune, only those the flags asked for; PieceMissing
    when the learner's finetune does not take them yet."""
    wanted = {}
    if args.packing:
        wanted["packing"] = True
    if args.max_length is not None:
        wanted["max_length"] = args.max_length
    if not wanted:
        return wanted
    try:
        parameters = inspect.signature(finetune).parameters
    except (TypeError, ValueError):  # a builtin or an odd callable: let the call decide
        return wanted
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return wanted
    missing = [key for key in wanted if key not in parameters]
    if missing:
        flags = ", ".join("--" + key.replace("_", "-") for key in missing)
        raise PieceMissing(
            f"{flags} needs finetune(..., packing=False, max_length=None) from exercise 11, "
            f"and this finetune takes no {', '.join(missing)} yet. Run without {flags}, or "
            "do exercise 11 first."
        )
    return wanted
