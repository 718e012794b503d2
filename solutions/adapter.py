"""Adapter files in peft's format (exercise 09).

A LoRA fine-tune's result is tiny: the A and B matrices and the settings that built them.
peft stores them as two files in a directory, and so do we, so that each side loads the other's:

    adapter_config.json        {"peft_type": "LORA", "r": 16, "lora_alpha": 32, ...}
    adapter_model.safetensors  base_model.model.<module>.lora_A.weight  (r, in_features)
                               base_model.model.<module>.lora_B.weight  (out_features, r)

<module> is the wrapped layer's dotted name in the base model, e.g.
model.decoder.layers.0.self_attn.q_proj. Tensors go in safetensors, never a pickle: loading a
pickle (torch.load, adapter_model.bin) can run arbitrary code from whoever made the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch

from .inject import LoRAConfig, find_target_modules, inject_lora
from .lora import LoRALinear

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"


def _write_files_atomically(directory: Path, writers: dict[str, Callable[[str], None]]) -> None:
    """Create each file `directory/name` by calling `writers[name](temporary_path)`.

    All the files are written (and fsynced) to temporary files in `directory` first; only when
    every one succeeded do they replace the old files (os.replace, atomic on one file system).
    A failure midway deletes the temporary files and leaves the previous files untouched.
    The files get the permissions any new file gets (0o666 minus the umask, as open() gives),
    not mkstemp's private 0o600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    temporary: dict[str, str] = {}
    try:
        for name, write in writers.items():
            handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            os.close(handle)
            temporary[name] = path
            write(path)
            with open(path, "rb") as written:
                os.fsync(written.fileno())  # on disk before it takes the real name
            os.chmod(path, 0o666 & ~_current_umask())
        for name, path in temporary.items():
            os.replace(path, directory / name)
    finally:
        for path in temporary.values():
            if os.path.exists(path):
                os.remove(path)


