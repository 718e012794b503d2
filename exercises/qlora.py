"""QLoRA's 4-bit NormalFloat (exercise 12): the NF4 levels, block-wise quantization, the
memory accounting, and loading a model in 4 bits.

QLoRA (Dettmers et al. 2023, arXiv:2305.14314) keeps the frozen base model in 4 bits and trains
LoRA on top. A 4-bit code can name 16 values; NF4 chooses them as quantiles of the normal
distribution, because pretrained weights are roughly normal. Weights are quantized in blocks
of 64 consecutive values, each block scaled by its own absmax:

    w  ≈  level[code] × absmax(block of w)          code ∈ {0, ..., 15}

Lesson: lessons/en/12-qlora-nf4.md.
"""

from __future__ import annotations

import math  # noqa: F401  (math.ceil counts the blocks)

import torch
from torch import nn

# bitsandbytes' outermost probability: Φ⁻¹(1) is infinite, so the largest level is the normal
# quantile of this probability (then every level is divided by it).
NF4_OFFSET = 0.9677083


def nf4_code() -> torch.Tensor:
    """The 16 NF4 levels: float32, shape (16,), ascending, from -1 to 1, with an exact 0.

    With Φ⁻¹ the standard normal quantile function (torch.special.ndtri), in float64:
        positive = Φ⁻¹(p) for p in torch.linspace(NF4_OFFSET, 0.5, 9)[:-1]     (8 values)
        negative = −Φ⁻¹(p) for p in torch.linspace(NF4_OFFSET, 0.5, 8)[:-1]    (7 values)
        levels   = sorted(negative ∪ {0} ∪ positive) / max(levels)             (16 values)
    Equal to bitsandbytes' NF4 table to 1e-6 (its stored numbers differ from these by ~2e-7).
    """
    # TODO(12): 8 positive and 7 negative normal quantiles, and 0; sort; divide by the largest.
    raise NotImplementedError("Exercise 12: nf4_code")


def quantize_nf4(weight: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise NF4 quantization of weight.flatten() (n elements): returns (codes, absmax).

    - Blocks: consecutive runs of `blocksize` elements of weight.flatten() (not rows); the last
      block is shorter when n is not a multiple of blocksize: ceil(n / blocksize) blocks.
    - absmax: float32, shape (blocks,): max |w| over each block.
    - codes: uint8, shape (n,): for each element, the index in nf4_code() of the level nearest
      to w / absmax of its block (|w / absmax − level| smallest; a tie may go either way).
    - A block of zeros has absmax 0: its codes are the level 0 (no division by zero, no NaN).
    """
    # TODO(12): absmax per block, divide, pick the nearest level's index for every element.
    raise NotImplementedError("Exercise 12: quantize_nf4")


def dequantize_nf4(
    codes: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = 64
) -> torch.Tensor:
    """The weight back from quantize_nf4's output: float32, of `shape`.

    element i of the flattened result = nf4_code()[codes[i]] × absmax[i // blocksize]
    Equal to bitsandbytes.functional.dequantize_4bit(quant_type="nf4") of the same flattened
    weight to 1e-6 × the block's absmax.
    """
    # TODO(12): look the codes up in nf4_code(), scale each by its block's absmax, reshape.
    raise NotImplementedError("Exercise 12: dequantize_nf4")


def bits_per_parameter(
    blocksize: int = 64, *, double_quant: bool = False, dq_blocksize: int = 256
) -> float:
    """The QLoRA paper's storage cost per quantized weight, in bits.

    Without double quantization: 4 bits of code + one fp32 absmax per block
        4 + 32 / blocksize                                       (64 → 4.5)
    With it, each absmax is stored in 8 bits, plus one fp32 scale per dq_blocksize of them:
        4 + 8 / blocksize + 32 / (blocksize · dq_blocksize)      (64, 256 → ≈ 4.127)
    """
    # TODO(12): the two formulas above.
    raise NotImplementedError("Exercise 12: bits_per_parameter")


def load_in_4bit(
    name_or_path: str,
    *,
    double_quant: bool = True,
    compute_dtype=torch.float32,
    device_map=None,
) -> nn.Module:
    """A causal LM whose decoder nn.Linear layers are bitsandbytes Linear4bit in NF4.

    Import inside the function: from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    Return AutoModelForCausalLM.from_pretrained(name_or_path, with device_map=device_map and
    quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)).
    (bitsandbytes' default 4-bit type is "fp4": NF4 must be asked for.)
    """
    # TODO(12): from_pretrained with a 4-bit NF4 BitsAndBytesConfig, passing device_map on.
    raise NotImplementedError("Exercise 12: load_in_4bit")
