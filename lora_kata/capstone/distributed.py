"""Data parallel: the capstone's command under torchrun (or accelerate launch --multi_gpu).

torchrun starts N copies of the command and tells each its place in environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); accelerate launch --multi_gpu calls
torchrun. Every rank loads its own copy of the model (on CUDA: 8-bit on its own GPU,
device_map={"": LOCAL_RANK}); the ranks talk through torch.distributed, gloo on the CPU and
NCCL on GPUs.

The learner's exercise-10 `finetune` is not changed. It already builds each step's global batch
(grad_accum micro-batches, in an order fixed by the seed, so every rank builds the same one)
and hands it to `train_step`. While it runs, three things are added around it:

1. `share_micro_batches`: the `train_step` that finetune calls by name is wrapped so that rank r
   trains on micro-batches r, r + N, r + 2N, ... of each step (whole micro-batches, so each
   keeps its own mean token loss, exactly as in one process; grad_accum must be a multiple of
   N), and returns the mean of the ranks' losses, so finetune records what one process would.
2. `average_gradients_after_backward`: after every backward, each trainable (LoRA) gradient
   is averaged over the ranks. Averaging is linear, so averaging the running sum after each
   micro-batch equals averaging once at the end: the gradient at the optimizer step is what one
   process would hold. Frozen weights never have gradients, so nothing else is sent.
3. Every rank holds the same averaged gradients, bit for bit, so with fp16 and a GradScaler all
   ranks agree on skipping a step (an inf or nan on one rank becomes inf or nan everywhere) and
   keep the same loss scale. A hook in the optimizer's step would come too late for that:
   GradScaler decides to skip before it calls optimizer.step, and a rank that skipped would
   leave the others waiting in the all-reduce forever.

Why hooks and a wrapper rather than DistributedDataParallel: DDP wraps the model, and finetune
needs the model itself (model.config, get_input_embeddings), and DDP's start-up broadcast of
every parameter and buffer would also send the frozen int8 weights. The cost of this design is
one all-reduce of the LoRA gradients per micro-batch instead of one per step: for opt-6.7b's
8.4 M LoRA parameters, 32 MiB per micro-batch.

The same losses as one process: exactly the same maths, so equal to float rounding when LoRA
dropout is 0 (tests/test_data_parallel.py). With dropout, finetune's torch.manual_seed(seed)
seeds every rank alike and each rank draws masks for its own micro-batches, so the masks are
not the ones one process would draw: the losses then agree in distribution, not digit by digit.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


class UsageError(ValueError):
    """A data-parallel run was started in a way that cannot work; the message says how to fix it."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_environment(environ=None) -> World:
    """Read torchrun's RANK, LOCAL_RANK and WORLD_SIZE; one process when they are unset."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return World()
    text = {k: environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    try:
        size = int(text["WORLD_SIZE"])
        rank = int(text["RANK"] if text["RANK"] is not None else 0)
        local_rank = int(text["LOCAL_RANK"] if text["LOCAL_RANK"] is not None else rank)
    except ValueError:
        raise UsageError(
            f"the launcher's environment is not usable: {text}. Start data-parallel runs with "
            "torchrun (or accelerate launch --multi_gpu), which set these."
        ) from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise UsageError(
            f"the launcher's environment is inconsistent: {text} (need 0 ≤ RANK < WORLD_SIZE "
            "and LOCAL_RANK ≥ 0)."
        )
    return World(rank=rank, local_rank=local_rank, size=size)


def check_grad_accum(grad_accum: int, world: World) -> None:
    """Each rank takes whole micro-batches, so their number must divide evenly."""
    if grad_accum % world.size:
        multiple = world.size * max(1, round(grad_accum / world.size))
        raise UsageError(
            f"data parallel gives each of the {world.size} processes whole micro-batches of "
            f"every step, so --grad-accum ({grad_accum}) must be a multiple of {world.size}: "
            f"try --grad-accum {multiple} (and --batch-size to keep the global batch), or "
            f"--nproc-per-node that divides {grad_accum}."
        )


def device_map_for(world: World, requested, *, cuda: bool):
    """A whole copy per rank: {"": LOCAL_RANK} on GPUs, the CPU otherwise. --device-map
    (one model spread over several GPUs) contradicts that, so it is refused."""
    if not world.distributed:
        return requested
    if requested is not None:
        raise UsageError(
            f"--device-map {requested!r} spreads one model over several GPUs, while data "
            "parallel (torchrun) puts a whole copy on each rank's GPU. Drop --device-map, "
            "or run one process (python -m ... --device-map auto) when one GPU cannot hold "
            "the model."
        )
    return {"": world.local_rank} if cuda else None


def start(world: World, *, cuda: bool) -> str | None:
    """Join the process group (NCCL on GPUs, gloo on the CPU); returns the backend."""
    if not world.distributed:
        return None
    import torch
    import torch.distributed as dist

    if cuda:
        count = torch.cuda.device_count()
        if world.local_rank >= count:
            raise UsageError(
                f"rank {world.rank} has LOCAL_RANK {world.local_rank}, but this machine has "
                f"{count} GPU(s): start at most {count} processes per machine "
                f"(torchrun --nproc-per-node {count})."
            )
        torch.cuda.set_device(world.local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)  # env://, from torchrun's variables
    return backend


def stop(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def communication_device(world: World, *, cuda: bool):
    import torch

    return torch.device("cuda", world.local_rank) if cuda else torch.device("cpu")


def broadcast_trainable(model, world: World) -> None:
    """Start every rank from rank 0's LoRA weights (as DDP does), whatever each drew."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for param in model.parameters():
        if param.requires_grad:
            dist.broadcast(param.data, src=0)


