"""Numbers are computed, not typed: each number the kata can compute is checked where it is written.

Each record names a file, a sentence (a fragment with `{}` where the number goes) and the
quantity that number is. The test computes the quantity (opt-6.7b built on the meta device, the
solutions package, the kata's quotes and tokenizer, torch's and bitsandbytes' own constants, or
plain arithmetic from the numbers the text states as inputs), formats it as the text does, and
requires the sentence, whitespace aside, in the file. So a typo, a stale number or a changed
library fails here, naming the file and the sentence. Both languages are covered.

Measured numbers (losses, timings) are not recomputed here, since that would take minutes; what
is derived from them (a ratio, a share of an ideal speed-up) is.

Heavy imports happen inside the cached quantity functions: collecting this file imports nothing
but pytest.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from tests.kata_harness import REPO

GiB, MiB, GB = 2**30, 2**20, 1e9


# ----------------------------------------------------------------------------- quantities


def _tiny_module():
    from lora_kata.models import tiny

    return tiny


@cache
def opt67() -> dict[str, int]:
    """opt-6.7b's counts, from the architecture built on the meta device."""
    import torch

    tiny = _tiny_module()
    model = tiny.build_on_meta(tiny.opt_6_7b_config())
    config = model.config
    linears = [
        m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")
    ]
    quantized = sum(m.weight.numel() for m in linears)
    total = sum(p.numel() for p in model.parameters())
    decoder = model.model.decoder
    embeddings = decoder.embed_tokens.weight.numel() + decoder.embed_positions.weight.numel()
    lora = config.num_hidden_layers * 2 * 16 * (config.hidden_size * 2)
    from solutions.inject import find_target_modules

    return {
        "total": total,
        "hidden": config.hidden_size,
        "layers": config.num_hidden_layers,
        "vocab": config.vocab_size,
        "linears": len(linears),
        "quantized": quantized,
        "rows": sum(m.out_features for m in linears),
        "other": total - quantized,
        "embeddings": embeddings,
        "tied": decoder.embed_tokens.weight.numel(),
        "lora": lora,
        "qv_matches": len(find_target_modules(model, ["q_proj", "v_proj"])),
        "regex_matches": len(find_target_modules(model, r".*layers\.[01]\.self_attn\.q_proj")),
    }


def _memory_gb(row: str) -> float:
    from lora_kata.experiments.memory import activations_bytes

    o = opt67()
    fp16, full = 2 * o["total"], 16 * o["total"]
    int8 = o["quantized"] + 4 * o["rows"] + 2 * o["other"]
    prepared = o["quantized"] + 4 * o["rows"] + 4 * o["other"]
    lora_states = 16 * o["lora"]

    def train(tokens, checkpointing):
        act = activations_bytes(tokens, o["hidden"], o["layers"], o["vocab"], checkpointing)
        return (prepared + lora_states + act) / GB

    return {
        "fp16": fp16 / GB,
        "int8": int8 / GB,
        "prepared": prepared / GB,
        "lora": lora_states / GB,
        "full": full / GB,
        "512 ckpt": train(4 * 512, True),
        "512 no ckpt": train(4 * 512, False),
        "32 ckpt": train(4 * 32, True),
        "32 no ckpt": train(4 * 32, False),
    }[row]


def _nf4_table(fmt: str, column: str) -> float:
    """Lesson 12's storage table: bits per quantized weight, and GiB for the whole model."""
    from solutions.qlora import bits_per_parameter

    o = opt67()
    bits = {
        "fp16": 16.0,
        "int8": 8 + 32 * o["rows"] / o["quantized"],
        "nf4": bits_per_parameter(64),
        "nf4+dq": bits_per_parameter(64, double_quant=True),
    }[fmt]
    if column == "bits":
        return bits
    return (o["quantized"] * bits / 8 + 2 * o["other"]) / GiB


@cache
def nf4() -> list[float]:
    """bitsandbytes' own NF4 table (the solutions' nf4_code() agrees with it to 1e-6)."""
    import bitsandbytes.functional as F

    return sorted(F.get_4bit_type("nf4", device="cpu").tolist())


def _nf4_gaps() -> list[float]:
    levels = nf4()
    return [b - a for a, b in itertools.pairwise(levels)]


@cache
def outlier_row() -> tuple[float, float]:
    """The int8 figure's row (docs/make_figures.py): the step with the outlier, and without."""
    import torch

    row = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 0.5
    row[17] = 20.0
    rest = torch.cat([row[:17], row[18:]])
    return float(row.abs().max() / 127), float(rest.abs().max() / 127)


@cache
def quote_lengths() -> tuple[int, ...]:
    """Token counts of data/quotes.jsonl with the kata's tokenizer, EOS included (lesson 06)."""
    tiny = _tiny_module()
    tokenizer = tiny.quotes_tokenizer()
    eos = tokenizer.eos_token_id
    ids = tokenizer(tiny.quote_texts())["input_ids"]
    return tuple(len(row) + (0 if row and row[-1] == eos else 1) for row in ids)


@cache
def shuffle_order() -> tuple[int, ...]:
    import torch

    n = len(quote_lengths())
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist())


def _waste(lengths, batch_size: int) -> float:
    from solutions.pack import padding_waste

    return padding_waste(list(lengths), batch_size)


def _first_fit_waste(lengths, max_length: int) -> float:
    rows: list[int] = []
    for length in lengths:
        for i, used in enumerate(rows):
            if used + length <= max_length:
                rows[i] += length
                break
        else:
            rows.append(length)
    return 1 - sum(rows) / (len(rows) * max(rows))


def _padding(what: str) -> float:
    lengths = quote_lengths()
    shuffled = [lengths[i] for i in shuffle_order()]
    cut = [min(n, 128) for n in lengths]
    cut_shuffled = [cut[i] for i in shuffle_order()]
    return {
        "shuffled 4": _waste(shuffled, 4),
        "shuffled 8": _waste(shuffled, 8),
        "shuffled 16": _waste(shuffled, 16),
        "sorted 4": _waste(sorted(lengths), 4),
        "sorted 16": _waste(sorted(lengths), 16),
        "128 file 4": _waste(cut, 4),
        "128 shuffled 4": _waste(cut_shuffled, 4),
        "128 shuffled 16": _waste(cut_shuffled, 16),
        "128 packed": _first_fit_waste(cut, 128),
    }[what]


