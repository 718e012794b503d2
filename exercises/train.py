"""One optimisation step with gradient accumulation, and the warmup schedule (exercise 08).

The tutorial's Trainer ran batch 4 × gradient accumulation 4 = 16 examples per optimizer
step, lr 2e-4 warmed up linearly over 100 steps then decayed linearly to 0 at step 200, in fp16.
This is that loop body, written out.
Lesson: lessons/en/08-training-step.md.
"""

from __future__ import annotations

import contextlib  # noqa: F401  (contextlib.nullcontext() is a do-nothing `with`)

import torch


def linear_warmup_lr(step: int, *, base_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based): the schedule of
    transformers.get_linear_schedule_with_warmup.

        step < warmup_steps:  base_lr · step / warmup_steps          (0 at step 0)
        otherwise:            base_lr · max(0, (max_steps − step) / (max_steps − warmup_steps))

    Denominators are at least 1 (so warmup_steps = 0 or max_steps = warmup_steps divide by 1).
    linear_warmup_lr(50, base_lr=2e-4, warmup_steps=100, max_steps=200) == 1e-4
    """
    # TODO(08): return base_lr times the warmup or the decay factor (compute the factor first).
    raise NotImplementedError("Exercise 08: linear_warmup_lr")


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first real parameter (where the batches must go)."""
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

    - ValueError for an empty list. model.train(); move each batch's tensors to
      _model_device(model).
    - For each micro-batch: forward (inside torch.autocast(device_type=device.type,
      dtype=autocast_dtype) when autocast_dtype is not None, else plain fp32), take
      loss = outputs.loss.float() / len(micro_batches), and backward it — through
      scaler.scale(loss) when a GradScaler is given. Do not zero gradients in between:
      .grad accumulates across backward calls.
    - Then one optimizer step (scaler.step(optimizer); scaler.update() with a scaler, else
      optimizer.step()), one scheduler.step() if a scheduler is given, and
      optimizer.zero_grad(set_to_none=True).
    - Return the mean of the micro-batch losses as a float.
    """
    # TODO(08): accumulate the scaled-down losses' gradients, then step once and zero.
    raise NotImplementedError("Exercise 08: train_step")
