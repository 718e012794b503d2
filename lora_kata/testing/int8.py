"""8-bit test helpers: a tiny OPT saved in fp16 and loaded with bitsandbytes' LLM.int8() on the
CPU — no GPU, no network (bitsandbytes ≥ 0.48 runs Linear8bitLt forward and backward on CPU).

The tutorial loaded facebook/opt-6.7b, whose checkpoint is fp16, in 8-bit: every nn.Linear in
the decoder becomes a bitsandbytes Linear8bitLt with an int8 weight, and everything else
(embeddings, positions, layer norms, biases; lm_head is tied to the embeddings and never
quantized) stays fp16. `save_tiny_opt_fp16` + `load_tiny_opt_in_8bit` give the same picture in
a 2-layer model that loads in a fraction of a second:

    directory = tiny_opt_fp16_dir()             # saved once per test process
    model = load_tiny_opt_in_8bit(directory)    # a fresh 8-bit model for each test

`load_tiny_opt_in_8bit` is the kata's own reference loader (not the learner's load_in_8bit),
so that tests of later exercises do not depend on exercise 07.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from lora_kata.models.tiny import build_tiny_opt, quotes_tokenizer


def save_tiny_opt_fp16(
    directory: str | Path, seed: int = 0, with_tokenizer: bool = False, **overrides
) -> Path:
    """Save a tiny OPT with fp16 weights (like opt-6.7b's checkpoint), for 8-bit loading."""
    directory = Path(directory)
    model = build_tiny_opt(seed, **overrides).half()
    model.save_pretrained(directory)
    if with_tokenizer:
        quotes_tokenizer(model.config.vocab_size).save_pretrained(directory)
    return directory


@cache
def tiny_opt_fp16_dir(seed: int = 0, with_tokenizer: bool = True) -> Path:
    """A tiny fp16 OPT saved once per process in a temporary directory (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="lora-kata-tiny-opt-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_tiny_opt_fp16(root / "opt", seed=seed, with_tokenizer=with_tokenizer)


def load_tiny_opt_in_8bit(directory: str | Path, dtype=None):
    """from_pretrained with BitsAndBytesConfig(load_in_8bit=True), on the CPU.

    dtype: the dtype of what is not quantized; None keeps the checkpoint's (fp16 here), as the
    tutorial's `torch_dtype=torch.float16` did. Pass torch.bfloat16 for a bf16 model.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    options = {} if dtype is None else {"dtype": dtype}
    return AutoModelForCausalLM.from_pretrained(
        str(directory), quantization_config=BitsAndBytesConfig(load_in_8bit=True), **options
    )


def int8_parameter_names(model) -> list[str]:
    """Names of the parameters stored as int8 (the quantized Linear8bitLt weights)."""
    import torch

    return [name for name, param in model.named_parameters() if param.dtype == torch.int8]


def linear8bit_module_names(model) -> list[str]:
    """Dotted names of the bitsandbytes Linear8bitLt modules, in model order."""
    import bitsandbytes as bnb

    return [
        name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear8bitLt)
    ]


def record_from_pretrained(monkeypatch) -> list[dict]:
    """Patch PreTrainedModel.from_pretrained (still loading) to record the keyword arguments
    of every call; returns the list it appends to. For "the loader passes X on" tests."""
    from transformers import PreTrainedModel

    calls: list[dict] = []
    original = PreTrainedModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        calls.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(recording))
    return calls
