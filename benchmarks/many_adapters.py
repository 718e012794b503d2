"""Benchmark: one mixed batch over N adapters against N single-adapter batches (exercise 15).

    python benchmarks/many_adapters.py                    # the reference (solutions/)
    python benchmarks/many_adapters.py --adapters 1,4,16  # other adapter counts
    python benchmarks/many_adapters.py --impl exercises   # your own code (or a package path)

N LoRA adapters (ranks 4, 8 and 16 in turn, α = 2r, on q_proj and v_proj) are saved in exercise
09's format and loaded onto one small OPT with load_adapters (exercise 15). The same requests,
--rows rows of --length random tokens per adapter, are then served two ways, forward passes
only (the prefill of a serving system), on the CPU:

- mixed: one batch of all N × rows rows, each routed to its own adapter with routed();
- separate: N batches, one per adapter, each routed to that adapter alone.

Both run the same layers; only the batching differs. The mixed batch runs the base once over
every row; the separate batches run it N times over smaller batches. Each way is timed
--repeats times (the median is reported) after one warm-up pass.
Output: a table, then one JSON line (the last line) with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RANKS = (4, 8, 16)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", default="solutions", help="solutions, exercises or a path")
    parser.add_argument(
        "--adapters", default="1,2,4,8,16", help="adapter counts N, comma-separated"
    )
    parser.add_argument("--rows", type=int, default=2, help="requests (batch rows) per adapter")
    parser.add_argument("--length", type=int, default=32, help="tokens per request")
    parser.add_argument("--hidden", type=int, default=128, help="the OPT's hidden size")
    parser.add_argument("--layers", type=int, default=4, help="the OPT's decoder layers")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(n) for n in args.adapters.split(",")})
    except ValueError:
        parser.error(f"--adapters must be whole numbers separated by commas, got {args.adapters}")
    for name in ("rows", "length", "hidden", "layers", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if min(args.counts) < 1:
        parser.error(f"every adapter count must be ≥ 1, got {args.counts}")
    if args.length > 128:
        parser.error("--length must be ≤ 128 (the small OPT's positions)")
    if args.hidden % 4:
        parser.error("--hidden must be a multiple of 4 (4 attention heads)")
    return args


def base_model(args):
    from lora_kata.models.tiny import build_tiny_opt

    return build_tiny_opt(
        args.seed,
        hidden_size=args.hidden,
        word_embed_proj_dim=args.hidden,
        ffn_dim=4 * args.hidden,
        num_hidden_layers=args.layers,
    ).eval()


def save_adapters(args, inject, adapter, folder: Path) -> dict[str, Path]:
    """max(N) adapters with random A and B, saved with exercise 09's save_adapter."""
    from lora_kata.testing.lora_models import randomise_lora

    directories = {}
    for index in range(max(args.counts)):
        r = RANKS[index % len(RANKS)]
        model = base_model(args)
        config = inject.LoRAConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"])
        inject.inject_lora(model, config)
        randomise_lora(model, args.seed + index, scale=0.05)
        name = f"adapter{index:02d}"
        adapter.save_adapter(model, folder / name, config)
        directories[name] = folder / name
    return directories


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(args, multi, directories: dict[str, Path], n: int) -> dict:
    import torch

    names = list(directories)[:n]
    model = multi.load_adapters(base_model(args), {name: directories[name] for name in names})
    route = [names[i % n] for i in range(n * args.rows)]  # interleaved, as requests arrive
    generator = torch.Generator().manual_seed(args.seed + n)
    ids = torch.randint(4, 512, (len(route), args.length), generator=generator)
    groups = {name: [i for i, r in enumerate(route) if r == name] for name in names}

    def mixed():
        with torch.no_grad(), multi.routed(model, route):
            return model(input_ids=ids).logits

    def separate():
        outputs = {}
        for name, rows in groups.items():
            with torch.no_grad(), multi.routed(model, [name] * len(rows)):
                outputs[name] = model(input_ids=ids[rows]).logits
        return outputs

    # The two ways compute the same logits (float rounding aside).
    together, apart = mixed(), separate()
    gap = max((together[rows] - apart[name]).abs().max().item() for name, rows in groups.items())
    tokens = ids.numel()
    mixed_s, separate_s = (
        median_seconds(mixed, args.repeats),
        median_seconds(separate, args.repeats),
    )
    return {
        "adapters": n,
        "rows": len(route),
        "tokens": tokens,
        "mixed_seconds": round(mixed_s, 5),
        "separate_seconds": round(separate_s, 5),
        "mixed_tokens_per_s": round(tokens / mixed_s),
        "separate_tokens_per_s": round(tokens / separate_s),
        "speedup": round(separate_s / mixed_s, 2),
        "max_logit_gap": gap,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    started = time.perf_counter()
    import torch

    from lora_kata.catalog.impl import load

    inject, adapter, multi = (load(m, args.impl) for m in ("inject", "adapter", "multi"))
    with tempfile.TemporaryDirectory() as folder:
        directories = save_adapters(args, inject, adapter, Path(folder))
        results = [measure(args, multi, directories, n) for n in args.counts]
    report = {
        "benchmark": "many_adapters",
        "impl": args.impl,
        "rows_per_adapter": args.rows,
        "length": args.length,
        "hidden": args.hidden,
        "layers": args.layers,
        "ranks": list(RANKS),
        "repeats": args.repeats,
        "results": results,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(report)
    print(json.dumps(report))
    return report


def print_table(report: dict) -> None:
    print(
        f"One mixed batch against one batch per adapter: OPT hidden {report['hidden']}, "
        f"{report['layers']} layers, {report['rows_per_adapter']} requests of "
        f"{report['length']} tokens per adapter, forward passes on the CPU "
        f"({report['threads']} threads), median of {report['repeats']}"
    )
    header = ["adapters N", "rows", "mixed tok/s", "N batches tok/s", "mixed ÷ separate", "max gap"]
    rows = [
        [
            str(r["adapters"]),
            str(r["rows"]),
            f"{r['mixed_tokens_per_s']:,}",
            f"{r['separate_tokens_per_s']:,}",
            f"{r['speedup']:.2f}×",
            f"{r['max_logit_gap']:.1e}",
        ]
        for r in report["results"]
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("─" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"whole run: {report['seconds']} s")


if __name__ == "__main__":
    main()
