"""A small base model that has learned some English, trained once on this machine and cached.

The offline capstone and the experiments need a base that has learned something: LoRA on a
model with random weights can barely move its loss (its tied output layer is tiny and frozen),
so the learner never sees what an adapter does. This module pretrains a small OPT (hidden 128,
4 layers, about 0.6 M parameters) for about a minute on English text every Python install
carries — the reference documentation in `pydoc_data.topics` — with the kata's quotes
tokenizer, and caches it under `.lora_kata/demo-base-<key>/`. Nothing is downloaded. The base
knows Python's documentation, not quotes: fine-tuning on the quotes then changes it visibly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from lora_kata import REPO_ROOT

CACHE_ROOT = REPO_ROOT / ".lora_kata"
SETTINGS = dict(
    hidden_size=128,
    num_hidden_layers=4,
    ffn_dim=256,
    num_attention_heads=4,
    word_embed_proj_dim=128,
    max_position_embeddings=128,
)
# LORA_KATA_DEMO_STEPS shortens the pretraining (the tests use it; the cache key includes it).
STEPS = int(os.environ.get("LORA_KATA_DEMO_STEPS") or 700)
BATCH, WINDOW, LR, SEED = 16, 64, 3e-3, 0
DESCRIPTION = (
    "a small OPT (hidden 128, 4 layers, 0.6 M parameters) pretrained on this machine for "
    f"{STEPS} steps on Python's reference documentation (pydoc_data.topics), with the kata's "
    "quotes tokenizer; it has never seen a quote"
)


def corpus() -> str:
    """The pretraining text: Python's reference documentation, shipped with Python itself."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def cache_key() -> str:
    text = corpus()
    fingerprint = f"{sorted(SETTINGS.items())}|{STEPS}|{BATCH}|{WINDOW}|{LR}|{SEED}|{len(text)}"
    return hashlib.sha1((fingerprint + text[:10000]).encode()).hexdigest()[:10]


def cache_dir() -> Path:
    return CACHE_ROOT / f"demo-base-{cache_key()}"


def _windows(tokenizer, text: str):
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    usable = len(ids) // WINDOW * WINDOW
    return torch.tensor(ids[:usable]).view(-1, WINDOW)


def train_demo_base(directory: Path, echo=print) -> Path:
    """Pretrain the base and save it (model and tokenizer) into `directory`, atomically."""
    import torch

    from lora_kata.models.tiny import build_tiny_opt, quotes_tokenizer

    tokenizer = quotes_tokenizer()
    windows = _windows(tokenizer, corpus())
    model = build_tiny_opt(SEED, **SETTINGS).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=STEPS)
    generator = torch.Generator().manual_seed(SEED)
    started = time.monotonic()
    for step in range(STEPS):
        rows = windows[torch.randint(len(windows), (BATCH,), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == STEPS - 1:
            seconds = time.monotonic() - started
            echo(f"  step {step:4d}/{STEPS}  loss {loss.item():.3f}  ({seconds:.0f} s)")
    model.eval()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" for a 2.5 MB model: noise
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-base-", dir=directory.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def demo_base_path(echo=print) -> Path:
    """The cached demo base's directory, trained first if it is not there yet."""
    directory = cache_dir()
    if not (directory / "config.json").is_file():
        echo(f"Building the demo base once (about a minute; cached in {directory}):")
        train_demo_base(directory, echo)
    return directory
