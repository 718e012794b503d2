"""The capstone's command-line flags, and the training settings they choose."""

from __future__ import annotations

import argparse

from lora_kata.capstone.settings import (
    DEMO,
    LORA_SETTINGS,
    PROMPT,
    QUANTS,
    QUOTES,
    SMALL,
    TUTORIAL,
)


def launchers(module: str) -> str:
    return (
        f"Data parallel: run the same command under `torchrun --nproc-per-node N -m {module} "
        f"...` (or `accelerate launch --multi_gpu --num_processes N -m {module} ...`). Each "
        "process loads its own copy (on GPU: one GPU each), --batch-size x --grad-accum stays "
        "the global batch (--grad-accum must be a multiple of N), and only rank 0 writes "
        "files. See docs/gpu.md."
    )


def parse_args(argv=None, prog: str = "python -m solutions.finetune") -> argparse.Namespace:
    t, s, d = TUTORIAL, SMALL, DEMO
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "The tutorial's job with your pieces: load in 8-bit, prepare, inject LoRA "
            "(r=16, alpha=32, q_proj/v_proj, dropout 0.05), fine-tune on data/quotes.jsonl, "
            "save the adapter (peft format) and a loss plot, and generate for "
            f"{PROMPT!r}."
        ),
        epilog=(
            "Defaults: with a real model (--model, or facebook/opt-125m found in the local "
            f"cache) the tutorial's {t['max_steps']} steps, warmup {t['warmup_steps']}, batch "
            f"{t['batch_size']} x accumulation {t['grad_accum']}, lr {t['lr']:g}. With the "
            "demo base (the offline fallback: a small OPT pretrained on Python's "
            f"documentation, shipped in data/demo-base/): {d['max_steps']} steps, warmup "
            f"{d['warmup_steps']}, batch {d['batch_size']} x {d['grad_accum']}, lr "
            f"{d['lr']:g}. With --small (random weights, a pipeline check in seconds): "
            f"{s['max_steps']} steps, warmup {s['warmup_steps']}, lr {s['lr']:g}. When --max-steps "
            "is given without --warmup-steps, warmup is half of it (the tutorial's 100 of "
            "200). On CUDA the loop runs fp16 autocast with a GradScaler; on the CPU, fp32. "
            "Example on a GPU: --model facebook/opt-6.7b. "
            + launchers(prog.removeprefix("python -m "))
        ),
    )
    parser.add_argument("--model", help="hub id or local directory (default: see below)")
    parser.add_argument(
        "--small",
        action="store_true",
        help="use a small OPT with random weights (a pipeline check in seconds) instead of "
        "facebook/opt-125m or the demo base",
    )
    parser.add_argument(
        "--quant",
        choices=QUANTS,
        default="8bit",
        help="8bit (default, the tutorial: int8.load_in_8bit) or 4bit (QLoRA's NF4 with "
        "double quantization: qlora.load_in_4bit, exercise 12)",
    )
    parser.add_argument("--max-steps", type=_positive_int, help="optimizer steps")
    parser.add_argument("--warmup-steps", type=_non_negative_int, help="linear warmup steps")
    parser.add_argument("--batch-size", type=_positive_int, help="quotes per micro-batch")
    parser.add_argument("--grad-accum", type=_positive_int, help="micro-batches per step")
    parser.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    parser.add_argument(
        "--lora-dropout",
        type=_dropout,
        default=LORA_SETTINGS["lora_dropout"],
        help=f"LoRA dropout (default {LORA_SETTINGS['lora_dropout']}, the tutorial's; 0 makes "
        "a data-parallel run match one process to float rounding)",
    )
    parser.add_argument(
        "--packing",
        action="store_true",
        help="train on packed rows: whole quotes side by side, no compute on padding "
        "(finetune(packing=True), exercise 11)",
    )
    parser.add_argument(
        "--max-length",
        type=_positive_int,
        help="tokens per quote (truncation) and per packed row (finetune(max_length=...), "
        "exercise 11; default: the model's max_position_embeddings)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="LoRA init, data order and dropout (default 0)"
    )
    parser.add_argument(
        "--out", default="outputs", help="output directory: adapter/, loss.png, metrics.json"
    )
    parser.add_argument(
        "--device-map",
        default=None,
        help="none (default: the first GPU, else the CPU), auto (accelerate spreads the "
        "model over all GPUs: for a model one GPU cannot hold), balanced, sequential, or one "
        "device such as cuda:1. Not with torchrun: data parallel puts a copy on each GPU",
    )
    parser.add_argument("--data", default=str(QUOTES), help="quotes file (JSON Lines)")
    parser.add_argument("--prompt", default=PROMPT, help=f"generation prompt ({PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=50)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _dropout(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def settings_for(args: argparse.Namespace, base: str | bool) -> dict:
    """max_steps, batch_size, grad_accum, lr, warmup_steps: the flags given, else the defaults
    for this model: the tutorial's for a real one, DEMO for the demo base ("demo"), SMALL for
    the random small OPT ("random", or True)."""
    defaults = {"demo": DEMO, "random": SMALL, True: SMALL}.get(base, TUTORIAL)
    chosen = {
        key: getattr(args, key) if getattr(args, key) is not None else defaults[key]
        for key in ("max_steps", "batch_size", "grad_accum", "lr")
    }
    if args.warmup_steps is not None:
        chosen["warmup_steps"] = args.warmup_steps
    elif args.max_steps is not None:
        chosen["warmup_steps"] = args.max_steps // 2
    else:
        chosen["warmup_steps"] = defaults["warmup_steps"]
    return chosen


def device_map_from(text: str | None):
    """--device-map: none (one GPU if there is one, else the CPU), auto / balanced /
    sequential (accelerate spreads the layers over every GPU), or a device (cuda:1, cpu)."""
    if text is None or text.lower() == "none":
        return None
    if text in ("auto", "balanced", "balanced_low_0", "sequential"):
        return text
    return {"": int(text) if text.isdigit() else text}
