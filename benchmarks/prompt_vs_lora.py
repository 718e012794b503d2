"""Benchmark: LoRA against prompt tuning, side by side, on the quotes (exercise 13).

    python benchmarks/prompt_vs_lora.py                   # the reference (solutions/)
    python benchmarks/prompt_vs_lora.py --steps 20        # a quicker run
    python benchmarks/prompt_vs_lora.py --impl exercises  # your own code (or a package path)

The base: a tiny OPT (lora_kata.models.tiny: hidden 32, 2 layers, seeded random weights) given a
short full fine-tune on the quotes first (--base-steps), so that it is a language model of
sorts rather than noise. Then two copies of that one base:

- LoRA: inject_lora with the tutorial's LoRAConfig (r=16, alpha=32, q_proj and v_proj);
- prompt tuning: PromptTuning with 20 virtual tokens (random vocabulary rows).

Both train for the same steps on the same batches (quotes from data/quotes.jsonl, tokenized by
the quotes tokenizer, collated by collate_for_causal_lm, one train_step per batch, AdamW), and
are evaluated on the same held-out quotes before and after. LoRA starts exactly at the base
(B = 0); prompt tuning starts worse (20 random tokens in front of every quote) and spends its
first steps undoing that. At this size neither gains much: Lester et al. 2021 found prompt
tuning competitive only with large models, and the base here has 35,616 parameters.
Output: a table, then one JSON line (the last line) with every number.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 64  # + 20 virtual tokens stays within the tiny OPT's 128 positions
HELD_OUT = 48  # the last quotes of the file, never trained on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", default="solutions", help="solutions, exercises or a path")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps for each method")
    parser.add_argument(
        "--base-steps", type=int, default=150, help="full fine-tune steps that make the base"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--lora-lr", type=float, default=1e-2)
    parser.add_argument("--prompt-lr", type=float, default=1e-1)  # Lester et al. used 0.3
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "virtual_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    if args.base_steps < 0:
        parser.error(f"--base-steps must be ≥ 0, got {args.base_steps}")
    if args.virtual_tokens + MAX_LENGTH > 128:
        parser.error(f"--virtual-tokens must be ≤ {128 - MAX_LENGTH} (128 positions in all)")
    return args


def batches(tokenizer, collate, pad_id, batch_size, steps, seed):
    """`steps` shuffled training batches and one held-out batch, as tensors."""
    import torch

    from lora_kata.models.tiny import quote_texts

    features = [
        dict(tokenizer(text, truncation=True, max_length=MAX_LENGTH)) for text in quote_texts()
    ]
    train, held_out = features[:-HELD_OUT], features[-HELD_OUT:]
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += torch.randperm(len(train), generator=generator).tolist()
    chosen = [
        collate([train[i] for i in order[s * batch_size : (s + 1) * batch_size]], pad_id)
        for s in range(steps)
    ]
    return chosen, collate(held_out, pad_id)


def held_out_loss(model, batch) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def train(name, model, train_step, train_batches, held_out, lr) -> dict:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    before = held_out_loss(model, held_out)
    started = time.perf_counter()
    losses = [train_step(model, [batch], optimizer) for batch in train_batches]
    seconds = time.perf_counter() - started
    return {
        "method": name,
        "trainable": sum(p.numel() for p in params),
        "lr": lr,
        "losses": [round(x, 4) for x in losses],
        "held_out_before": round(before, 4),
        "held_out_after": round(held_out_loss(model, held_out), 4),
        "train_seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    started = time.perf_counter()
    import torch

    from lora_kata.catalog.impl import load
    from lora_kata.models.tiny import PAD_ID, build_tiny_opt, quotes_tokenizer

    inject, prompt = load("inject", args.impl), load("prompt", args.impl)
    train_step = load("train", args.impl).train_step
    collate = load("data", args.impl).collate_for_causal_lm

    tokenizer = quotes_tokenizer()
    base = build_tiny_opt(args.seed, vocab_size=len(tokenizer))
    all_batches, held_out = batches(
        tokenizer, collate, PAD_ID, args.batch_size, args.base_steps + args.steps, args.seed
    )
    base_batches, train_batches = all_batches[: args.base_steps], all_batches[args.base_steps :]
    base_before = held_out_loss(base, held_out)
    optimizer = torch.optim.AdamW(base.parameters(), lr=3e-3, weight_decay=0.0)
    for batch in base_batches:  # every weight trains here: this makes the base, not an adapter
        train_step(base, [batch], optimizer)
    base_after = held_out_loss(base, held_out)
    total = sum(p.numel() for p in base.parameters())

    torch.manual_seed(args.seed)  # the same random draws for both sides' initialisation
    lora_model = inject.inject_lora(
        copy.deepcopy(base),
        inject.LoRAConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]),
    )
    torch.manual_seed(args.seed)
    prompt_model = prompt.PromptTuning(copy.deepcopy(base), args.virtual_tokens)

    results = [
        train("LoRA r=16 q,v", lora_model, train_step, train_batches, held_out, args.lora_lr),
        train(
            f"prompt tuning n={args.virtual_tokens}",
            prompt_model,
            train_step,
            train_batches,
            held_out,
            args.prompt_lr,
        ),
    ]
    report = {
        "benchmark": "prompt_vs_lora",
        "impl": args.impl,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "base_parameters": total,
        "base_steps": args.base_steps,
        "base_held_out_loss": {"random": round(base_before, 4), "base": round(base_after, 4)},
        "results": results,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(report)
    print(json.dumps(report))
    return report


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def print_table(report: dict) -> None:
    results = report["results"]
    print(
        f"LoRA vs prompt tuning: tiny OPT ({report['base_parameters']:,} frozen parameters), "
        f"{report['steps']} steps of {report['batch_size']} quotes each, the same batches"
    )
    losses = report["base_held_out_loss"]
    print(
        f"base: {report['base_steps']} full fine-tune steps, held-out loss "
        f"{losses['random']:.4f} (random weights) -> {losses['base']:.4f}"
    )
    header = f"{'':<28}" + "".join(f"{r['method']:>24}" for r in results)
    print(header)
    rows = [
        ("trainable parameters", lambda r: f"{r['trainable']:,}"),
        ("learning rate (AdamW)", lambda r: f"{r['lr']:g}"),
        ("held-out loss before", lambda r: f"{r['held_out_before']:.4f}"),
        ("held-out loss after", lambda r: f"{r['held_out_after']:.4f}"),
        ("train loss, first step", lambda r: f"{r['losses'][0]:.4f}"),
        ("train loss, mean last 10", lambda r: f"{mean(r['losses'][-10:]):.4f}"),
        ("training time (s)", lambda r: f"{r['train_seconds']:.1f}"),
    ]
    for label, cell in rows:
        print(f"{label:<28}" + "".join(f"{cell(r):>24}" for r in results))
    steps = len(results[0]["losses"])
    marks = sorted({0, *range(9, steps, 10), steps - 1})
    print(f"{'train loss at step':<28}" + "".join(f"{r['method']:>24}" for r in results))
    for step in marks:
        print(f"{step + 1:>27} " + "".join(f"{r['losses'][step]:>24.4f}" for r in results))
    print(f"whole run: {report['seconds']} s")


if __name__ == "__main__":
    main()
