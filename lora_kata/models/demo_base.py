"""A small base model that has learned some English: shipped with the kata, ready to load.

The offline capstone needs a base that has learned something: LoRA on a model with random
weights can barely move its loss (its tied output layer is tiny and frozen), so the learner
never sees what an adapter does. The demo base is a small OPT (hidden 128, 4 layers, about
0.6 M parameters) pretrained for 700 steps on English text every Python install carries (the
reference documentation in `pydoc_data.topics`, "</s>" before every paragraph) with the kata's
quotes tokenizer. Its weights ship in data/demo-base/ (fp16 safetensors, 1.2 MB): pretraining
takes minutes on a busy 2-core CPU (203 s at load average 6), and shipped weights give every
machine the same base, the one lesson 10 shows. The first use writes an fp32 copy under
`.lora_kata/demo-base-<key>/` (a few seconds), which from_pretrained loads like any
checkpoint. It knows Python's documentation, not quotes.

Rebuild the shipped files (after changing SETTINGS, STEPS or the tokenizer):

    python -m lora_kata.models.demo_base --rebuild     # minutes; then commit data/demo-base/
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
SHIPPED = REPO_ROOT / "data" / "demo-base"
SHIPPED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
SETTINGS = dict(
    hidden_size=128,
    num_hidden_layers=4,
    ffn_dim=256,
    num_attention_heads=4,
    word_embed_proj_dim=128,
    max_position_embeddings=128,
)
STEPS = 700
BATCH, WINDOW, LR, SEED = 16, 64, 3e-3, 0
DESCRIPTION = (
    "a small OPT (hidden 128, 4 layers, 0.6 M parameters) pretrained for "
    f"{STEPS} steps on Python's reference documentation (pydoc_data.topics), with the kata's "
    "quotes tokenizer, shipped in data/demo-base/; it has never seen a quote"
)


def documents() -> list[str]:
    """The pretraining text: Python's reference documentation, shipped with Python itself,
    one document per paragraph (as short as quotes, so that the model often sees one end)."""
    from pydoc_data.topics import topics

    return [p.strip() for key in sorted(topics) for p in topics[key].split("\n\n") if p.strip()]


def corpus() -> str:
    return "\n\n".join(documents())


def cache_key() -> str:
    """A hash of the shipped files: a new shipped base gets a new fp32 copy."""
    digest = hashlib.sha1()
    for name in SHIPPED_FILES:
        digest.update((SHIPPED / name).read_bytes())
    return digest.hexdigest()[:10]


def cache_dir() -> Path:
    return CACHE_ROOT / f"demo-base-{cache_key()}"


def _windows(tokenizer, texts: list[str]):
    """Windows of WINDOW tokens from the documents laid end to end, each with the tokenizer's
    "</s>" in front, as the tokenizer puts it in front of every quote: the model learns "</s>"
    as the boundary between texts (a base that never saw it could hardly learn to end a quote
    with it: its tied output row would be an untrained one)."""
    import torch

    ids = [i for text in texts for i in tokenizer(text)["input_ids"]]
    usable = len(ids) // WINDOW * WINDOW
    return torch.tensor(ids[:usable]).view(-1, WINDOW)


def train_demo_base(directory: Path = SHIPPED, echo=print) -> Path:
    """Pretrain the base and save it (fp16 model and tokenizer) into `directory`, atomically."""
    import torch

    from lora_kata.models.tiny import build_tiny_opt, quotes_tokenizer

    # One thread: on a busy 2-core CPU OpenMP's waiting threads made this 6x slower.
    torch.set_num_threads(1)
    tokenizer = quotes_tokenizer()
    windows = _windows(tokenizer, documents())
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
    _save_atomically(directory, model.half(), tokenizer)
    return directory


def _save_atomically(directory: Path, model, tokenizer) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" for a small model: noise
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-base-", dir=directory.parent))
    staging.chmod(0o755)  # mkdtemp's 0o700 would stay on the folder
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def demo_base_path() -> Path:
    """The fp32 copy of the shipped demo base, written first if it is not there yet."""
    directory = cache_dir()
    if not (directory / "config.json").is_file():
        import torch
        from transformers import AutoTokenizer, OPTForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" for a 1.3 MB file: noise
        model = OPTForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32)
        _save_atomically(directory, model, AutoTokenizer.from_pretrained(SHIPPED))
    return directory


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lora_kata.models.demo_base")
    parser.add_argument("--rebuild", action="store_true", help=f"pretrain again into {SHIPPED}")
    if parser.parse_args().rebuild:
        print(f"pretraining the demo base ({STEPS} steps) into {SHIPPED}:")
        train_demo_base(SHIPPED)
    else:
        parser.print_help()