@cache
def adapter_fields() -> int:
    """How many fields the reference's save_adapter writes into adapter_config.json."""
    import json
    import tempfile

    from solutions.adapter import save_adapter
    from solutions.inject import LoRAConfig, inject_lora

    config = LoRAConfig(r=2, lora_alpha=4.0)
    model = inject_lora(_tiny_module().build_tiny_opt(0), config)
    with tempfile.TemporaryDirectory() as directory:
        save_adapter(model, directory, config, base_model_name_or_path="tiny")
        return len(json.loads((Path(directory) / "adapter_config.json").read_text()))


def _peft_fields() -> int:
    from peft import LoraConfig

    return len(LoraConfig().to_dict())


@cache
def demo_base_counts() -> tuple[int, int]:
    """(LoRA r=16 on q, v; all parameters with LoRA) of the capstone's demo base."""
    from transformers import OPTForCausalLM

    from lora_kata.models import demo_base

    config = _tiny_module().tiny_opt_config(**demo_base.SETTINGS)
    import torch

    with torch.device("meta"):
        model = OPTForCausalLM(config)
    lora = config.num_hidden_layers * 2 * 16 * 2 * config.hidden_size
    return lora, sum(p.numel() for p in model.parameters()) + lora


def _tiny_total() -> int:
    return sum(p.numel() for p in _tiny_module().build_tiny_opt(0).parameters())


def _lr(step: int) -> float:
    from solutions.train import linear_warmup_lr

    return linear_warmup_lr(step, base_lr=2e-4, warmup_steps=100, max_steps=200)


def _scaler_default(name: str):
    import inspect

    import torch

    return inspect.signature(torch.amp.GradScaler.__init__).parameters[name].default


def _ideal_printed() -> float:
    return round(1 / (1 - IDEAL_WASTE), 2)


def _pct(part: float, whole: float) -> float:
    return 100 * part / whole


# Plain numbers the text states as inputs (the tutorial's settings, a stated measurement).
R, TUTORIAL_STEPS, WARMUP, BATCH, ACCUM = 16, 200, 100, 4, 4
HUB_QUOTES = 2508  # Abirate/english_quotes on the Hub (lesson 06 says so)
STOCK_LOADED_GIB, STOCK_TOKENS_PER_S = 6.4, 895  # docs/gpu.md's stock H100 table
PACKED_SPEEDUPS, IDEAL_WASTE = (1.47, 1.45), 0.35  # lesson 11's two benchmark runs