def _current_umask() -> int:
    """The process's umask. os.umask can only set it (returning the old one), so set it and
    put it straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What peft can store but our LoRALinear cannot reproduce: loading such a file would give
# different outputs without a word, so we refuse it.
_UNSUPPORTED = {
    "use_rslora": (False, "rank-stabilised scaling α/√r"),
    "use_dora": (False, "DoRA (weight-decomposed LoRA)"),
    "fan_in_fan_out": (False, "transposed (Conv1D) weights"),
    "rank_pattern": ({}, "a different r per layer"),
    "alpha_pattern": ({}, "a different lora_alpha per layer"),
    "modules_to_save": (None, "fully trained extra modules"),
    "layers_to_transform": (None, "LoRA on some layers only"),
}


def _check_supported(data: dict, path: Path) -> None:
    """ValueError if the adapter config lacks a setting we need, or asks for something
    LoRALinear does not do."""
    lacking = [key for key in ("r", "lora_alpha", "target_modules") if key not in data]
    if lacking:
        # peft would fall back to its defaults (lora_alpha=8, ...): a silently wrong scaling.
        raise ValueError(f"{path} lacks {', '.join(lacking)}: cannot rebuild the LoRA layers")
    if data.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type is {data.get('peft_type')!r}; only LORA is supported")
    for key, (plain, meaning) in _UNSUPPORTED.items():
        if data.get(key) not in (plain, None, {}, []):
            raise ValueError(
                f"{path}: {key}={data[key]!r} ({meaning}) is not supported by this kata's "
                "LoRALinear; loading it would silently compute something else"
            )
    if data.get("bias", "none") != "none":
        raise ValueError(
            f"{path}: bias={data['bias']!r}: adapters with trained biases are not supported "
            "(only bias='none', the tutorial's setting)"
        )


def save_adapter(model, directory, config: LoRAConfig, *, base_model_name_or_path=None) -> None:
    """Write `model`'s LoRA weights and `config` to `directory` in peft's format."""
    if config.bias != "none":
        # peft would also save every trained bias; we only know how to write A and B.
        raise ValueError(
            f"save_adapter writes LoRA weights only, but config.bias is {config.bias!r}: its "
            "trained biases would be lost. Use bias='none' (the tutorial's setting)."
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoRALinear):
            continue
        if module.r != config.r or module.alpha != config.lora_alpha:
            raise ValueError(
                f"{name} has r={module.r}, alpha={module.alpha} but the config says "
                f"r={config.r}, lora_alpha={config.lora_alpha}: save with the config the "
                "model was injected with"
            )
        # PeftModel wraps the model twice (PeftModel.base_model is a LoraModel whose .model is
        # ours): its parameter names start "base_model.model.". No adapter name (".default")
        # is stored: peft adds it back on load.
        prefix = f"base_model.model.{name}"
        # safetensors wants contiguous CPU tensors that share no memory.
        tensors[f"{prefix}.lora_A.weight"] = module.lora_A.detach().to("cpu").contiguous()
        tensors[f"{prefix}.lora_B.weight"] = module.lora_B.detach().to("cpu").contiguous()
    if not tensors:
        raise ValueError("the model has no LoRALinear layers: inject_lora before saving")

    _write_adapter(directory, tensors, _adapter_settings(model, config, base_model_name_or_path))


def _adapter_settings(model, config: LoRAConfig, base_model_name_or_path) -> dict:
    """adapter_config.json's settings for a plain LoRA adapter (save_dora_adapter adds DoRA's)."""
    if base_model_name_or_path is None:  # as peft: where the base model came from, if known
        base_model_name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None)
    target_modules = config.target_modules
    if not isinstance(target_modules, str):
        target_modules = sorted(target_modules)  # peft stores a set, written sorted
    settings = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path or None,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": target_modules,
        "bias": config.bias,
        # Say what our layer computes, so that peft does not guess: W·x (not Conv1D's x·W),
        # α/r (not α/√r), no DoRA; and a saved adapter loads for inference.
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    return settings


def _write_adapter(directory, tensors: dict[str, torch.Tensor], settings: dict) -> None:
    """The two files, written together atomically (see _write_files_atomically)."""
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"

    def write_config(path: str) -> None:
        Path(path).write_text(text, encoding="utf-8")

    def write_weights(path: str) -> None:
        safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})

    _write_files_atomically(
        Path(directory), {WEIGHTS_NAME: write_weights, CONFIG_NAME: write_config}
    )


def load_adapter(model, directory) -> torch.nn.Module:
    """Inject LoRA into the base `model` as `directory`'s config says and load its weights.

    Reads adapter files written by save_adapter or by peft's save_pretrained. Everything is
    checked before the model is touched: a missing or unexpected key, or a tensor of the wrong
    shape, raises ValueError naming them (peft itself only warns, and loads nothing).
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: an adapter directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if not weights_path.is_file():
        if (directory / PICKLE_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"{directory} holds only {PICKLE_WEIGHTS_NAME}, a pickle: loading it could run "
                "arbitrary code, so load_adapter never does. If you trust it, convert it once "
                "with peft (PeftModel.from_pretrained(...).save_pretrained(dir)) to safetensors."
            )
        raise FileNotFoundError(f"{weights_path} not found")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError(
            "the model already has LoRA layers: load an adapter into a fresh base model"
        )

    data = json.loads(config_path.read_text(encoding="utf-8"))
    _check_supported(data, config_path)
    targets = data["target_modules"]
    config = LoRAConfig(
        r=data["r"],
        lora_alpha=data["lora_alpha"],
        target_modules=targets if isinstance(targets, str) else list(targets),
        lora_dropout=data.get("lora_dropout", 0.0),
        bias=data.get("bias", "none"),
    )
    # safetensors holds only tensors: reading it cannot run code (unlike torch.load).
    tensors = safetensors.torch.load_file(weights_path)

    # The keys and shapes this model and config need, checked before anything is changed.
    modules = dict(model.named_modules())
    expected: dict[str, tuple[str, str, tuple[int, int]]] = {}  # key -> (module, A or B, shape)
    for name in find_target_modules(model, config.target_modules):
        layer = modules[name]
        key = f"base_model.model.{name}"
        expected[f"{key}.lora_A.weight"] = (name, "lora_A", (config.r, layer.in_features))
        expected[f"{key}.lora_B.weight"] = (name, "lora_B", (layer.out_features, config.r))
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{key}: file {tuple(tensors[key].shape)}, model needs {shape}"
        for key, (_, _, shape) in expected.items()
        if key in tensors and tuple(tensors[key].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched}")
    if problems:
        raise ValueError(
            f"{weights_path} does not fit this model and its config: {'; '.join(problems)}. "
            "Is it an adapter for another base model, or were target_modules or r changed? "
            "(Keys read 'base_model.model.<module>.lora_A.weight' and '.lora_B.weight'.)"
        )

    inject_lora(model, config)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, tensor in tensors.items():
            name, which, _ = expected[key]
            parameter = getattr(modules[name], which)
            parameter.copy_(tensor.to(device=parameter.device, dtype=parameter.dtype))
    return model
