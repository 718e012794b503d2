"""Adapter files in peft's format (exercise 09).

A LoRA fine-tune's result is tiny: the A and B matrices and the settings that built them.
peft stores them as two files in a directory, and so do we, so that each side loads the other's:

    adapter_config.json        {"peft_type": "LORA", "r": 16, "lora_alpha": 32, ...}
    adapter_model.safetensors  base_model.model.<module>.lora_A.weight  (r, in_features)
                               base_model.model.<module>.lora_B.weight  (out_features, r)

<module> is the wrapped layer's dotted name in the base model, e.g.
model.decoder.layers.0.self_attn.q_proj. Tensors go in safetensors, never a pickle: loading a
pickle (torch.load, adapter_model.bin) can run arbitrary code from whoever made the file.
Lesson: lessons/en/09-adapter-files.md.
"""

from __future__ import annotations

import json  # noqa: F401  (save_adapter and load_adapter need these imports)
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import safetensors.torch  # noqa: F401
import torch

from .inject import LoRAConfig, find_target_modules, inject_lora  # noqa: F401
from .lora import LoRALinear  # noqa: F401

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
    """Write `model`'s LoRA weights and `config` to `directory` in peft's format.

    - ValueError if config.bias is not "none" (trained biases would be lost), or if a
      LoRALinear's r / alpha differ from config.r / config.lora_alpha.
    - Tensors: for each LoRALinear in model.named_modules(), under its dotted name <name>:
          "base_model.model.<name>.lora_A.weight" -> lora_A, "...lora_B.weight" -> lora_B
      detached, on the CPU, contiguous. No adapter name (".default") in the keys.
      ValueError if there is none (nothing injected).
    - Config (adapter_config.json, json.dumps(..., indent=2, sort_keys=True)):
          peft_type "LORA", task_type "CAUSAL_LM", base_model_name_or_path (the argument, else
          model.config._name_or_path if any, else None), r, lora_alpha, lora_dropout,
          target_modules (a sorted list, or the regex string as is), bias,
          fan_in_fan_out False, use_rslora False, use_dora False, inference_mode True.
    - Write both files with _write_files_atomically(Path(directory), {WEIGHTS_NAME: ...,
      CONFIG_NAME: ...}); the weights with safetensors.torch.save_file(tensors, path,
      metadata={"format": "pt"}). The files honour the umask (mode 0o666 minus the umask:
      0o644 under umask 022, 0o600 under 077); the helper takes care of that.
    """
    # TODO(09): collect the tensors under peft's keys, build the config dict, write both files.
    raise NotImplementedError("Exercise 09: save_adapter")


def load_adapter(model, directory) -> torch.nn.Module:
    """Inject LoRA into the base `model` as `directory`'s config says and load its weights.

    Reads adapter files written by save_adapter or by peft's save_pretrained.
    - FileNotFoundError if CONFIG_NAME is missing. If WEIGHTS_NAME is missing: ValueError when
      PICKLE_WEIGHTS_NAME is there (never unpickle it: no torch.load, no pickle), else
      FileNotFoundError. ValueError if the model already has a LoRALinear.
    - Read the JSON; _check_supported(data, path); LoRAConfig(r, lora_alpha, target_modules,
      lora_dropout, bias) from it.
    - tensors = safetensors.torch.load_file(weights path).
    - Before touching the model: for each name in find_target_modules(model, targets), the
      expected keys "base_model.model.<name>.lora_A.weight" (shape (r, in_features)) and
      ".lora_B.weight" ((out_features, r)). Any missing key, unexpected key or shape mismatch
      -> one ValueError naming the file and listing them all.
    - inject_lora(model, config), copy each tensor into its lora_A / lora_B (no grad, on the
      parameter's device and dtype), return the model.
    """
    # TODO(09): check the files, rebuild the config, check keys and shapes, inject, copy.
    raise NotImplementedError("Exercise 09: load_adapter")
