"""4-bit test helpers: a tiny OPT whose Linear sizes bitsandbytes' CPU 4-bit path accepts, the
kata's own NF4 reference loader, bitsandbytes' NF4 on flattened tensors, and the opt-6.7b
memory table of lesson 12. Nothing here imports transformers or bitsandbytes at import time.

Why hidden 64 and ffn 128 (not exercise 07's 32 and 48): on a CPU with AVX512-BF16, the first
forward of a Linear4bit in eval mode with an input that needs no grad repacks its weight in
place for a faster kernel. The repack reshapes the absmax to (out_features, in_features / 64)
and asserts out_features % 32 == 0, so it fails for in_features < 64; after it, the layer's
weight is no longer the layout that was loaded. Sizes that are multiples of 64 keep the tiny
model loadable and usable everywhere.
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from functools import cache
from pathlib import Path

from lora_kata.testing.int8 import save_tiny_opt_fp16

# Multiples of 64 (one NF4 block) and of 32 (the CPU repack's row block), all distinct.
TINY_4BIT_SIZES = dict(hidden_size=64, ffn_dim=128, word_embed_proj_dim=64)


@cache
def tiny_opt_4bit_dir(seed: int = 0) -> Path:
    """A tiny fp16 OPT (hidden 64, ffn 128) saved once per process (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="lora-kata-tiny-opt-4bit-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_tiny_opt_fp16(root / "opt", seed=seed, with_tokenizer=False, **TINY_4BIT_SIZES)


def nf4_config(double_quant: bool = False, compute_dtype=None):
    """BitsAndBytesConfig for NF4 (bitsandbytes' default 4-bit type is FP4, not NF4)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype or torch.float32,
    )


def load_tiny_opt_in_4bit(directory: str | Path, double_quant: bool = False):
    """The kata's own reference NF4 loader (not the learner's load_in_4bit), on the CPU."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(directory), quantization_config=nf4_config(double_quant)
    )


def linear4bit_module_names(model) -> list[str]:
    """Dotted names of the bitsandbytes Linear4bit modules, in model order."""
    import bitsandbytes as bnb

    return [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]


def four_bit_snapshot(model) -> dict[str, tuple]:
    """Every Linear4bit's packed weight and quantization statistics, cloned, by module name
    (".base" dropped, so names match before and after inject_lora): what must stay
    bit-identical while only LoRA trains."""
    import bitsandbytes as bnb

    snapshot = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            stats = [state.absmax]
            if state.nested:
                stats += [state.state2.absmax, state.offset]
            snapshot[name.removesuffix(".base")] = tuple(
                t.detach().clone() for t in [module.weight.data, *stats]
            )
    return snapshot


def bnb_nf4_flat(weight, blocksize: int = 64):
    """bitsandbytes' NF4 round trip of weight.flatten(): (codes in element order, absmax,
    dequantized values as a flat float32 tensor).

    Flattened on purpose: bitsandbytes 0.50's CPU dequantize of a 2-D tensor treats every row
    as its own run of blocks, which is wrong when a row is not a whole number of blocks (the
    codes and absmax are right, the 2-D dequantize is not). One row avoids it.
    """
    import bitsandbytes.functional as F
    import torch

    flat = weight.detach().flatten().to(torch.float32)
    n = flat.numel()
    # An odd length sends bitsandbytes' CPU dequantize to a torch.compile'd fallback that
    # recompiles for every new length (seconds each). One trailing zero keeps the length even
    # and changes nothing: it cannot raise its block's absmax, and it is cut off again.
    padded = torch.nn.functional.pad(flat, (0, n % 2)).contiguous()
    packed, state = F.quantize_4bit(padded, blocksize=blocksize, quant_type="nf4")
    values = F.dequantize_4bit(packed, state, quant_type="nf4").flatten()[:n]
    packed = packed.flatten()
    # Two codes per byte, the first element in the high nibble.
    codes = torch.stack([packed >> 4, packed & 0xF], dim=1).flatten()[:n]
    return codes, state.absmax, values


# ---------------------------------------------------------------- memory accounting


def quantized_linear_weights(model) -> list[tuple[str, int, int]]:
    """(name, out_features, in_features) of every Linear that bitsandbytes quantizes: all of
    them except lm_head (transformers keeps the output head in 16 bits; in OPT it is tied to
    the input embeddings anyway)."""
    from torch import nn

    return [
        (name, module.out_features, module.in_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name != "lm_head"
    ]


def memory_rows(model, bits_per_parameter) -> list[tuple[str, float, int]]:
    """(format, bits per quantized weight, bytes of the whole model) for fp16, LLM.int8, NF4
    and NF4 with double quantization. Everything that is not a quantized Linear weight
    (embeddings, positions, layer norms, biases) stays 16-bit in every row.

    bits_per_parameter: the function under test (the learner's), called as the API says.
    """
    linears = quantized_linear_weights(model)
    quantized = sum(out * inp for _, out, inp in linears)
    rows_total = sum(out for _, out, _ in linears)
    seen, total = set(), 0
    for param in model.parameters():  # each tied tensor once
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    rest_bytes = 2 * (total - quantized)
    rows = [("fp16", 16.0, 2 * total)]
    # LLM.int8: one byte per weight plus one fp32 scale per output row (bitsandbytes' SCB).
    int8_bytes = quantized + 4 * rows_total
    rows.append(("int8", 8 * int8_bytes / quantized, int8_bytes + rest_bytes))
    for label, double_quant in (("nf4", False), ("nf4+dq", True)):
        bits = bits_per_parameter(64, double_quant=double_quant)
        rows.append((label, bits, math.ceil(bits * quantized / 8) + rest_bytes))
    return rows
