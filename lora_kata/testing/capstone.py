"""Shared code for exercise 10's tests: the CPU dry run and the GPU run take the same path.

    load_prepared (the CLI's own: load_in_8bit → prepare_for_int8_training → inject_lora)
    → fingerprints of every non-LoRA tensor → loss on a fixed batch → finetune
    → loss on the fixed batch again, memory, fingerprints again

Nothing here is an exercise. transformers, peft and bitsandbytes are imported inside functions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.capstone.models import input_device, load_prepared
from lora_kata.capstone.settings import LORA_SETTINGS
from lora_kata.messages import msg

# Where the GPU test leaves its metrics and loss plot (CI uploads it as an artifact).
ARTIFACTS = Path(os.environ.get("LORA_KATA_ARTIFACTS", REPO_ROOT / ".lora_kata" / "capstone"))


def gpu_skip_reason() -> str | None:
    """Why the GPU test cannot run here, precisely; None when it can."""
    import torch

    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return msg("10.no_cuda_torch_built_without", torch=torch.__version__)
        return msg(
            "10.no_cuda_device_seen",
            torch=torch.__version__,
            cuda=torch.version.cuda,
            visible=os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        )
    try:
        import bitsandbytes
        from bitsandbytes import cextension
    except ImportError as error:
        return msg("10.bitsandbytes_not_importable", error=error)
    if not getattr(cextension.lib, "compiled_with_cuda", False):
        return msg(
            "10.bitsandbytes_without_cuda",
            version=bitsandbytes.__version__,
            lib=type(cextension.lib).__name__,
        )
    return None


def lora_formula(model, r: int = LORA_SETTINGS["r"]) -> int:
    """Σ r·(in + out) over the layers the tutorial targets (q_proj, v_proj), read from the
    frozen layers themselves (after injection each sits at `<name>.base`)."""
    targets = tuple(LORA_SETTINGS["target_modules"])
    total = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets:
            layer = getattr(module, "base", module)
            total += r * (layer.in_features + layer.out_features)
    return total


def fingerprints(model) -> dict[str, str]:
    """sha256 of every non-LoRA tensor's bytes (int8 weights, their scales, norms, embeddings):
    exact like torch.equal, yet without a second copy of a 6.7B model in memory."""
    import torch

    prints = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name or not isinstance(tensor, torch.Tensor):
            continue
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
        prints[name] = f"{tensor.dtype}:{tuple(tensor.shape)}:{hashlib.sha256(raw).hexdigest()}"
    return prints


def lora_tensors(model) -> dict[str, object]:
    return {
        name: p.detach().float().cpu().clone()
        for name, p in model.named_parameters()
        if "lora_" in name
    }


def fixed_batch(tokenizer, quotes: list[str], max_length: int) -> dict:
    """A right-padded batch with labels (-100 on padding), built without the learner's code."""

    encoded = tokenizer(
        quotes, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    labels = encoded["input_ids"].clone()
    labels[encoded["attention_mask"] == 0] = -100
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": labels,
    }


def eval_outputs(model, batch: dict):
    """(loss, logits in fp32 on the CPU) in eval mode, without gradients, mode restored."""
    import torch

    device = input_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        model.train(was_training)
    return float(out.loss), out.logits.float().cpu()


@dataclass
class CapstoneRun:
    """Everything a capstone run measured; the tests assert on it."""

    model: object
    tokenizer: object
    config: object
    model_path: str
    settings: dict
    formula: int
    trainable: int
    trainable_names: list[str]
    fingerprints_before: dict[str, str]
    lora_before: dict[str, object]
    eval_batch: dict
    eval_loss_before: float
    eval_loss_after: float | None = None
    losses: list = field(default_factory=list)
    gpu_loaded_bytes: int | None = None
    gpu_peak_bytes: int | None = None


def prepare_run(impl, model_path: str, quotes: list[str], settings: dict, *, device_map=None):
    """Load, prepare and inject with `impl`'s pieces, and record the 'before' state."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, tokenizer, config = load_prepared(impl, model_path, device_map=device_map)
    loaded = torch.cuda.memory_allocated() if cuda else None
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    batch = fixed_batch(tokenizer, quotes, model.config.max_position_embeddings)
    loss_before, _ = eval_outputs(model, batch)
    return CapstoneRun(
        model=model,
        tokenizer=tokenizer,
        config=config,
        model_path=model_path,
        settings=dict(settings),
        formula=lora_formula(model),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        trainable_names=trainable_names,
        fingerprints_before=fingerprints(model),
        lora_before=lora_tensors(model),
        eval_batch=batch,
        eval_loss_before=loss_before,
        gpu_loaded_bytes=loaded,
    )


def train_run(run: CapstoneRun, finetune_module, dataset) -> CapstoneRun:
    """finetune with run.settings; then the 'after' state (loss, memory)."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run.losses = finetune_module.finetune(
        run.model, run.tokenizer, dataset, progress=False, **run.settings
    )
    if cuda:
        run.gpu_peak_bytes = torch.cuda.max_memory_allocated()
    run.eval_loss_after, _ = eval_outputs(run.model, run.eval_batch)
    return run


def greedy_reference(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding written out (argmax, no cache, eval mode): what generate must return."""
    import torch

    device = input_device(model)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
    eos = tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(input_ids=ids, use_cache=False).logits[:, -1, :]
                next_id = logits.float().argmax(dim=-1, keepdim=True)
                ids = torch.cat([ids, next_id], dim=-1)
                if eos is not None and next_id.item() == eos:
                    break
    finally:
        model.train(was_training)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def plot_and_record(run: CapstoneRun, directory: Path, extra: dict) -> Path:
    """Write metrics.json and loss.png for the CI artifact; returns the directory."""
    import json

    from lora_kata.capstone.outputs import plot_losses

    directory.mkdir(parents=True, exist_ok=True)
    plot_losses([float(x) for x in run.losses], directory / "loss.png", run.model_path)
    record = {
        "model": run.model_path,
        "settings": run.settings,
        "trainable": run.trainable,
        "formula": run.formula,
        "losses": [float(x) for x in run.losses],
        "eval_loss_before": run.eval_loss_before,
        "eval_loss_after": run.eval_loss_after,
        "gpu_memory_loaded_bytes": run.gpu_loaded_bytes,
        "gpu_memory_peak_bytes": run.gpu_peak_bytes,
        **extra,
    }
    (directory / "metrics.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return directory
