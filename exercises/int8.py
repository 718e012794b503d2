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

import torch  # noqa: F401  (you will want it in prepare_for_int8_training)
from torch import nn


def load_in_8bit(name_or_path: str, *, device_map=None) -> nn.Module:
    """A causal LM with every decoder nn.Linear quantized to int8 (bitsandbytes Linear8bitLt).

    Import inside the function: from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    Return AutoModelForCausalLM.from_pretrained(name_or_path, with
    quantization_config=BitsAndBytesConfig(load_in_8bit=True) and device_map=device_map).
    The tutorial's from_pretrained(..., load_in_8bit=True) keyword no longer exists.
    """
    # TODO(07): from_pretrained with a BitsAndBytesConfig(load_in_8bit=True), passing device_map on.
    raise NotImplementedError("Exercise 07: load_in_8bit")


def prepare_for_int8_training(
    model: nn.Module, use_gradient_checkpointing: bool = True
) -> nn.Module:
    """Make an 8-bit model ready to train adapters through it; returns the same model.

    1. Freeze every parameter (requires_grad False).
    2. Cast every float16 / bfloat16 parameter to float32 (param.data = param.data.to(...)):
       layer norms, biases, embeddings. int8 weights are not floating point: leave them int8.
    3. Make the input embeddings' output require grad, always: a forward hook on
       model.get_input_embeddings() that calls output.requires_grad_(True)
       (or model.enable_input_require_grads()).
    4. If use_gradient_checkpointing, turn on non-reentrant activation (gradient)
       checkpointing with
         model.activation_checkpointing_enable(
             activation_checkpointing_kwargs={"use_reentrant": False})
       Older transformers lack it and have model.gradient_checkpointing_enable(
       gradient_checkpointing_kwargs={"use_reentrant": False}); transformers 5.24 keeps that
       old name only as a deprecated alias (it warns: removed in v6), so call it only when
       hasattr(model, "activation_checkpointing_enable") is False.
    5. Make lm_head's output float32 (the PEFT example's CastOutputToFloat): a forward hook on
       model.get_output_embeddings() that returns output.float(). Do not change its weight.
    """
    # TODO(07): freeze, upcast 16-bit non-int8 params, hook the embeddings, checkpoint, fp32 logits.
    raise NotImplementedError("Exercise 07: prepare_for_int8_training")
