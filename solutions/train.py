"""One optimisation step with gradient accumulation, and the warmup schedule (exercise 08).

The tutorial's Trainer ran batch 4 × gradient accumulation 4 = 16 examples per optimizer
step, lr 2e-4 warmed up linearly over 100 steps then decayed linearly to 0 at step 200, in fp16.
This is that loop body, written out.
"""

from __future__ import annotations

import contextlib

import torch


def linear_warmup_lr(step: int, *, base_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based): the schedule of
    transformers.get_linear_schedule_with_warmup.

        step < warmup_steps:  base_lr · step / warmup_steps          (0 at step 0)
        otherwise:            base_lr · max(0, (max_steps − step) / (max_steps − warmup_steps))

    Denominators are at least 1 (so warmup_steps = 0 or max_steps = warmup_steps divide by 1).
    """
    # Same arithmetic as transformers' lambda (factor first, then × base_lr): LambdaLR computes
    # base_lr * factor, so the two agree to the last bit. Step 0 has lr 0: warmup starts at 0.
    if step < warmup_steps:
        return base_lr * (float(step) / float(max(1, warmup_steps)))
    decay = float(max_steps - step) / float(max(1, max_steps - warmup_steps))
    return base_lr * max(0.0, decay)


def _model_device(model: torch.nn.Module) -> torch.device:
    for param in model.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")


def train_step(
    model,
    micro_batches: list[dict],
    optimizer,
    *,
    scheduler=None,
    scaler=None,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """One optimizer step over len(micro_batches) micro-batches (gradient accumulation).

    Each micro-batch is a dict of tensors the model takes as keyword arguments (input_ids,
    attention_mask, labels), so model(**batch).loss is that micro-batch's mean token loss.
    Returns the mean of those losses, as a float.
    """
    if not micro_batches:
        raise ValueError("train_step needs at least one micro-batch, got an empty list")
    model.train()  # dropout on, and gradient checkpointing (if enabled) only acts in training
    device = _model_device(model)
    n = len(micro_batches)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    total = 0.0
    for batch in micro_batches:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast:
            outputs = model(**batch)
        # Divide by n: the accumulated gradient is then the gradient of the mean loss, the
        # same as one batch of all micro-batches (for equal lengths), whatever n is.
        loss = outputs.loss.float() / n
        # Gradients add up in .grad across backward calls: that *is* the accumulation.
        if scaler is not None:
            scaler.scale(loss).backward()  # fp16 gradients would underflow without the scale
        else:
            loss.backward()
        total += loss.item()
    if scaler is not None:
        scaler.step(optimizer)  # unscales the gradients; skips the step on inf/nan
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()  # once per optimizer step, not per micro-batch
    # Zero afterwards, so the next step starts clean (set_to_none frees the memory too).
    optimizer.zero_grad(set_to_none=True)
    return total
