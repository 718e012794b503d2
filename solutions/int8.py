"""8-bit loading and preparation for training (exercise 07).

LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339) stores every nn.Linear weight of the
decoder as int8 with one absmax scale per row, and multiplies the few outlier features in fp16.
A model loaded that way needs care before anything can be trained through it. The tutorial
made one call for it, peft's prepare_model_for_int8_training(model) (since removed; today
prepare_model_for_kbit_training). In the version the tutorial follows (the PEFT example
notebook as of peft commit 1a1cfe3, 3 May 2023) that call froze every parameter, cast every
fp16/bf16 parameter to fp32, made the input embeddings' output require grad and turned on
(reentrant) gradient checkpointing; it left lm_head's output alone. Here you write those steps
yourself, with non-reentrant checkpointing, and cast the logits to fp32 as the notebook's first,
hand-written versions (February 2023) did with CastOutputToFloat.
Lesson: lessons/en/07-int8-preparation.md.
"""

from __future__ import annotations

import torch
from torch import nn


def load_in_8bit(name_or_path: str, *, device_map=None) -> nn.Module:
    """A causal LM with every decoder nn.Linear quantized to int8 (bitsandbytes Linear8bitLt)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    # The tutorial's from_pretrained(..., load_in_8bit=True) is gone: today the quantization
    # settings travel in a BitsAndBytesConfig.
    return AutoModelForCausalLM.from_pretrained(
        name_or_path,
        quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        device_map=device_map,
    )


def _make_output_require_grad(module, args, output):
    output.requires_grad_(True)


def _cast_output_to_fp32(module, args, output):
    return output.float()


def _enable_checkpointing(model: nn.Module, kwargs: dict) -> None:
    """activation_checkpointing_enable where it exists (transformers 5.24: non-reentrant by
    default, said explicitly anyway); older releases only have gradient_checkpointing_enable,
    which 5.24 keeps as a deprecated alias that warns of its removal in v6."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_for_int8_training(
    model: nn.Module, use_gradient_checkpointing: bool = True
) -> nn.Module:
    """Freeze, upcast 16-bit non-int8 parameters, hook the embeddings, checkpoint, fp32 logits."""
    for param in model.parameters():
        # Frozen: only the LoRA weights, injected afterwards, will train.
        param.requires_grad_(False)
    for param in model.parameters():
        # Layer norms, biases and embeddings are fragile in 16-bit under training; int8
        # weights are not floating point and must stay int8 (×4 memory, and Linear8bitLt
        # could no longer use them).
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)
    # With every weight frozen, the hidden states entering the first block need no grad; a
    # reentrant checkpoint would then drop the LoRA gradients. This hook makes them need one.
    model.get_input_embeddings().register_forward_hook(_make_output_require_grad)
    if use_gradient_checkpointing:
        # Keep each block's input only and recompute the rest in backward; use_reentrant=False
        # is the variant PyTorch recommends (works with frozen inputs and torch.autograd.grad).
        # transformers hooks the input embeddings here too; ours above also covers the
        # no-checkpointing case.
        _enable_checkpointing(model, {"use_reentrant": False})
    # The PEFT example's CastOutputToFloat, as a hook so that module names do not change: logits
    # feed a softmax over the whole vocabulary, which fp16 does not hold well.
    model.get_output_embeddings().register_forward_hook(_cast_output_to_fp32)
    return model
