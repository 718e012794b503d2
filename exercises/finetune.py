"""The capstone (exercise 10): the tutorial's fine-tune, written with your own pieces.

The model arrives loaded in 8-bit, prepared and injected (load_in_8bit →
prepare_for_int8_training → inject_lora); `finetune` runs the training loop the tutorial got
from transformers' Trainer, and `generate` decodes the tutorial's prompt greedily.
`python -m exercises.finetune` runs the whole job with them (lora_kata/capstone/).
Lesson: lessons/en/10-capstone.md.
"""

from __future__ import annotations

import contextlib  # noqa: F401  (contextlib.nullcontext() is a do-nothing `with`)

import torch
from torch.optim.lr_scheduler import LambdaLR  # noqa: F401
from tqdm.auto import tqdm  # noqa: F401

from .data import collate_for_causal_lm, tokenize_quotes  # noqa: F401
from .train import linear_warmup_lr, train_step  # noqa: F401

PROMPT = "Two things are infinite: "


def _input_device(model: torch.nn.Module) -> torch.device:
    """Where the token ids must go: the input embeddings' device (with device_map="auto" the
    layers may sit on several GPUs, but the ids enter at the embeddings)."""
    return model.get_input_embeddings().weight.device


def finetune(
    model,
    tokenizer,
    dataset,
    *,
    max_steps=200,
    batch_size=4,
    grad_accum=4,
    lr=2e-4,
    warmup_steps=100,
    seed=0,
    progress=True,
    packing: bool = False,
    max_length: int | None = None,
) -> list[float]:
    """Train the injected model on the quotes for `max_steps` optimizer steps.

    Each step sees grad_accum micro-batches of batch_size quotes (the tutorial: 4 × 4 = 16),
    at lr(step) = linear_warmup_lr(step, ...). Returns the per-step mean losses (floats).

    - torch.manual_seed(seed) first (LoRA dropout), so the same call twice gives the same losses.
    - Data: tokenize_quotes(dataset, tokenizer, max_length=max_length), where max_length
      None means model.config.max_position_embeddings (the tiny OPT has only 128 positions)
      and a max_length past those positions is a ValueError; keep each row's input_ids and
      attention_mask. The order: a seeded shuffle (torch.randperm with
      torch.Generator().manual_seed(seed)), a fresh one for every pass, as many passes as
      max_steps × grad_accum × batch_size needs.
      Each micro-batch = collate_for_causal_lm(batch_size rows, tokenizer.pad_token_id).
    - packing=True (exercise 11): the micro-batches come from the GIVEN
      pack.packed_batches(features, order, batch_size, max_length, tokenizer.pad_token_id)
      (`from .pack import packed_batches` inside finetune), where `order` yields quote indices
      one at a time from the same seeded shuffle; each micro-batch is next() of that generator.
    - AdamW over [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
      (the Trainer's default; torch's own default would be 0.01).
    - Schedule: LambdaLR(optimizer, lambda step: linear_warmup_lr(step, base_lr=1.0,
      warmup_steps=warmup_steps, max_steps=max_steps)) — LambdaLR multiplies lr by the factor.
    - On CUDA (_input_device(model).type == "cuda"): scaler = torch.amp.GradScaler("cuda") and
      autocast_dtype = torch.float16. On the CPU: neither (plain fp32).
    - model.config.use_cache = False and model.train() while training; put both back after.
    - One train_step(model, micro_batches, optimizer, scheduler=..., scaler=...,
      autocast_dtype=...) per step; show a tqdm bar (disable=not progress) with the loss.
    """
    # TODO(10): seed, tokenize, shuffle and cycle, AdamW + LambdaLR, one train_step per step.
    raise NotImplementedError("Exercise 10: finetune")


def generate(model, tokenizer, prompt=PROMPT, max_new_tokens=50) -> str:
    """Greedy continuation of `prompt`; the decoded text, prompt included (the tutorial's
    `tokenizer.decode(output_tokens[0], skip_special_tokens=True)`).

    - Tokenize the prompt (return_tensors="pt"); pass only input_ids and attention_mask,
      moved to _input_device(model).
    - model.eval() and model.config.use_cache = True (the PEFT example notebook: "Please
      re-enable for inference!"), then model.generate(..., max_new_tokens=max_new_tokens,
      do_sample=False, pad_token_id=tokenizer.pad_token_id,
      eos_token_id=tokenizer.eos_token_id) under torch.no_grad() — and, on CUDA, inside
      torch.autocast("cuda", dtype=torch.float16) as the tutorial did. Restore the mode and
      use_cache afterwards.
    - Stop at EOS: the quotes were trained with an EOS at their end (exercise 06), so
      generation ends when the model emits it, before max_new_tokens. Pass
      eos_token_id=tokenizer.eos_token_id yourself: a model's generation config need not name
      one.
    - Return tokenizer.decode(output[0], skip_special_tokens=True).
    """
    # TODO(10): eval mode, cache on, greedy model.generate stopping at EOS, decode it all.
    raise NotImplementedError("Exercise 10: generate")


if __name__ == "__main__":
    from lora_kata.capstone.run import main

    raise SystemExit(main(__package__))
