"""The capstone (exercise 10): the tutorial's fine-tune, written with your own pieces.

The model arrives loaded in 8-bit, prepared and injected (load_in_8bit →
prepare_for_int8_training → inject_lora); `finetune` runs the training loop the tutorial got
from transformers' Trainer, and `generate` decodes the tutorial's prompt greedily.
`python -m solutions.finetune` runs the whole job (lora_kata/capstone/).
"""

from __future__ import annotations

import contextlib

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from .data import collate_for_causal_lm, tokenize_quotes
from .train import linear_warmup_lr, train_step

PROMPT = "Two things are infinite: "


def _input_device(model: torch.nn.Module) -> torch.device:
    """Where the token ids must go: the input embeddings' device (with device_map="auto" the
    layers may sit on several GPUs, but the ids enter at the embeddings)."""
    return model.get_input_embeddings().weight.device


def _shuffled_batches(n_examples: int, batch_size: int, seed: int):
    """Index lists of `batch_size`, forever: a fresh seeded permutation each pass (like the
    Trainer's RandomSampler), so max_steps can ask for more than one pass over the data."""
    generator = torch.Generator().manual_seed(seed)
    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            pending += torch.randperm(n_examples, generator=generator).tolist()
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _check_max_length(max_length: int | None, model) -> int | None:
    """The row / truncation length: max_length, by default the model's positions; a length
    past them would index a position embedding that does not exist."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if max_length is None:
        return positions
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    if positions is not None and max_length > positions:
        raise ValueError(
            f"max_length={max_length} exceeds the model's {positions} positions "
            "(model.config.max_position_embeddings): choose max_length ≤ that"
        )
    return max_length


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
    With packing (exercise 11), each micro-batch is batch_size packed rows of at most
    max_length tokens (default: the model's positions, which also bound tokenization).
    """
    torch.manual_seed(seed)  # LoRA dropout masks: the same run twice gives the same losses
    if len(dataset) == 0:
        raise ValueError("finetune needs a non-empty dataset of quotes")
    # Truncate to the positions the model has (the built-in small OPT has only 128).
    max_length = _check_max_length(max_length, model)
    tokenized = tokenize_quotes(dataset, tokenizer, max_length=max_length)
    # Only the token columns: the collator cannot turn quote/author/tags into tensors.
    features = [
        {"input_ids": ids, "attention_mask": mask}
        for ids, mask in zip(tokenized["input_ids"], tokenized["attention_mask"], strict=True)
    ]
    batches = _shuffled_batches(len(features), batch_size, seed)
    if packing:  # exercise 11: the same seeded shuffle, one quote at a time, packed in rows
        from .pack import packed_batches

        order = (i for (i,) in _shuffled_batches(len(features), 1, seed))
        packed = packed_batches(features, order, batch_size, max_length, tokenizer.pad_token_id)

    device = _input_device(model)
    on_cuda = device.type == "cuda"
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "the model has no trainable parameters: call inject_lora after "
            "prepare_for_int8_training (preparing freezes everything)"
        )
    # The Trainer's defaults: AdamW, no weight decay (torch's AdamW would decay by 0.01).
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    # LambdaLR multiplies lr by the factor, so ask for the schedule with base_lr = 1.
    scheduler = LambdaLR(
        optimizer,
        lambda step: linear_warmup_lr(
            step, base_lr=1.0, warmup_steps=warmup_steps, max_steps=max_steps
        ),
    )
    # fp16=True in the tutorial: fp16 autocast plus loss scaling, on CUDA only (fp32 on CPU).
    scaler = torch.amp.GradScaler("cuda") if on_cuda else None
    autocast_dtype = torch.float16 if on_cuda else None

    use_cache, was_training = model.config.use_cache, model.training
    model.config.use_cache = False  # as the PEFT example: no KV cache while training
    model.train()
    losses: list[float] = []
    try:
        bar = tqdm(range(max_steps), desc="fine-tuning", unit="step", disable=not progress)
        for _ in bar:
            micro_batches = [
                next(packed)
                if packing
                else collate_for_causal_lm(
                    [features[i] for i in next(batches)], tokenizer.pad_token_id
                )
                for _ in range(grad_accum)
            ]
            loss = train_step(
                model,
                micro_batches,
                optimizer,
                scheduler=scheduler,
                scaler=scaler,
                autocast_dtype=autocast_dtype,
            )
            losses.append(float(loss))
            recent = losses[-10:]
            bar.set_postfix(loss=f"{loss:.4f}", running=f"{sum(recent) / len(recent):.4f}")
    finally:
        model.config.use_cache = use_cache  # "Please re-enable for inference!"
        model.train(was_training)
    return losses


def generate(model, tokenizer, prompt=PROMPT, max_new_tokens=50) -> str:
    """Greedy continuation of `prompt`; the decoded text, prompt included (the tutorial's
    `tokenizer.decode(output_tokens[0], skip_special_tokens=True)`)."""
    device = _input_device(model)
    encoded = tokenizer(prompt, return_tensors="pt")
    # Only what OPT takes: some tokenizers also return token_type_ids.
    inputs = {key: encoded[key].to(device) for key in ("input_ids", "attention_mask")}
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    use_cache, was_training = model.config.use_cache, model.training
    # Eval mode (no dropout) and the KV cache back on: deterministic and fast.
    model.eval()
    model.config.use_cache = True
    try:
        with torch.no_grad(), autocast:
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,  # greedy: the same text every time
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                # Stop where the quotes stopped in training (06 ends each with EOS), even when
                # the model's own generation config names no EOS.
                eos_token_id=tokenizer.eos_token_id,
            )
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)
    return tokenizer.decode(output[0], skip_special_tokens=True)


if __name__ == "__main__":
    from lora_kata.capstone.run import main

    raise SystemExit(main(__package__))