def average_gradients_after_backward(model, world: World) -> list:
    """Average each trainable gradient over the ranks after every backward (see the module
    docstring, 2 and 3). Returns the hook handles (call .remove() to undo)."""
    if not world.distributed:
        return []
    import torch.distributed as dist

    def average(param) -> None:
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)  # gloo has no ReduceOp.AVG
        param.grad.div_(world.size)

    return [
        param.register_post_accumulate_grad_hook(average)
        for param in model.parameters()
        if param.requires_grad
    ]


def mean_over_ranks(value: float, world: World, device) -> float:
    if not world.distributed:
        return float(value)
    import torch
    import torch.distributed as dist

    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total) / world.size


@contextlib.contextmanager
def share_micro_batches(finetune_module, world: World, device):
    """While finetune runs, its `train_step` trains this rank's share of each step (see the
    module docstring, 1). Yields a list that counts the wrapped calls: empty afterwards means
    finetune did not call train_step by that name, so every rank trained on the whole global
    batch (still correct, the gradients are averaged, but with no speed-up)."""
    calls: list[int] = []
    original = getattr(finetune_module, "train_step", None)
    if not world.distributed or not callable(original):
        yield calls
        return

    def train_step(model, micro_batches, optimizer, **options):
        micro_batches = list(micro_batches)
        if len(micro_batches) % world.size:
            check_grad_accum(len(micro_batches), world)
        if not _same_on_all_ranks(_fingerprint(micro_batches), world, device):
            raise RuntimeError(
                f"step {len(calls)}: the ranks built different global batches, so splitting "
                "them would skip some quotes and repeat others. finetune's data order must "
                "depend only on its seed (a torch.Generator seeded with it), not on the "
                "process."
            )
        calls.append(len(micro_batches))
        mine = micro_batches[world.rank :: world.size]
        loss = original(model, mine, optimizer, **options)
        return mean_over_ranks(loss, world, device)

    finetune_module.train_step = train_step
    try:
        yield calls
    finally:
        finetune_module.train_step = original


def _fingerprint(micro_batches: list[dict]) -> float:
    """A checksum of the token ids of a step's micro-batches (exact in float64)."""
    import torch

    total = 0.0
    for index, batch in enumerate(micro_batches):
        ids = batch["input_ids"].detach().to("cpu", torch.float64).reshape(-1)
        weights = torch.arange(1, ids.numel() + 1, dtype=torch.float64)
        total += (index + 1) * float((ids * weights).sum() % 1_000_000_007)
    return total


def _same_on_all_ranks(value: float, world: World, device) -> bool:
    import torch
    import torch.distributed as dist

    both = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)  # [max, -min]
    return bool(both[0] == -both[1])
