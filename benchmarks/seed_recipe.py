"""The tutorial's recipe, measured: the kata's reference path against stock transformers + peft.

    python benchmarks/seed_recipe.py            # GPU: an opt-6.7b-shaped OPT, random weights
    python benchmarks/seed_recipe.py --tiny     # CPU dry run of the same code on a small OPT

Nothing is downloaded. The model is facebook/opt-6.7b's shape (models.tiny.opt_6_7b_config)
with random fp16 weights, built once, saved to --workdir, and loaded back in 8-bit by each path
exactly as a hub checkpoint would be. Each path runs in its own Python process, so that its
memory numbers start from zero:

  reference  solutions' load_in_8bit → prepare_for_int8_training → inject_lora, train_step
  stock      transformers BitsAndBytesConfig(load_in_8bit=True) → peft
             prepare_model_for_kbit_training → get_peft_model(LoraConfig), the same loop body

Both: LoRA r=16, α=32, q_proj/v_proj, dropout 0.05; AdamW lr 2e-4; batch 4 × accumulation 4 of
64-token rows packed from data/quotes.jsonl (quote-length sequences); fp16 autocast +
GradScaler on CUDA (fp32 on the CPU); gradient checkpointing as each path's preparation sets
it. Measured: memory after loading, peak memory while training, training tokens/s after warmup
steps, and greedy generation tokens/s (50 new tokens, batch 1, KV cache).

Stock baseline measured on an H100 (80 GB): 6.4 GiB loaded, 10.0 GiB peak at 4 × 64 tokens,
≈ 895 training tokens/s. Goal: the reference at ≥ stock throughput and ≤ stock peak memory.
Output: one JSON line (prefix "SEED_RECIPE "), then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.05}
STOCK_H100 = {"loaded_gib": 6.4, "peak_gib": 10.0, "train_tokens_per_s": 895.0}
GiB = 2**30


# ---------------------------------------------------------------------------- the model


def build_model(directory: Path, tiny: bool) -> Path:
    """An OPT with random weights, saved where from_pretrained (and 8-bit loading) finds it."""
    import torch
    from transformers import OPTForCausalLM

    from lora_kata.capstone.settings import SMALL_OPT
    from lora_kata.models.tiny import opt_6_7b_config, quotes_tokenizer, tiny_opt_config

    marker = directory / "BUILT"
    if marker.is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if tiny:
        model = OPTForCausalLM(tiny_opt_config(**SMALL_OPT))
    else:
        config = opt_6_7b_config()
        config.dtype = torch.float16  # as facebook/opt-6.7b is stored
        device = "cuda" if torch.cuda.is_available() else "cpu"
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float16)
        try:
            with torch.device(device):  # 13.4 GB of fp16 initialised on the GPU: seconds
                model = OPTForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    model.save_pretrained(directory, max_shard_size="2GB")
    quotes_tokenizer(512).save_pretrained(directory)  # ids < 512 are valid for any vocab
    marker.write_text("ok\n")
    return directory


def packed_rows(seq_len: int, n_rows: int) -> list[list[int]]:
    """Quotes tokenized back to back and cut into seq_len rows (no padding)."""
    from lora_kata.models.tiny import quote_texts, quotes_tokenizer

    tokenizer = quotes_tokenizer(512)
    stream: list[int] = []
    for text in quote_texts():
        stream += tokenizer(text)["input_ids"]
    while len(stream) < seq_len * n_rows:
        stream += stream
    return [stream[i * seq_len : (i + 1) * seq_len] for i in range(n_rows)]


# ---------------------------------------------------------------------------- one path


def load_path(path: str, model_dir: str, impl: str):
    """(model, memory after loading) for the reference or the stock path."""
    import torch

    cuda = torch.cuda.is_available()
    if path == "reference":
        from lora_kata.catalog.impl import load

        int8, inject = load("int8", impl), load("inject", impl)
        model = int8.load_in_8bit(model_dir)
        loaded = torch.cuda.memory_allocated() if cuda else None
        model = int8.prepare_for_int8_training(model)
        model = inject.inject_lora(model, inject.LoRAConfig(**LORA, bias="none"))
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        model = AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True)
        )
        loaded = torch.cuda.memory_allocated() if cuda else None
        model = prepare_model_for_kbit_training(model)
        config = LoraConfig(**LORA, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    return model, loaded


def model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def run_path(args) -> dict:
    import torch

    from lora_kata.catalog.impl import load

    train = load("train", args.impl)
    cuda = torch.cuda.is_available()
    if args.tiny and not cuda:
        # 128-wide matmuls gain nothing from threads, and OpenMP's spinning threads on a busy
        # CPU made timings swing 50× (measured on 2 cores): one thread, for both paths alike.
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model, loaded = load_path(args.worker, args.model_dir, args.impl)
    device = model.get_input_embeddings().weight.device
    after_prepare = torch.cuda.memory_allocated() if cuda else None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    rows = packed_rows(args.seq, args.batch * args.accum)
    ids = torch.tensor(rows, dtype=torch.long)
    micro_batches = [
        {"input_ids": chunk, "attention_mask": torch.ones_like(chunk), "labels": chunk.clone()}
        for chunk in ids.split(args.batch)
    ]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0
    )
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    dtype = torch.float16 if cuda else None
    model.config.use_cache = False

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses = []
    for _ in range(args.warmup):  # kernels picked, allocator warmed, GradScaler settled
        losses.append(
            train.train_step(model, micro_batches, optimizer, scaler=scaler, autocast_dtype=dtype)
        )
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        losses.append(
            train.train_step(model, micro_batches, optimizer, scaler=scaler, autocast_dtype=dtype)
        )
    sync()
    train_s = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if cuda else None
    tokens = args.steps * args.accum * args.batch * args.seq

    model.eval()
    model.config.use_cache = True
    prompt = torch.tensor([rows[0][:8]], dtype=torch.long, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if cuda
        else torch.autocast("cpu", enabled=False)
    )
    with torch.no_grad(), autocast:
        gen_kwargs = dict(
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            pad_token_id=1,
        )
        model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **gen_kwargs)
        sync()
        started = time.perf_counter()
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **gen_kwargs)
        sync()
        gen_s = time.perf_counter() - started
    generated = out.shape[1] - prompt.shape[1]
    return {
        "path": args.worker,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "trainable": trainable,
        "model_bytes": model_bytes(model),
        "loaded_bytes": loaded,
        "after_prepare_bytes": after_prepare,
        "peak_train_bytes": peak,
        "train_tokens_per_s": tokens / train_s,
        "train_s": train_s,
        "generate_tokens_per_s": generated / gen_s,
        "losses": [float(x) for x in losses],
    }


# ---------------------------------------------------------------------------- report


def fmt_gib(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / GiB:.2f} GiB" if value >= GiB / 10 else f"{value / 2**20:.1f} MiB"


def table(results: dict, settings: dict) -> str:
    rows = [
        ("memory after load", "loaded_bytes", fmt_gib),
        ("peak training memory", "peak_train_bytes", fmt_gib),
        ("model tensors (8-bit + fp32 + LoRA)", "model_bytes", fmt_gib),
        (
            f"training tokens/s ({settings['batch']}×{settings['seq']}, accum {settings['accum']})",
            "train_tokens_per_s",
            lambda v: f"{v:,.0f}",
        ),
        ("generation tokens/s (batch 1, greedy)", "generate_tokens_per_s", lambda v: f"{v:,.1f}"),
        ("trainable parameters", "trainable", lambda v: f"{v:,}"),
    ]
    paths = [p for p in ("reference", "stock") if p in results]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'':{width}}" + "".join(f"{p:>16}" for p in paths)]
    for label, key, show in rows:
        lines.append(f"{label:{width}}" + "".join(f"{show(results[p][key]):>16}" for p in paths))
    return "\n".join(lines)


def verdict(results: dict) -> dict:
    if not {"reference", "stock"} <= results.keys():
        return {}
    ref, stock = results["reference"], results["stock"]
    out = {"throughput_ratio": ref["train_tokens_per_s"] / stock["train_tokens_per_s"]}
    if ref["peak_train_bytes"] is not None:
        out["peak_memory_ratio"] = ref["peak_train_bytes"] / stock["peak_train_bytes"]
        out["goal_met"] = out["throughput_ratio"] >= 1.0 and out["peak_memory_ratio"] <= 1.0
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny",
        "--cpu",
        action="store_true",
        dest="tiny",
        help="dry run: the built-in small OPT (on the GPU if there is one)",
    )
    parser.add_argument("--impl", default="solutions", help="solutions, exercises or a package dir")
    parser.add_argument("--paths", default="reference,stock")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (GPU 10, tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (GPU 3, tiny 1)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "lora-kata-bench"))
    parser.add_argument("--worker", choices=("reference", "stock"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (3 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)

    if args.worker:  # one path, in its own process
        import logging
        import warnings

        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        result = run_path(args)
        Path(args.result).write_text(json.dumps(result), encoding="utf-8")
        return 0

    import torch

    if not args.tiny and not torch.cuda.is_available():
        parser.error("the opt-6.7b-shaped run needs a CUDA GPU; use --tiny for the CPU dry run")
    name = "small-opt-random" if args.tiny else "opt-6.7b-shaped-random"
    workdir = Path(args.workdir)
    started = time.perf_counter()
    model_dir = build_model(workdir / name, args.tiny)
    print(f"model: {name} in {model_dir} ({time.perf_counter() - started:.0f} s)", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    results = {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for path in args.paths.split(","):
        result_file = workdir / f"{name}-{path}.json"
        result_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            __file__,
            "--worker",
            path,
            "--model-dir",
            str(model_dir),
            "--result",
            str(result_file),
            "--impl",
            args.impl,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--batch",
            str(args.batch),
            "--accum",
            str(args.accum),
            "--seq",
            str(args.seq),
            "--new-tokens",
            str(args.new_tokens),
        ]
        if args.tiny:
            command.append("--tiny")
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:] + done.stderr[-6000:], file=sys.stderr)
            print(f"{path}: failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
        results[path] = json.loads(result_file.read_text(encoding="utf-8"))
        print(f"{path}: done in {time.perf_counter() - started:.0f} s", flush=True)

    settings = {k: getattr(args, k) for k in ("batch", "accum", "seq", "steps", "warmup")}
    record = {
        "benchmark": "seed_recipe",
        "model": name,
        "impl": args.impl,
        "settings": settings,
        "results": {p: {k: v for k, v in r.items() if k != "losses"} for p, r in results.items()},
        "stock_h100_reference": STOCK_H100,
        **verdict(results),
    }
    print("SEED_RECIPE " + json.dumps(record))
    print()
    print(table(results, settings))
    summary = verdict(results)
    if "goal_met" in summary:
        print(
            f"\nreference / stock: throughput ×{summary['throughput_ratio']:.2f}, peak memory "
            f"×{summary['peak_memory_ratio']:.2f} → goal "
            + ("met" if summary["goal_met"] else "NOT met")
        )
    elif summary:
        print(
            f"\nreference / stock throughput ×{summary['throughput_ratio']:.2f} "
            "(CPU: no memory goal)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