Q: dict[str, Callable[[], float]] = {
    # opt-6.7b and the tutorial's LoRA
    "opt total": lambda: opt67()["total"],
    "opt total + lora": lambda: opt67()["total"] + opt67()["lora"],
    "lora": lambda: opt67()["lora"],
    "lora per module": lambda: R * 2 * opt67()["hidden"],
    "lora per layer": lambda: 2 * R * 2 * opt67()["hidden"],
    "trainable% repr": lambda: 100 * opt67()["lora"] / (opt67()["total"] + opt67()["lora"]),
    "tied": lambda: opt67()["tied"],
    "twice bare": lambda: opt67()["total"] + opt67()["tied"],
    "twice wrapped": lambda: opt67()["total"] + opt67()["lora"] + opt67()["tied"],
    "q_proj weight": lambda: opt67()["hidden"] ** 2,
    "q_proj A": lambda: R * opt67()["hidden"],
    "q_proj lora": lambda: 2 * R * opt67()["hidden"],
    "q_proj lora %": lambda: _pct(2 * R * opt67()["hidden"], opt67()["hidden"] ** 2),
    "dense/lora cost": lambda: opt67()["hidden"] ** 2 / (R * 2 * opt67()["hidden"]),
    "qv matches": lambda: opt67()["qv_matches"],
    "regex matches": lambda: opt67()["regex_matches"],
    "vocab": lambda: opt67()["vocab"],
    "linears": lambda: opt67()["linears"],
    "quantized": lambda: opt67()["quantized"],
    "other": lambda: opt67()["other"],
    "fp16 GiB": lambda: 2 * opt67()["total"] / GiB,
    "int8 GiB, no scales": lambda: (opt67()["quantized"] + 2 * opt67()["other"]) / GiB,
    "lora MiB fp32": lambda: 4 * opt67()["lora"] / MiB,
    "lora MiB adam": lambda: 16 * opt67()["lora"] / MiB,
    "lora M": lambda: opt67()["lora"] / 1e6,
    "adapter tensors": lambda: opt67()["layers"] * 2 * 2,
    "embeddings to fp32 GiB": lambda: 2 * opt67()["embeddings"] / GiB,
    "fp16 GB": lambda: _memory_gb("fp16"),
    "int8 GB": lambda: _memory_gb("int8"),
    "prepared GB": lambda: _memory_gb("prepared"),
    "lora states GB": lambda: _memory_gb("lora"),
    "full adam GB": lambda: _memory_gb("full"),
    "full / fp16": lambda: _memory_gb("full") / _memory_gb("fp16"),
    "act 512 ckpt": lambda: _memory_gb("512 ckpt"),
    "act 512 no ckpt": lambda: _memory_gb("512 no ckpt"),
    "act 32 ckpt": lambda: _memory_gb("32 ckpt"),
    "act 32 no ckpt": lambda: _memory_gb("32 no ckpt"),
    # LoRA paper, Table 5's budget: GPT-3 175B, d_model 12288, 96 layers
    "table5 budget": lambda: 96 * 1 * 8 * (12288 + 12288),
    "table5 budget 2": lambda: 96 * 2 * 4 * (12288 + 12288),
    "table5 budget 4": lambda: 96 * 4 * 2 * (12288 + 12288),
    # scaling
    "alpha/r 16 32": lambda: 32 / 16,
    "alpha/sqrt r 16 32": lambda: 32 / 16**0.5,
    "alpha/sqrt r 4 8": lambda: 8 / 4**0.5,
    "alpha/r 64 16": lambda: 16 / 64,
    "alpha/sqrt r 64 16": lambda: 16 / 64**0.5,
    "r/alpha": lambda: 16 / 32,
    "rslora gain at 1024": lambda: 2.0e-4 / 8.0e-6,
    # experiment 01: W0 96 × 80
    "rank sweep full": lambda: 96 * 80,
    "rank sweep r1": lambda: 1 * (96 + 80),
    "rank sweep r1 %": lambda: _pct(96 + 80, 96 * 80),
    "rank sweep r4": lambda: 4 * (96 + 80),
    "rank sweep r64": lambda: 64 * (96 + 80),
    # int8 figure and merge
    "outlier step": lambda: outlier_row()[0],
    "half outlier step": lambda: outlier_row()[0] / 2,
    "rest step": lambda: outlier_row()[1],
    "int8 levels": lambda: 2 * 127 + 1,
    "int8 steps": lambda: 2 * 127,
    "lora work 1024 r8": lambda: _pct(8 * (1024 + 1024), 1024 * 1024),
    "lora work 1024-4096 r16": lambda: _pct(16 * (1024 + 4096), 1024 * 4096),
    "lora work 4096-1024 r64": lambda: _pct(64 * (4096 + 1024), 4096 * 1024),
    # quotes and padding
    "quotes": lambda: len(quote_lengths()),
    "mean tokens": lambda: sum(quote_lengths()) / len(quote_lengths()),
    "longest": lambda: max(quote_lengths()),
    "waste 4 %": lambda: 100 * _padding("shuffled 4"),
    "waste 8 %": lambda: 100 * _padding("shuffled 8"),
    "waste 16 %": lambda: 100 * _padding("shuffled 16"),
    "sorted 4 %": lambda: 100 * _padding("sorted 4"),
    "sorted 16 %": lambda: 100 * _padding("sorted 16"),
    "128 file 4": lambda: _padding("128 file 4"),
    "128 shuffled 4": lambda: _padding("128 shuffled 4"),
    "128 shuffled 16": lambda: _padding("128 shuffled 16"),
    "128 packed": lambda: _padding("128 packed"),
    "worked waste": lambda: _waste([3, 5, 2, 2], 2),
    "ideal speed-up, 0.35": lambda: 1 / (1 - IDEAL_WASTE),
    "share of ideal 1": lambda: 100 * PACKED_SPEEDUPS[0] * (1 - IDEAL_WASTE),
    "share of ideal 2": lambda: 100 * PACKED_SPEEDUPS[1] * (1 - IDEAL_WASTE),
    # the text divides by the ideal speed-up as it prints it, 1.54
    "time recovered 1": lambda: 100 * (PACKED_SPEEDUPS[0] - 1) / (_ideal_printed() - 1),
    "time recovered 2": lambda: 100 * (PACKED_SPEEDUPS[1] - 1) / (_ideal_printed() - 1),
    # training
    "per step": lambda: BATCH * ACCUM,
    "sequences": lambda: TUTORIAL_STEPS * BATCH * ACCUM,
    "passes": lambda: TUTORIAL_STEPS * BATCH * ACCUM / HUB_QUOTES,
    "warmup per micro-batch": lambda: WARMUP / ACCUM,
    "lr 50": lambda: _lr(50),
    "lr 100": lambda: _lr(100),
    "lr 150": lambda: _lr(150),
    "lr 200": lambda: _lr(200),
    "scaler init": lambda: _scaler_default("init_scale"),
    "scaler interval": lambda: _scaler_default("growth_interval"),
    # adapter files
    "adapter fields": adapter_fields,
    "peft fields": _peft_fields,
    # capstone demo base
    "demo lora": lambda: demo_base_counts()[0],
    "demo lora %": lambda: _pct(*demo_base_counts()),
    "demo 万": lambda: 10 * round((demo_base_counts()[1] - demo_base_counts()[0]) / 1e5),
    "demo M": lambda: (demo_base_counts()[1] - demo_base_counts()[0]) / 1e6,
    # measured: a run of `python -m solutions.finetune` on the shipped demo base (lesson 10)
    "held-out before": lambda: 5.6201,
    "held-out after": lambda: 4.3701,
    "held-out first after %": lambda: 91.4,
    "held-out eos before %": lambda: 0.2,
    "held-out eos after %": lambda: 91.0,
    "demo base fp16 MB": lambda: (REPO / "data/demo-base/model.safetensors").stat().st_size / 1e6,
    # the catalogue's per-test limits (the READMEs' example is exercise 03's)
    "03 timeout s": lambda: _timeout("03"),
    "01-05 shortest timeout s": lambda: min(_timeout(f"0{i}") for i in range(1, 6)),
    "01-05 longest timeout s": lambda: max(_timeout(f"0{i}") for i in range(1, 6)),
    # NF4
    "nf4 levels": lambda: ", ".join(f"{v:g}" if v in (-1, 0, 1) else f"{v:.4f}" for v in nf4()),
    "nf4 largest gap": lambda: max(_nf4_gaps()),
    "nf4 bound": lambda: max(_nf4_gaps()) / 2,
    "nf4 bound near 0": lambda: min(_nf4_gaps()) / 2,
    "nf4 smallest gap": lambda: min(_nf4_gaps()),
    "nf4 offset": lambda: (29 / 30 + 31 / 32) / 2,
    "absmax bits": lambda: 32 / 64,
    "nf4 bits": lambda: _nf4_table("nf4", "bits"),
    "nf4 dq bits": lambda: _nf4_table("nf4+dq", "bits"),
    "dq saving": lambda: _nf4_table("nf4", "bits") - _nf4_table("nf4+dq", "bits"),
    "int8 bits": lambda: _nf4_table("int8", "bits"),
    "fp16 GiB table": lambda: _nf4_table("fp16", "GiB"),
    "int8 GiB table": lambda: _nf4_table("int8", "GiB"),
    "nf4 GiB table": lambda: _nf4_table("nf4", "GiB"),
    "nf4 dq GiB table": lambda: _nf4_table("nf4+dq", "GiB"),
    # prompt and prefix tuning, 20 virtual tokens on opt-6.7b
    "prompt count": lambda: 20 * opt67()["hidden"],
    "prefix count": lambda: 20 * 2 * opt67()["layers"] * opt67()["hidden"],
    "prompt %": lambda: _pct(20 * opt67()["hidden"], opt67()["total"] + 20 * opt67()["hidden"]),
    "prefix %": lambda: _pct(
        20 * 2 * opt67()["layers"] * opt67()["hidden"],
        opt67()["total"] + 20 * 2 * opt67()["layers"] * opt67()["hidden"],
    ),
    "lora %": lambda: _pct(opt67()["lora"], opt67()["total"] + opt67()["lora"]),
    "lora / prefix": lambda: opt67()["lora"] / (20 * 2 * opt67()["layers"] * opt67()["hidden"]),
    "lora / prompt": lambda: opt67()["lora"] / (20 * opt67()["hidden"]),
    "tiny total": _tiny_total,
    # docs/gpu.md
    "peak bound GiB": lambda: 1.6 * STOCK_LOADED_GIB + 1,
    "seconds per step": lambda: BATCH * ACCUM * 64 / STOCK_TOKENS_PER_S,
    "minutes for 200": lambda: TUTORIAL_STEPS * BATCH * ACCUM * 64 / STOCK_TOKENS_PER_S / 60,
    "8 gpus quotes": lambda: 2 * 8,
    "16 ranks quotes": lambda: 16 * 1,
}

