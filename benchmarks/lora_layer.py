"""Benchmark: the kata's LoRALinear vs peft's LoRA Linear, and a merged layer vs nn.Linear.

    python benchmarks/lora_layer.py                  # reference (solutions/), CPU fp32 (+ CUDA)
    python benchmarks/lora_layer.py --quick          # small shapes, few repeats: a smoke test
    python benchmarks/lora_layer.py --impl exercises # your own LoRALinear (or a package path)

Two comparisons per shape (tokens × in → out, rank r), run side by side in one process:

- training step: forward + backward of LoRALinear vs peft.tuners.lora.Linear holding the same
  W0, A and B (fp32 adapters on every base dtype, as get_peft_model does), train mode with
  the tutorial's dropout 0.05, the input requiring grad as a hidden state does;
- inference: forward of a merged LoRALinear vs a plain nn.Linear holding the same merged weight
  (torch.inference_mode) — "no extra inference latency" once merged.

The sides of each comparison are timed in alternation (ABBA). Each ratio is A's best time over
B's best (the run least disturbed by anything else on the machine; the JSON also has the ratio
of the medians). Goals: reference/peft ≤ 1.05, merged/plain ≤ 1.02.
Output: a table, then one JSON line (prefix-free, the last line) with every number.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
GOAL_REF_PEFT = 1.05
GOAL_MERGED_PLAIN = 1.02

# (tokens, in_features, out_features, r): opt-6.7b's q_proj/v_proj (4096 → 4096, r=16, the
# tutorial's setting), its fc1/fc2 shapes (4096 ↔ 16384), and a small layer where Python
# overhead is visible.
CPU_SHAPES = [
    (512, 1024, 1024, 8),
    (256, 4096, 4096, 16),
    (128, 4096, 16384, 16),
    (128, 16384, 4096, 16),
]
CUDA_SHAPES = [
    (2048, 1024, 1024, 8),
    (4096, 4096, 4096, 16),
    (4096, 4096, 16384, 16),
    (4096, 16384, 4096, 16),
]
QUICK_SHAPES = [(64, 96, 160, 4), (32, 256, 256, 16)]


def load_lora(impl: str):
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from lora_kata.catalog.impl import load

    return load("lora", impl)


def make_layers(lora, tokens, k, d, r, dtype, device, dropout, seed=0):
    """(ours, peft's, x, grad): the same W0, A, B on both sides."""
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear
    from peft.tuners.tuners_utils import cast_adapter_dtype

    torch.manual_seed(seed)
    base = nn.Linear(k, d).to(device=device, dtype=dtype)
    alpha = 2 * r
    ours = lora.LoRALinear(base, r=r, alpha=alpha, dropout=dropout)
    with torch.no_grad():
        ours.lora_B.normal_(0, 0.02)  # a trained-looking B; the cost does not depend on it
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PeftLoraLinear(
            copy.deepcopy(base),
            "default",
            config=config,
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
        )
    cast_adapter_dtype(theirs, "default")  # fp32 adapters, as get_peft_model does by default
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    x = torch.randn(tokens, k, generator=generator).to(device=device, dtype=dtype)
    grad = torch.randn(tokens, d, generator=generator).to(device=device, dtype=dtype)
    return ours, theirs, x, grad


def check_same_outputs(ours, theirs, x):
    """Compare like with like: eval mode (no dropout), the same output to rounding."""
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    ours.train()
    theirs.train()
    scale = max(1.0, b.abs().max().item())
    tol = 1e-4 if x.dtype == torch.float32 else 2e-2
    if a.dtype != b.dtype or not torch.allclose(a.float(), b.float(), atol=tol * scale, rtol=tol):
        raise SystemExit(
            f"outputs differ from peft's (max {(a.float() - b.float()).abs().max().item():.3g}): "
            "fix the layer before timing it"
        )


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(layer, x, grad):
    x = x.detach().requires_grad_(True)
    for p in layer.parameters():
        p.grad = None
    layer(x).backward(grad)


def time_steps(steps, device, repeats, warmup):
    """(best, median) seconds of each step, run in alternation (the order reversed every round,
    so that drift in the machine's speed falls on every side alike)."""
    for _ in range(warmup):
        for step in steps:
            step()
    synchronize(device)
    times = [[] for _ in steps]
    for i in range(repeats):
        order = range(len(steps)) if i % 2 == 0 else reversed(range(len(steps)))
        for which in order:
            synchronize(device)
            start = time.perf_counter()
            steps[which]()
            synchronize(device)
            times[which].append(time.perf_counter() - start)
    return [(min(t), statistics.median(t)) for t in times]


def repeats_for(seconds_per_step, budget_s, minimum, maximum):
    return int(max(minimum, min(maximum, budget_s / max(seconds_per_step, 1e-6))))


def bench_shape(lora, shape, dtype, device, *, dropout, budget_s, quick):
    tokens, k, d, r = shape
    ours, theirs, x, grad = make_layers(lora, tokens, k, d, r, dtype, device, dropout)
    check_same_outputs(ours, theirs, x)
    ours.train()
    theirs.train()

    # A rough cost per step decides how many repeats fit the time budget.
    start = time.perf_counter()
    train_step(ours, x, grad)
    synchronize(device)
    per_step = time.perf_counter() - start
    n = repeats_for(2 * per_step, budget_s, 4 if quick else 10, 200)
    (ref_s, ref_med), (peft_s, peft_med) = time_steps(
        [lambda: train_step(ours, x, grad), lambda: train_step(theirs, x, grad)],
        device,
        n,
        warmup=2,
    )

    # Inference once merged: LoRALinear vs a plain nn.Linear holding the same merged weight
    # (and peft's merged layer, for scale: any wrapper costs one extra Python call).
    ours.eval()
    theirs.eval()
    ours.merge()
    theirs.merge()
    plain = nn.Linear(k, d).to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        plain.weight.copy_(ours.base.weight)
        plain.bias.copy_(ours.base.bias)
    with torch.inference_mode():
        if not torch.equal(ours(x), plain(x)):
            raise SystemExit("a merged LoRALinear should compute exactly base(x)")
        m = repeats_for(per_step / 3, budget_s, 6 if quick else 20, 400)
        (merged_s, merged_med), (plain_s, plain_med), (peft_merged_s, _) = time_steps(
            [lambda: ours(x), lambda: plain(x), lambda: theirs(x)], device, m, warmup=3
        )
    return {
        "tokens": tokens,
        "in": k,
        "out": d,
        "r": r,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device.type,
        "train_repeats": n,
        "infer_repeats": m,
        "ref_ms": round(ref_s * 1e3, 4),
        "peft_ms": round(peft_s * 1e3, 4),
        "ref_over_peft": round(ref_s / peft_s, 4),
        "ref_over_peft_median": round(ref_med / peft_med, 4),
        "merged_ms": round(merged_s * 1e3, 4),
        "plain_ms": round(plain_s * 1e3, 4),
        "merged_over_plain": round(merged_s / plain_s, 4),
        "merged_over_plain_median": round(merged_med / plain_med, 4),
        "peft_merged_ms": round(peft_merged_s * 1e3, 4),
        "peft_merged_over_plain": round(peft_merged_s / plain_s, 4),
    }


def print_table(rows, out=sys.stdout):
    header = (
        f"{'device':6} {'dtype':8} {'tokens×in→out':>20} {'r':>3} │ {'ref ms':>9} {'peft ms':>9} "
        f"{'ref/peft':>8} │ {'merged ms':>9} {'plain ms':>9} {'mrg/plain':>9} "
        f"{'peft mrg/plain':>14}"
    )
    print(header, file=out)
    print("─" * len(header), file=out)
    for row in rows:
        shape = f"{row['tokens']}×{row['in']}→{row['out']}"
        print(
            f"{row['device']:6} {row['dtype']:8} {shape:>20} {row['r']:>3} │ "
            f"{row['ref_ms']:9.3f} {row['peft_ms']:9.3f} {row['ref_over_peft']:8.3f} │ "
            f"{row['merged_ms']:9.3f} {row['plain_ms']:9.3f} {row['merged_over_plain']:9.3f} "
            f"{row['peft_merged_over_plain']:14.3f}",
            file=out,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--impl", default="solutions", help="solutions (default), exercises, or a package directory"
    )
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CPU fp32, plus fp16 and bf16 on CUDA when present",
    )
    parser.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (tutorial: 0.05)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timing per comparison and shape (default 3, quick 0.3)",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=None,
        metavar="TxIxOxR",
        help="shapes to run instead of the defaults, e.g. 256x4096x4096x16 (tokens, in, out, r)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 3.0)
    lora = load_lora(args.impl)

    chosen = [tuple(int(n) for n in text.lower().split("x")) for text in args.shapes or []]
    if any(len(shape) != 4 for shape in chosen):
        parser.error("--shapes takes TOKENSxINxOUTxR, e.g. 256x4096x4096x16")
    runs = []  # (device, dtype, shapes)
    if args.device in ("auto", "cpu"):
        runs.append(
            (
                torch.device("cpu"),
                torch.float32,
                chosen or (QUICK_SHAPES if args.quick else CPU_SHAPES),
            )
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        shapes = chosen or (QUICK_SHAPES if args.quick else CUDA_SHAPES)
        for dtype in (torch.float16, torch.bfloat16):
            runs.append((torch.device("cuda"), dtype, shapes))

    rows = []
    for device, dtype, shapes in runs:
        for shape in shapes:
            rows.append(
                bench_shape(
                    lora,
                    shape,
                    dtype,
                    device,
                    dropout=args.dropout,
                    budget_s=budget,
                    quick=args.quick,
                )
            )
            print(f"  measured {device.type} {rows[-1]['dtype']} {shape}", file=sys.stderr)

    import peft

    worst_ref = max(row["ref_over_peft"] for row in rows)
    worst_merged = max(row["merged_over_plain"] for row in rows)
    summary = {
        "benchmark": "lora_layer",
        "impl": args.impl,
        "quick": args.quick,
        "dropout": args.dropout,
        "torch": torch.__version__,
        "peft": peft.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "goals": {"ref_over_peft": GOAL_REF_PEFT, "merged_over_plain": GOAL_MERGED_PLAIN},
        "max_ref_over_peft": worst_ref,
        "max_merged_over_plain": worst_merged,
        # --quick shapes are tiny: per-call Python overhead, not the layer, decides the ratios.
        "goals_met": None
        if args.quick
        else (worst_ref <= GOAL_REF_PEFT and worst_merged <= GOAL_MERGED_PLAIN),
        "results": rows,
    }
    print_table(rows)
    print(
        f"\nworst reference/peft {worst_ref:.3f} (goal ≤ {GOAL_REF_PEFT}), worst merged/plain "
        f"{worst_merged:.3f} (goal ≤ {GOAL_MERGED_PLAIN})"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
