"""The capstone's whole job with the implementation's own pieces: the tutorial's steps in its
order, plus what it did not do (held-out loss, the adapter file, a loss plot, metrics):

    load_in_8bit (or --quant 4bit) → prepare_for_int8_training → inject_lora(r=16, α=32,
    q_proj/v_proj, 0.05) → trainable_parameters_line → load_quotes → finetune → save_adapter
    → loss plot → generate → metrics.json

Under torchrun every rank loads and trains (lora_kata/capstone/distributed.py); rank 0 alone
prints, builds the small OPT, and writes the adapter, the plot and the metrics.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from lora_kata.capstone import distributed as dp
from lora_kata.capstone.arguments import device_map_from, parse_args, settings_for
from lora_kata.capstone.console import Say, gib, quiet_libraries
from lora_kata.capstone.evaluate import held_out_stats, split_held_out
from lora_kata.capstone.models import RANDOM, choose_model, input_device, load_prepared
from lora_kata.capstone.outputs import plot_losses, write_metrics
from lora_kata.capstone.pieces import PieceMissing, finetune_options, implementation_modules
from lora_kata.capstone.probe import (
    as_metrics,
    continuations,
    describe,
    ending,
    expectations_table,
    samples_text,
)
from lora_kata.capstone.settings import LORA_SETTINGS, SMALL_OPT


def main(impl, argv=None) -> int:
    """Run the whole job with `impl`'s pieces (see implementation_modules); returns 0.

    From the command line (argv None) an unfinished exercise, a flag the implementation cannot
    serve yet, or an unusable launch is reported in one sentence (exit status 1 or 2); called
    with argv (the tests), the exception propagates.
    """
    if argv is not None:
        return _run(impl, argv)
    try:
        return _run(impl, None)
    except NotImplementedError as error:
        print(
            f"\nNot implemented yet: {error}. The capstone runs your exercises 03, 04, 06-10; "
            "`pytest exercises/` shows which one to do next.",
            file=sys.stderr,
        )
        return 1
    except (PieceMissing, dp.UsageError) as error:
        print(f"\n{error}", file=sys.stderr)
        return 2


def _run(impl, argv) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # keep prints and progress bars in order
    modules = implementation_modules(impl)
    name = getattr(modules, "name", None) or "custom"
    args = parse_args(argv, prog=f"python -m {name}.finetune")
    world = dp.world_from_environment()
    quiet_libraries()
    import torch

    cuda = torch.cuda.is_available()
    # Everything that can be refused is checked before a process group or a model exists.
    choice = choose_model(args.model, Path(args.out), small=args.small, build=False)
    settings = settings_for(args, choice.base)
    dp.check_grad_accum(settings["grad_accum"], world)
    device_map = dp.device_map_for(world, device_map_from(args.device_map), cuda=cuda)
    options = finetune_options(modules.finetune.finetune, args)
    backend = dp.start(world, cuda=cuda)
    try:
        return _job(modules, name, args, world, choice, settings, device_map, options, backend)
    finally:
        dp.stop(world)


def _job(modules, name, args, world, choice, settings, device_map, options, backend) -> int:
    import torch

    say = Say(world.main)
    cuda = torch.cuda.is_available()
    out = Path(args.out)
    say(f"LoRA kata capstone · implementation: {name}")
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        choice.build()
    dp.barrier(world)  # the other ranks load the small OPT only once rank 0 has written it
    if choice.small and not (Path(choice.path) / "config.json").is_file():
        raise dp.UsageError(
            f"rank {world.rank} cannot see the small OPT that rank 0 wrote to "
            f"{choice.path}: on several machines put --out on a shared file system, or pass "
            "--model (a hub id cached on every machine, or a shared directory)."
        )
    _describe_model(say, choice)
    if choice.small and not cuda:
        # Its 128-wide matmuls gain nothing from threads, and on a busy CPU OpenMP's spinning
        # threads made this run 5× slower (measured on 2 cores): one thread.
        torch.set_num_threads(1)

    started = time.perf_counter()
    torch.manual_seed(args.seed)  # LoRA's A is drawn at injection: the same run twice agrees
    model, tokenizer, lora_config = load_prepared(
        modules,
        choice.path,
        device_map=device_map,
        quant=args.quant,
        lora_dropout=args.lora_dropout,
        cuda=cuda,
    )
    dp.broadcast_trainable(model, world)
    dp.average_gradients_after_backward(model, world)
    device = input_device(model)
    loaded_bytes = torch.cuda.memory_allocated() if cuda else None
    say(
        f"loaded in {args.quant[0]}-bit on {device} in {time.perf_counter() - started:.1f} s"
        + (f" · GPU memory {gib(loaded_bytes)}" if loaded_bytes is not None else "")
    )
    say(modules.counting.trainable_parameters_line(model))
    precision = "fp16 autocast + GradScaler" if device.type == "cuda" else "fp32 (no autocast)"
    say(
        f"training: {settings['max_steps']} steps (warmup {settings['warmup_steps']}), batch "
        f"{settings['batch_size']} × accumulation {settings['grad_accum']}, lr "
        f"{settings['lr']:g}, {precision}"
        + "".join(f", {key}={value}" for key, value in options.items())
    )
    if world.distributed:
        say(
            f"data parallel: {world.size} processes ({backend}), "
            f"{settings['grad_accum'] // world.size} micro-batch(es) of each step per process"
        )

    dataset, held_out = split_held_out(modules.data.load_quotes(args.data), seed=args.seed)
    seeds, limit = (args.seed, args.seed + 1), args.max_new_tokens
    before_stats = held_out_stats(modules, model, tokenizer, held_out)
    before_text = modules.finetune.generate(model, tokenizer, args.prompt, limit)
    before_found = continuations(model, tokenizer, args.prompt, limit, seeds)
    say(
        "before fine-tuning, the base model continues the prompt as:\n"
        f"{describe(before_found, before_text, limit)}\n"
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with dp.share_micro_batches(
        modules.finetune, world, dp.communication_device(world, cuda=cuda)
    ) as calls:
        losses = modules.finetune.finetune(
            model,
            tokenizer,
            dataset,
            seed=args.seed,
            progress=world.main and not args.no_progress,
            **settings,
            **options,
        )
    train_seconds = time.perf_counter() - started
    if world.distributed and not calls:
        say(
            "warning: finetune did not call train_step by that name, so every process "
            "trained on the whole global batch (the gradients were still averaged: correct, "
            "but no faster than one process)",
            error=True,
        )
    peak_bytes = torch.cuda.max_memory_allocated() if cuda else None
    losses = [float(x) for x in losses]
    _report_losses(say, losses, train_seconds, peak_bytes)
    after_stats = held_out_stats(modules, model, tokenizer, held_out)
    before_loss, after_loss = (stats and stats["loss"] for stats in (before_stats, after_stats))
    if before_loss is not None and after_loss is not None:
        say(
            f"held-out loss ({len(held_out)} quotes never trained on): "
            f"{before_loss:.4f} before → {after_loss:.4f} after"
        )
        say(expectations_table(before_stats, after_stats, len(held_out)))
    if not world.main:
        return 0

    adapter_dir = out / "adapter"
    modules.adapter.save_adapter(
        model, adapter_dir, lora_config, base_model_name_or_path=choice.name
    )
    say(f"adapter (peft format): {adapter_dir}")
    shown = {RANDOM: "a small OPT with random weights", "demo": "the demo base"}.get(
        choice.base, choice.name
    )
    say(f"loss curve: {plot_losses(losses, out / 'loss.png', f'LoRA fine-tune of {shown}')}")
    text = modules.finetune.generate(model, tokenizer, args.prompt, limit)
    after_found = continuations(model, tokenizer, args.prompt, limit, seeds)
    metrics = {
        "implementation": name,
        "model": choice.name,
        "model_source": choice.why,
        "small_builtin_model": choice.small,
        "small_base": choice.base or None,
        "held_out": {
            "quotes": len(held_out),
            "loss_before": before_loss,
            "loss_after": after_loss,
            "before": before_stats,
            "after": after_stats,
        },
        "generation_before": before_text,
        "continuations_before": as_metrics(before_found),
        "device": str(device),
        "quant": args.quant,
        "lora": LORA_SETTINGS | {"lora_dropout": args.lora_dropout},
        "settings": settings,
        "finetune_options": options,
        "data_parallel": {"processes": world.size, "backend": backend},
        "seed": args.seed,
        "losses": losses,
        "train_seconds": round(train_seconds, 3),
        "gpu_memory_loaded_bytes": loaded_bytes,
        "gpu_memory_peak_bytes": peak_bytes,
        "prompt": args.prompt,
        "generation": text,
        "continuations": as_metrics(after_found),
    }
    say(f"metrics: {write_metrics(metrics, out / 'metrics.json')}")
    say(f"\nafter fine-tuning, {samples_text(after_found, limit)}")
    # The tutorial's output last (exercise 10's test reads what follows this header).
    say(
        f"\ngeneration (greedy{ending(after_found, text, limit)}; {limit} new tokens at most):"
        f"\n\n{text}\n"
    )
    return 0


def _describe_model(say: Say, choice) -> None:
    if not choice.small:
        say(f"model: {choice.name} ({choice.why})")
        return
    if choice.base == "demo":
        from lora_kata.models.demo_base import DESCRIPTION

        say(
            f"model: the demo base ({choice.why}):\n       {DESCRIPTION}; cached in "
            f"{choice.path}.\n       Fine-tuning on the quotes changes it visibly: watch the "
            "held-out loss, what it expects of held-out quotes, and the continuations before "
            "and after. For the tutorial's model pass "
            "--model facebook/opt-6.7b on a GPU."
        )
        return
    o = SMALL_OPT
    say(
        f"model: the built-in small OPT with random weights ({choice.why}).\n"
        f"       {o['num_hidden_layers']} layers, hidden {o['hidden_size']}, "
        f"{o['num_attention_heads']} heads, ffn {o['ffn_dim']}, vocab 512, RANDOM weights, "
        f"a tokenizer trained on the quotes; saved to {choice.path}.\n"
        "       Its loss can only fall a little and its generation is noise: it shows "
        "that the pipeline works. For real text pass --model facebook/opt-125m (or larger)."
    )


def _report_losses(say: Say, losses: list[float], seconds: float, peak_bytes) -> None:
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    say(
        f"loss: {first:.4f} → {last:.4f} (mean of the first and last {k} step"
        f"{'s' if k > 1 else ''}) in {seconds:.1f} s"
        + (f" · peak GPU memory {gib(peak_bytes)}" if peak_bytes is not None else "")
    )
    if not all(math.isfinite(x) for x in losses):
        say("warning: some losses are not finite (nan/inf)", error=True)