WORDS = {8: "eight", 12: "twelve", 40: "forty"}
WORDS_ZH = {8: "八", 12: "十二", 25: "二十五", 40: "四十"}

# (file, sentence with {} for the number, quantity, format spec). A format spec "w" writes a
# whole number as an English word, "wz" as a Chinese one; "r" is Python's repr.
L = "lessons/{}/"
EN, ZH = "lessons/en/", "lessons/zh/"
L01, L02, L03 = "01-lora-layer.md", "02-forward-and-scaling.md", "03-counting-parameters.md"
L04, L05, L06 = "04-injecting-lora.md", "05-merge-unmerge.md", "06-quotes-data.md"
L07, L08, L09 = "07-int8-preparation.md", "08-training-step.md", "09-adapter-files.md"
L10, L11, L12 = "10-capstone.md", "11-packing.md", "12-qlora-nf4.md"
L13, GPU = "13-prompt-tuning.md", "docs/gpu.md"

RECORDS: list[tuple[str, str, str, str]] = [
    # 01
    (EN + L01, "16 bytes per weight, {} GB before any activation", "full adam GB", ".1f"),
    (ZH + L01, "还没算激活值就是 {} GB", "full adam GB", ".1f"),
    *[
        (lang + L01, text, q, ",")
        for lang in (EN, ZH)
        for text, q in [
            ("W0: 4096 × 4096 = {}", "q_proj weight"),
            ("A : 16 × 4096 = {}", "q_proj A"),
            ("B : 4096 × 16 = {}", "q_proj A"),
        ]
    ],
    (EN + L01, "→ {} trainable,", "q_proj lora", ","),
    (EN + L01, "trainable, {} % of W0", "q_proj lora %", ".2f"),
    (ZH + L01, "可训练参数 {}，", "q_proj lora", ","),
    (ZH + L01, "是 W0 的 {} %", "q_proj lora %", ".2f"),
    (EN + L01, "r = 1 trains {} numbers", "rank sweep r1", ","),
    (EN + L01, "{} % of the 7,680", "rank sweep r1 %", ".1f"),
    (EN + L01, "of the {} in a full 96 × 80 ΔW", "rank sweep full", ","),
    (EN + L01, "r = 4 ({} numbers)", "rank sweep r4", ","),
    (EN + L01, "r = 64 trains {} numbers", "rank sweep r64", ","),
    (ZH + L01, "r = 1 只训练 {} 个数", "rank sweep r1", ","),
    (ZH + L01, "ΔW（{} 个数）", "rank sweep full", ","),
    (ZH + L01, "个数）的 {} %", "rank sweep r1 %", ".1f"),
    (ZH + L01, "r = 4（{} 个数）", "rank sweep r4", ","),
    (ZH + L01, "r = 64 要训练 {} 个数", "rank sweep r64", ","),
    # 02
    (EN + L02, "which is {} times more at r = 16", "dense/lora cost", ".0f"),
    (ZH + L02, "是前者的 {} 倍", "dense/lora cost", ".0f"),
    *[
        (lang + L02, text, q, spec)
        for lang in (EN, ZH)
        for text, q, spec in [
            ("| 16 | 32 | {} |", "alpha/r 16 32", ".1f"),
            ("| 16 | 32 | 2.0 | {} |", "alpha/sqrt r 16 32", ".1f"),
            ("| 4 | 8 | 2.0 | {} |", "alpha/sqrt r 4 8", ".1f"),
            ("| 64 | 16 | {} |", "alpha/r 64 16", ".2f"),
            ("| 64 | 16 | 0.25 | {} |", "alpha/sqrt r 64 16", ".1f"),
        ]
    ],
    (EN + L02, "r/α gives {} instead of 2.0", "r/alpha", ".1f"),
    (ZH + L02, "r/α：教程的配置下得到 {} 而不是 2.0", "r/alpha", ".1f"),
    (EN + L02, "the loss is {} times lower than with α/r", "rslora gain at 1024", ".0f"),
    # 03
    *[
        (lang + L03, text, q, spec)
        for lang in (EN, ZH)
        for text, q, spec in [
            ("16 × (4096 + 4096) = {}", "lora per module", ","),
            ("= {} ", "lora per layer", ","),
            ("= {} ", "lora", ","),
            ("6,658,473,984（opt-6.7b）+ 8,388,608（LoRA）= {}", "opt total + lora", ",")
            if lang == ZH
            else ("6,658,473,984 (opt-6.7b) + 8,388,608 (LoRA) = {}", "opt total + lora", ","),
            ("100 × 8388608 / 6666862592 = {}", "trainable% repr", "r"),
            ("50272 × 4096 = {}", "tied", ","),
            ("96 × 1 × 8 × (12288 + 12288) = {}", "table5 budget", ","),
            ("96 × 2 × 4 × (12288 + 12288) = {}", "table5 budget 2", ","),
            ("96 × 4 × 2 × (12288 + 12288) = {}", "table5 budget 4", ","),
            ("| {} |", "fp16 GB", ".1f"),
            ("| {} |", "int8 GB", ".1f"),
            ("| {} |", "prepared GB", ".1f"),
            ("| {} |", "lora states GB", ".2f"),
            ("| {} |", "full adam GB", ".1f"),
        ]
    ],
    (EN + L03, "all params {}", "opt total", ","),
    (ZH + L03, "全部参数 {}", "opt total", ","),
    (EN + L03, "Counting it twice gives {} for the bare model", "twice bare", ","),
    (EN + L03, "({} once LoRA is in)", "twice wrapped", ","),
    (ZH + L03, "算两次会得到 {}（裸模型", "twice bare", ","),
    (ZH + L03, "加上 LoRA 后是 {}）", "twice wrapped", ","),
    (EN + L03, "Only {} % of the weights train", "lora %", ".3f"),
    (ZH + L03, "只有 {} % 的权重参与训练", "lora %", ".3f"),
    (EN + L03, "fp16 weights (the checkpoint) | {} |", "fp16 GB", ".1f"),
    (ZH + L03, "fp16 权重（检查点文件） | {} |", "fp16 GB", ".1f"),
    (EN + L03, "fp32 scale per row, fp16 rest | {} |", "int8 GB", ".1f"),
    (ZH + L03, "每行一个 fp32 缩放值、其余 fp16 | {} |", "int8 GB", ".1f"),
    (EN + L03, "(the non-int8 rest in fp32) | {} |", "prepared GB", ".1f"),
    (ZH + L03, "（非 int8 的部分转成 fp32） | {} |", "prepared GB", ".1f"),
    (EN + L03, "Adam's two moments) | {} |", "lora states GB", ".2f"),
    (ZH + L03, "Adam 的两个动量） | {} |", "lora states GB", ".2f"),
    (EN + L03, "Adam, 16 bytes per parameter | {} |", "full adam GB", ".1f"),
    (ZH + L03, "用 Adam 全量微调，每个参数 16 字节 | {} |", "full adam GB", ".1f"),
    (EN + L03, "8,388,608 values × 16 bytes", "lora", ","),
    (EN + L03, "Full fine-tuning needs {} times the fp16 checkpoint", "full / fp16", "w"),
    (ZH + L03, "全量微调需要 fp16 检查点的{}倍", "full / fp16", "wz"),
    (EN + L03, "it is about {} GB with gradient checkpointing", "act 512 ckpt", ".1f"),
    (EN + L03, "and {} GB without,", "act 512 no ckpt", ".1f"),
    (EN + L03, "32 tokens it is {} / 8.1 GB", "act 32 ckpt", ".1f"),
    (EN + L03, "32 tokens it is 7.6 / {} GB", "act 32 no ckpt", ".1f"),
    (ZH + L03, "开梯度检查点约 {} GB", "act 512 ckpt", ".1f"),
    (ZH + L03, "不开约 {} GB", "act 512 no ckpt", ".1f"),
    (ZH + L03, "每行 32 个 token 时则是 {} / 8.1 GB", "act 32 ckpt", ".1f"),
    (ZH + L03, "每行 32 个 token 时则是 7.6 / {} GB", "act 32 no ckpt", ".1f"),
    # 04
    (EN + L04, '| `["q_proj", "v_proj"]` | {} modules (32 layers × 2) |', "qv matches", "d"),
    (ZH + L04, '| `["q_proj", "v_proj"]` | {} 个模块（32 层 × 2） |', "qv matches", "d"),
    (EN + L04, r'| `r".*layers\.[01]\.self_attn\.q_proj"` | {} modules', "regex matches", "d"),
    (ZH + L04, r'| `r".*layers\.[01]\.self_attn\.q_proj"` | {} 个模块', "regex matches", "d"),
    # 05
    (EN + L05, "one outlier of 20 makes the step {}", "outlier step", ".3f"),
    (ZH + L05, "一个大小为 20 的离群值把步长拉到 {}", "outlier step", ".3f"),
    (EN + L05, "larger than about {} there", "half outlier step", ".2f"),
    (ZH + L05, "ΔW 的元素要大于约 {}", "half outlier step", ".2f"),
    (EN + L05, "{} % for 1024→1024 at r = 8", "lora work 1024 r8", ".1f"),
    (EN + L05, "{} % for 1024→4096 at r = 16", "lora work 1024-4096 r16", ".1f"),
    (EN + L05, "{} % for 4096→1024 at r = 64", "lora work 4096-1024 r64", ".1f"),
    (ZH + L05, "1024→1024、r = 8 时多 {} %", "lora work 1024 r8", ".1f"),
    (ZH + L05, "1024→4096、r = 16 时多 {} %", "lora work 1024-4096 r16", ".1f"),
    (ZH + L05, "4096→1024、r = 64 时多 {} %", "lora work 4096-1024 r64", ".1f"),
    # 06
    (EN + L06, "It tokenizes the kata's {} quotes", "quotes", "d"),
    (EN + L06, "({} tokens on average with the EOS", "mean tokens", ".0f"),
    (EN + L06, "the longest {})", "longest", "d"),
    (EN + L06, "At the tutorial's batch of 4, {} % of the tokens", "waste 4 %", ".0f"),
    (EN + L06, "At 8 it is {} %", "waste 8 %", ".0f"),
    (EN + L06, "at 16 {} %", "waste 16 %", ".0f"),
    (EN + L06, "the waste drops to {} % at batch 4", "sorted 4 %", ".1f"),
    (EN + L06, "({} % at 16)", "sorted 16 %", ".1f"),
    (ZH + L06, "给 kata 的 {} 条名言分词", "quotes", "d"),
    (ZH + L06, "加上 EOS 后平均 {} 个 token", "mean tokens", ".0f"),
    (ZH + L06, "最长 {}）", "longest", "d"),
    (ZH + L06, "打乱后的微批次里 {} % 的 token 是填充", "waste 4 %", ".0f"),
    (ZH + L06, "批大小 8 时是 {} %", "waste 8 %", ".0f"),
    (ZH + L06, "16 时是 {} %", "waste 16 %", ".0f"),
    (ZH + L06, "批大小 4 时浪费降到 {} %", "sorted 4 %", ".1f"),
    (ZH + L06, "（16 时 {} %）", "sorted 16 %", ".1f"),
    # 07
    (EN + L07, "opt-6.7b's weights alone take about {} GiB", "fp16 GiB", ".1f"),
    (ZH + L07, "opt-6.7b 光是权重就约占 {} GiB", "fp16 GiB", ".1f"),
    (EN + L07, "That brings the model down to about {} GiB", "int8 GiB, no scales", ".1f"),
    (ZH + L07, "模型因此降到约 {} GiB", "int8 GiB, no scales", ".1f"),
    (EN + L07, "memory, opt-6.7b ({} parameters)", "opt total", ","),
    (ZH + L07, "显存，opt-6.7b（{} 个参数）", "opt total", ","),
    *[
        (lang + L07, text, q, spec)
        for lang in (EN, ZH)
        for text, q, spec in [
            ("≈ {} GiB", "fp16 GiB", ".1f"),
            ("≈ {} GiB", "int8 GiB, no scales", ".1f"),
            ("int8 : {} ", "quantized", ","),
            ("+ {} ", "other", ","),
        ]
    ],
    (EN + L07, "maps a row onto {} levels", "int8 levels", "d"),
    (EN + L07, "so {} steps of size absmax/127", "int8 steps", "d"),
    (ZH + L07, "把一行映射到 {} 个取值", "int8 levels", "d"),
    (ZH + L07, "也就是 {} 个宽 absmax/127 的台阶", "int8 steps", "d"),
    (EN + L07, "makes the step {}, and the ordinary values", "outlier step", ".3f"),
    (EN + L07, "rounded to within ±{} (the blue dots)", "half outlier step", ".2f"),
    (EN + L07, "the step for the rest shrinks to {}:", "rest step", ".4f"),
    (EN + L07, "about {} times less rounding error", "outlier step / rest", "w"),
    (ZH + L07, "步长就被拉到 {}，", "outlier step", ".3f"),
    (ZH + L07, "舍入到 ±{} 的误差以内", "half outlier step", ".2f"),
    (ZH + L07, "其余值的步长就缩小到 {}，", "rest step", ".4f"),
    (ZH + L07, "舍入误差大约小了{}倍", "outlier step / rest", "wz"),
    (EN + L07, "with the step set by the whole row ({})", "outlier step", ".3f"),
    (EN + L07, "with the outlier kept aside ({})", "rest step", ".4f"),
    (ZH + L07, "步长由整行决定时（{}）", "outlier step", ".3f"),
    (ZH + L07, "把离群值单独拿出来时（{}）", "rest step", ".4f"),
    (EN + L07, "Logits over a {}-token vocabulary", "vocab", ","),
    (ZH + L07, "5 万多（{}）词表上的 logits", "vocab", ","),
    (EN + L07, "cross-entropy over\n{} tokens", "vocab", ","),
    (ZH + L07, "让 {} 个 token 上的 softmax", "vocab", ","),
    # 08
    (EN + L08, "The effective batch is 4 × 4 = {}.", "per step", "d"),
    (EN + L08, "Over 200 steps that is {} sequences", "sequences", ","),
    (EN + L08, "about {} passes over english_quotes' 2,508 quotes", "passes", ".1f"),
    (
        EN + L08,
        "warmup is over after {} optimizer steps instead of 100",
        "warmup per micro-batch",
        ".0f",
    ),
    (EN + L08, "lr(50) = {}", "lr 50", ".0e"),
    (EN + L08, "lr(100) = {}", "lr 100", ".0e"),
    (EN + L08, "lr(150) = {}", "lr 150", ".0e"),
    (EN + L08, "lr(200) = {}", "lr 200", "g"),
    (EN + L08, "The scale starts at {} and only doubles", "scaler init", ",.0f"),
    (EN + L08, "doubles after {} steps without an inf", "scaler interval", ","),
    (EN + L08, "they are up to {} times too big", "scaler init", ",.0f"),
    (ZH + L08, "缩放倍数从 {} 起步", "scaler init", ",.0f"),
    (ZH + L08, "要连续 {} 步没有出现 inf 才翻倍", "scaler interval", ","),
    (ZH + L08, "梯度最多大 {} 倍", "scaler init", ",.0f"),
    # 09
    (EN + L09, "8,388,608 fp32 values,\nor **{} MiB**", "lora MiB fp32", ".0f"),
    (ZH + L09, "只有 8,388,608 个 fp32 值，即 **{} MiB**", "lora MiB fp32", ".0f"),
    (EN + L09, "against about **{} GB** for the fp16 model", "fp16 GB", ".0f"),
    (ZH + L09, "而 fp16 的模型约 **{} GB**", "fp16 GB", ".0f"),
    (EN + L09, "holds the {} fields the kata writes", "adapter fields", "w"),
    (EN + L09, "(32 layers × 2 modules × 2 = {} tensors)", "adapter tensors", "d"),
    (EN + L09, "(peft writes about {})", "peft fields round", "w"),
    (ZH + L09, "kata 写入的{}个字段", "adapter fields", "wz"),
    (ZH + L09, "peft 会写{}个左右", "peft fields round", "wz"),
    (ZH + L09, "32 层 × 2 个模块 × 2 = {} 个张量", "adapter tensors", "d"),
    (ZH + L08, "有效批大小是 4 × 4 = {}。", "per step", "d"),
    (ZH + L08, "200 步共 {} 条序列", "sequences", ","),
    (ZH + L08, "2,508 条名言的 {} 遍", "passes", ".1f"),
    (ZH + L08, "预热在第 {} 个优化器步就结束了", "warmup per micro-batch", ".0f"),
    (ZH + L08, "lr(50) = {}", "lr 50", ".0e"),
    (ZH + L08, "lr(100) = {}", "lr 100", ".0e"),
    (ZH + L08, "lr(150) = {}", "lr 150", ".0e"),
    (ZH + L08, "lr(200) = {}", "lr 200", "g"),
    (ZH + L02, "损失只有 α/r 下的{}分之一", "rslora gain at 1024", "wz"),
    (ZH + L10, "4 层、约 {} 万个参数", "demo 万", "d"),
    (ZH + L11, "waste 2/14 ≈ {}", "worked waste", ".2f"),
    (ZH + L11, "1 / (1 − 0.35) ≈ {} 倍", "ideal speed-up, 0.35", ".1f"),
    (ZH + L12, "它等于 ½(29/30 + 31/32)", "nf4 offset", "ok"),
    (ZH + L12, "linspace({}, 0.5, 9)", "nf4 offset", ".7f"),
    (ZH + L12, "每个权重多花 32/64 = {} 位", "absmax bits", ".1f"),
    # 10
    (EN + L10, "32 layers × 2 modules × 16 × (4096 + 4096) = {}", "lora", ","),
    (EN + L10, "6,658,473,984 + 8,388,608 = {}", "opt total + lora", ","),
    (EN + L10, "4 × 4 = {} sequences", "per step", "d"),
    (EN + L10, "200 steps × 16 = {} sequences", "sequences", ","),
    (EN + L10, "8,388,608 × 4 bytes = {} MiB", "lora MiB fp32", ".0f"),
    (ZH + L10, "32 层 × 2 个模块 × 16 × (4096 + 4096) = {}", "lora", ","),
    (ZH + L10, "6,658,473,984 + 8,388,608 = {}", "opt total + lora", ","),
    (ZH + L10, "4 × 4 = {} 条序列", "per step", "d"),
    (ZH + L10, "200 步 × 16 = {} 条序列", "sequences", ","),
    (ZH + L10, "8,388,608 × 4 字节 = {} MiB", "lora MiB fp32", ".0f"),
    (EN + L10, "({} trainable parameters,", "demo lora", ","),
    (EN + L10, "trainable parameters, {} %)", "demo lora %", ".1f"),
    (ZH + L10, "（可训练参数 {} 个，", "demo lora", ","),
    (ZH + L10, "占 {} %）", "demo lora %", ".1f"),
    (EN + L10, "4 layers, about {} M parameters)", "demo M", ".1f"),
    (EN + L10, "(5.62 → {})", "held-out after", ".2f"),
    (EN + L10, "The held-out loss falls** ({} → 4.37)", "held-out before", ".2f"),
    (ZH + L10, "（{} → 4.37）", "held-out before", ".2f"),
    (ZH + L10, "（5.62 → {}）", "held-out after", ".2f"),
    (EN + L10, "held-out loss (27 quotes never trained on): {} before", "held-out before", ".4f"),
    (ZH + L10, "held-out loss (27 quotes never trained on): {} before", "held-out before", ".4f"),
    (EN + L10, "from 0.0 % to {} %;", "held-out first after %", ".1f"),
    (ZH + L10, "从 0.0 % 升到 {} %；", "held-out first after %", ".1f"),
    (EN + L10, "goes from {} % to 91.0 %", "held-out eos before %", ".1f"),
    (EN + L10, "goes from 0.2 % to {} %", "held-out eos after %", ".1f"),
    (ZH + L10, "从 {} % 升到 91.0 %", "held-out eos before %", ".1f"),
    (ZH + L10, "从 0.2 % 升到 {} %", "held-out eos after %", ".1f"),
    (EN + L10, "0.0% →  {}%", "held-out first after %", ".1f"),
    (EN + L10, "(`data/demo-base/`, {} MB in fp16)", "demo base fp16 MB", ".1f"),
    (ZH + L10, "（`data/demo-base/`，fp16 下 {} MB）", "demo base fp16 MB", ".1f"),
    # READMEs and docs/instructors.md
    ("README.md", "whose weights ship in `data/demo-base/` ({} MB)", "demo base fp16 MB", ".1f"),
    ("README.zh-CN.md", "附带在 `data/demo-base/`（{} MB）", "demo base fp16 MB", ".1f"),
    ("README.md", 'stops with "stopped after {} s … in lora_parameter_count"', "03 timeout s", "g"),
    ("README.zh-CN.md", "以“运行超过 {} 秒被终止：", "03 timeout s", "g"),
    ("docs/instructors.md", "sized to the exercise: {}–", "01-05 shortest timeout s", "g"),
    ("docs/instructors.md", "–{} s for 01–05", "01-05 longest timeout s", "g"),
    # 11
    *[
        (lang + L11, text, q, spec)
        for lang in (EN, ZH)
        for text, q, spec in [
            ("| {} |", "128 file 4", ".3f"),
            ("| {} |", "128 shuffled 4", ".3f"),
            ("| {} |", "128 shuffled 16", ".3f"),
            ("| {} |", "128 packed", ".3f"),
            ("(1.47 − 1) / (1.54 − 1) = {} %", "time recovered 1", ".0f"),
        ]
    ],
    (EN + L11, "waste 2/14 ≈ {}", "worked waste", ".2f"),
    (EN + L11, "batches of 4, file order | {} |", "128 file 4", ".3f"),
    (EN + L11, "batches of 4, shuffled (seed 0) | {} |", "128 shuffled 4", ".3f"),
    (EN + L11, "batches of 16, shuffled | {} |", "128 shuffled 16", ".3f"),
    (EN + L11, "packed into rows of 128 (first fit, file order) | {} |", "128 packed", ".3f"),
    (ZH + L11, "打包进 128 长的行（首次适应，文件顺序） | {} |", "128 packed", ".3f"),
    (EN + L11, "1 / (1 − 0.35) ≈ {}×", "ideal speed-up, 0.35", ".1f"),
    (EN + L11, "the ideal\nspeed-up is {}×", "ideal speed-up, 0.35", ".2f"),
    (EN + L11, "1.47× and 1.45×: {} % and 94 %", "share of ideal 1", ".0f"),
    (EN + L11, "1.47× and 1.45×: 96 % and {} %", "share of ideal 2", ".0f"),
    (EN + L11, "= 87 % and {} % of what padding wasted", "time recovered 2", ".0f"),
    (ZH + L11, "理想加速比 {}×", "ideal speed-up, 0.35", ".2f"),
    (ZH + L11, "达到理想加速比的\n{} % 和 94 %", "share of ideal 1", ".0f"),
    (ZH + L11, "达到理想加速比的\n96 % 和 {} %", "share of ideal 2", ".0f"),
    (ZH + L11, "= 87 % 和 {} %", "time recovered 2", ".0f"),
    # 12
    (EN + L12, "= [{}]", "nf4 levels", "s"),
    (ZH + L12, "= [{}]", "nf4 levels", "s"),
    *[
        (lang + L12, text, q, spec)
        for lang in (EN, ZH)
        for text, q, spec in [
            ("· absmax_b = {} · absmax_b", "nf4 bound", ".3f"),
            ("−1 到 −0.6962：{}" if lang == ZH else "−1 to −0.6962: {}", "nf4 largest gap", ".4f"),
            ("½ · {} · absmax_b", "nf4 smallest gap", ".4f"),
            ("= {} · absmax_b）" if lang == ZH else "= {} · absmax_b)", "nf4 bound near 0", ".4f"),
            ("4 + 32/64 = {} ", "nf4 bits", ".1f"),
            ("4 + 8/64 + 32/(64·256) ≈ {} ", "nf4 dq bits", ".3f"),
            ("每个权重省 {} 位" if lang == ZH else "saves {} bits per weight", "dq saving", ".3f"),
            ("| fp16 | 16 | {} |", "fp16 GiB table", ".2f"),
            ("| int8 | {} |", "int8 bits", ".3f"),
            ("| int8 | 8.006 | {} |", "int8 GiB table", ".2f"),
            ("| nf4 | 4.5 | {} |", "nf4 GiB table", ".2f"),
            ("| nf4+dq | {} |", "nf4 dq bits", ".3f"),
            ("| nf4+dq | 4.127 | {} |", "nf4 dq GiB table", ".2f"),
            ("{} 个 `Linear`" if lang == ZH else "{} `Linear` weights", "linears", "d"),
            ("（{} 个参数）" if lang == ZH else "({} parameters)", "quantized", ","),
            ("其余 {} 个参数" if lang == ZH else "The other {} parameters", "other", ","),
        ]
    ],
    (EN + L12, "The value is ½(29/30 + 31/32)", "nf4 offset", "ok"),
    (EN + L12, "linspace({}, 0.5, 9)", "nf4 offset", ".7f"),
    (EN + L12, "which costs 32/64 = {} extra\nbits per weight", "absmax bits", ".1f"),
    # 13
    *[
        (lang + L13, text, q, spec)
        for lang in (EN, ZH)
        for text, q, spec in [
            ("| {} | 0.1258 % | 1 |", "lora", ","),
            ("| 8,388,608 | {} % | 1 |", "lora %", ".4f"),
            ("| {} | 0.0787 % | 1.6 |", "prefix count", ","),
            ("| 5,242,880 | {} % | 1.6 |", "prefix %", ".4f"),
            ("| 5,242,880 | 0.0787 % | {} |", "lora / prefix", ".1f"),
            ("| {} | 0.0012 % | 102.4 |", "prompt count", ","),
            ("| 81,920 | {} % | 102.4 |", "prompt %", ".4f"),
            ("| 81,920 | 0.0012 % | {} |", "lora / prompt", ".1f"),
            ("6,658,473,984", "opt total", "ok"),
        ]
    ],
    (EN + L13, "The base is a tiny OPT ({} parameters)", "tiny total", ","),
    (ZH + L13, "小型 OPT（{} 个参数）", "tiny total", ","),
    # 15
    (EN + "15-multi-lora.md", "it is {} numbers in A and B", "lora", ","),
    (ZH + "15-multi-lora.md", "A 和 B 一共 {} 个数", "lora", ","),
    # docs/gpu.md
    (GPU, "shows {} trainable parameters", "lora", ","),
    (GPU, "trainable parameters out of\n{} ", "opt total + lora", ","),
    (GPU, "6,666,862,592 ({} %)", "lora %", ".4f"),
    (GPU, "{} bits per weight with double quantization", "nf4 dq bits", ".3f"),
    (GPU, "(computed: {} GiB of weights", "nf4 dq GiB table", ".2f"),
    (GPU, "against {} GiB in 8-bit)", "int8 GiB table", ".2f"),
    (GPU, "For opt-6.7b that is {} M numbers", "lora M", ".1f"),
    (GPU, "8.4 M numbers ({} MiB)", "lora MiB fp32", ".0f"),
    (GPU, "moments add {} MiB (8,388,608 × 16 bytes)", "lora MiB adam", ".0f"),
    (GPU, "The {} M LoRA\nparameters", "lora M", ".1f"),
    (GPU, "adds about {} GiB over the 8-bit load", "embeddings to fp32 GiB", ".1f"),
    (GPU, "that is about {} GiB.", "peak bound GiB", ".1f"),
    (GPU, "takes about {} s,", "seconds per step", ".1f"),
    (GPU, "take about {} minutes on an H100", "minutes for 200", ".0f"),
    (GPU, "4 × 4 = {} quotes for the tutorial", "per step", "d"),
    (GPU, "`--batch-size 2 --grad-accum 8` keeps {} quotes per step", "8 gpus quotes", "d"),
    (GPU, "16 ranks, {} quotes per step", "16 ranks quotes", "d"),
    (GPU, "about {} GB of disk for the checkpoint", "fp16 GB", ".0f"),
]

