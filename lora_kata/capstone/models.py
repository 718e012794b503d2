"""Which model the capstone trains, and loading it the tutorial's way.

Model choice: `--model` (a hub id or a local directory) if given; otherwise facebook/opt-125m
when it is already in the local Hugging Face cache; otherwise the demo base: a small OPT
pretrained on Python's documentation with the quotes tokenizer, shipped in data/demo-base/ and
copied in fp32 under .lora_kata/ on first use (models/demo_base.py), so that the fine-tune
visibly changes it. `--small` instead takes a small OPT with random weights, saved to
<out>/base-model: a pipeline check in seconds. Either is loaded through from_pretrained like
any other model. Nothing is downloaded unless `--model` names a hub model that is not cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lora_kata.capstone.pieces import load_quantized
from lora_kata.capstone.settings import CACHED_DEFAULT, LORA_SETTINGS, SMALL_OPT

DEMO, RANDOM = "demo", "random"


@dataclass
class ModelChoice:
    path: str  # what from_pretrained loads (hub id or directory)
    name: str  # what the adapter config records as base_model_name_or_path
    why: str
    base: str = ""  # DEMO or RANDOM for a small OPT built here, else ""

    @property
    def small(self) -> bool:
        """A small OPT built here (the demo base, or random weights with --small)."""
        return bool(self.base)

    def build(self) -> None:
        """Write the small OPT where `path` says, if it is one and is not there yet."""
        if self.base == RANDOM:
            build_small_opt(self.path)
        elif self.base == DEMO:
            from lora_kata.models.demo_base import demo_base_path

            demo_base_path()


def cached_snapshot(repo_id: str = CACHED_DEFAULT) -> Path | None:
    """The local snapshot directory of `repo_id` if config, weights and tokenizer are all in
    the Hugging Face cache (looked up offline), else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    tokenizer = (snapshot / "tokenizer.json").is_file() or all(
        (snapshot / f).is_file() for f in ("vocab.json", "merges.txt")
    )
    if any((snapshot / w).is_file() for w in weights) and tokenizer:
        return snapshot
    return None


def build_small_opt(directory: str | Path, seed: int = 0) -> Path:
    """The built-in small OPT (random weights) and the quotes tokenizer, saved to `directory`
    so that it is loaded in 8-bit through the same from_pretrained path as a real model."""
    from transformers.utils import logging as hf_logging

    from lora_kata.models.tiny import save_tiny_opt

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" for a 3.6 MB model: noise
    try:
        return save_tiny_opt(directory, seed=seed, **SMALL_OPT)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def choose_model(
    model: str | None, out: Path, *, small: bool = False, build: bool = True
) -> ModelChoice:
    """See the module docstring. build=False names the small OPT's directory without writing
    it (data parallel: rank 0 builds it, the other ranks wait and load it)."""
    if model:
        return ModelChoice(model, model, "--model")
    if not small:
        snapshot = cached_snapshot()
        if snapshot is not None:
            return ModelChoice(
                str(snapshot),
                CACHED_DEFAULT,
                f"found in the local Hugging Face cache: {snapshot}",
            )
        from lora_kata.models.demo_base import cache_dir

        why = f"--model not given and {CACHED_DEFAULT} is not in the local Hugging Face cache"
        choice = ModelChoice(str(cache_dir()), str(cache_dir()), why, DEMO)
    else:
        directory = out / "base-model"
        choice = ModelChoice(str(directory), str(directory), "--small", RANDOM)
    if build:
        choice.build()
    return choice


def load_prepared(
    impl,
    path: str,
    *,
    device_map=None,
    quant: str = "8bit",
    lora_dropout: float | None = None,
    cuda: bool = False,
):
    """load (8-bit, or 4-bit with --quant 4bit) → prepare_for_int8_training → inject_lora
    (the tutorial's LoRA), with the implementation's own pieces.
    Returns (model, tokenizer, LoRAConfig)."""
    from transformers import AutoTokenizer

    model = load_quantized(impl, path, quant, device_map=device_map, cuda=cuda)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = impl.int8.prepare_for_int8_training(model)  # before injecting: it freezes all
    settings = dict(LORA_SETTINGS)
    if lora_dropout is not None:
        settings["lora_dropout"] = lora_dropout
    config = impl.inject.LoRAConfig(**settings)
    model = impl.inject.inject_lora(model, config)
    return model, tokenizer, config


def input_device(model):
    return model.get_input_embeddings().weight.device
