"""QLoRA's 4-bit NormalFloat (exercise 12): the NF4 levels, block-wise quantization, the
memory accounting, and loading a model in 4 bits.

QLoRA (Dettmers et al. 2023, arXiv:2305.14314) keeps the frozen base model in 4 bits and trains
LoRA on top in 16/32 bits. NF4 (§3) spends its 16 codes on normal quantiles, because pretrained
weights are roughly normal: every level then gets about the same share of the weights. Each
block of 64 weights is divided by its own absmax first, so one outlier costs only its block.
Lesson: lessons/en/12-qlora-nf4.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# bitsandbytes' outermost probability (create_normal_map's default), = ½(29/30 + 31/32): the
# normal quantile of 1 is infinite, so the largest level is the quantile of a probability just
# short of 1, and every level is then divided by it.
NF4_OFFSET = 0.9677083


def nf4_code() -> torch.Tensor:
    """The 16 NF4 levels, ascending, in [-1, 1], with an exact 0 (float32, shape (16,))."""
    # float64 for the quantiles: the table then matches bitsandbytes' to ~1e-7.
    quantile = torch.special.ndtri
    positive = quantile(torch.linspace(NF4_OFFSET, 0.5, 9, dtype=torch.float64)[:-1])  # 8
    negative = -quantile(torch.linspace(NF4_OFFSET, 0.5, 8, dtype=torch.float64)[:-1])  # 7
    # 8 positive, 7 negative and 0: asymmetric, so that zero (padding, pruned weights, a
    # fresh bias) is stored exactly.
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive])
    levels = levels.sort().values
    return (levels / levels.max()).to(torch.float32)


def _check_blocksize(blocksize: int) -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be an int ≥ 1 (QLoRA uses 64), got {blocksize!r}")


def _block_count(numel: int, blocksize: int) -> int:
    return math.ceil(numel / blocksize)


def quantize_nf4(weight: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax): one uint8 code in [0, 15] per element of weight.flatten(), one float32
    absmax per block of `blocksize` consecutive elements (the last block may be shorter)."""
    _check_blocksize(blocksize)
    if not weight.is_floating_point():
        raise ValueError(
            f"quantize_nf4 needs a floating-point weight, got {weight.dtype}: quantize the "
            "original (fp16/fp32) weights, not already-quantized ones"
        )
    flat = weight.detach().flatten().to(torch.float32)
    n = flat.numel()
    if n == 0:
        raise ValueError("quantize_nf4 got an empty tensor: there is nothing to quantize")
    blocks = _block_count(n, blocksize)
    # Pad the last block with zeros: they do not change its absmax, and are cut off below.
    grid = nn.functional.pad(flat, (0, blocks * blocksize - n)).view(blocks, blocksize)
    absmax = grid.abs().amax(dim=1)
    # A block of zeros has absmax 0: divide by 1 instead, so its codes are the level 0.
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normalised = grid / scale[:, None]
    # Nearest level (ties go to the lower one, as bitsandbytes' bucketize does).
    distance = (normalised[..., None] - nf4_code()).abs()
    codes = distance.argmin(dim=-1).flatten()[:n]
    return codes.to(torch.uint8), absmax


def dequantize_nf4(
    codes: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = 64
) -> torch.Tensor:
    """The weight back, float32, of `shape`: level[code] × its block's absmax."""
    _check_blocksize(blocksize)
    shape = torch.Size(shape)
    n = shape.numel()
    codes = codes.flatten()
    absmax = absmax.flatten().to(torch.float32)
    if codes.numel() != n:
        raise ValueError(
            f"{codes.numel()} codes for shape {tuple(shape)} ({n} elements): pass the shape "
            "of the tensor that was quantized"
        )
    if absmax.numel() != _block_count(n, blocksize):
        raise ValueError(
            f"{absmax.numel()} absmax values for {n} elements in blocks of {blocksize} "
            f"(want {_block_count(n, blocksize)}): same blocksize as quantize_nf4?"
        )
    if codes.is_floating_point() or (codes.numel() and int(codes.max()) > 15):
        raise ValueError("codes must be integers in [0, 15] (indices into nf4_code())")
    values = nf4_code().to(codes.device)[codes.long()]
    scales = absmax.repeat_interleave(blocksize)[:n]
    return (values * scales).reshape(shape)


def bits_per_parameter(
    blocksize: int = 64, *, double_quant: bool = False, dq_blocksize: int = 256
) -> float:
    """The paper's storage cost per quantized weight, in bits.

    4 bits of code plus the block's fp32 absmax shared by `blocksize` weights; with double
    quantization the absmax itself is stored in 8 bits, plus one fp32 scale per
    `dq_blocksize` absmax values.
    """
    _check_blocksize(blocksize)
    if not double_quant:
        return 4 + 32 / blocksize
    _check_blocksize(dq_blocksize)
    return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)


def load_in_4bit(
    name_or_path: str,
    *,
    double_quant: bool = True,
    compute_dtype=torch.float32,
    device_map=None,
) -> nn.Module:
    """A causal LM whose decoder nn.Linear layers are bitsandbytes Linear4bit in NF4."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # the default is "fp4": NF4 must be asked for
        bnb_4bit_use_double_quant=double_quant,
        # The 4-bit weights are dequantized to this dtype for every matmul.
        bnb_4bit_compute_dtype=compute_dtype,
    )
    return AutoModelForCausalLM.from_pretrained(
        name_or_path, quantization_config=config, device_map=device_map
    )