Q["outlier step / rest"] = lambda: round(outlier_row()[0] / outlier_row()[1])
Q["peft fields round"] = lambda: round(_peft_fields(), -1)


def _format(value, spec: str) -> str:
    if spec == "w":
        return WORDS.get(round(value), str(round(value)))
    if spec == "wz":
        return WORDS_ZH.get(round(value), str(round(value)))
    if spec == "r":
        return repr(value)
    if spec in ("s", "ok"):
        return str(value)
    if spec == ".0e":
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return format(value, spec)


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _id(record) -> str:
    path, sentence, quantity, _ = record
    return f"{Path(path).name}[{quantity}]:{_normal(sentence)[:40]}"


def _timeout(exercise_id: str) -> float:
    from lora_kata.catalog import by_id

    return by_id(exercise_id).timeout


@cache
def _text(path: str) -> str:
    return _normal((REPO / path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("record", RECORDS, ids=[_id(r) for r in RECORDS])
def test_the_number_in_the_sentence_is_the_computed_one(record):
    path, sentence, quantity, spec = record
    value = Q[quantity]()
    if spec == "ok":  # the sentence states an input: its value is checked where it is used
        expected = _normal(sentence)
    else:
        expected = _normal(sentence.format(_format(value, spec)))
    assert expected in _text(path), (
        f"{path}: expected the sentence {expected!r} (the number is {quantity}, computed "
        f"{value!r}); the file no longer says so: fix the number there (or this record, if the "
        "sentence was reworded)"
    )


def test_every_capstone_option_is_named_in_docs_gpu():
    """docs/gpu.md says `--help` lists every option, and then names them: all of them."""
    import contextlib
    import io

    from lora_kata.capstone.arguments import parse_args

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    usage = out.getvalue().split("\n\n")[0]  # "usage: … [--model MODEL] [--small] …"
    options = sorted(set(re.findall(r"--[a-z][a-z0-9-]+", usage)) - {"--help"})
    text = (REPO / GPU).read_text(encoding="utf-8")
    missing = [o for o in options if f"`{o}`" not in text]
    assert options and not missing, (
        f"docs/gpu.md ('Run the capstone') does not name these capstone options: {missing}"
    )
