"""Exercise 07: 8-bit loading and preparation for training (exercises/int8.py).

A tiny OPT is saved with fp16 weights (as facebook/opt-6.7b's checkpoint) and loaded with
bitsandbytes' LLM.int8() on the CPU: its decoder Linears become Linear8bitLt with int8 weights,
everything else stays fp16. prepare_for_int8_training is compared with what peft's
prepare_model_for_kbit_training does to a second, identical load; the part peft leaves out (the
PEFT example notebook's CastOutputToFloat, fp32 logits) is tested on its own. Checkpointing goes
through transformers 5.24's activation_checkpointing_enable, not its deprecated alias.
"""

import pytest
import torch

from lora_kata.impl import implementation
from lora_kata.testing_int8 import (
    int8_parameter_names,
    linear8bit_module_names,
    load_tiny_opt_in_8bit,
    record_from_pretrained,
    tiny_opt_fp16_dir,
)

int8 = implementation("int8")

TOKENS = torch.tensor([[2, 17, 101, 33, 250, 8, 77, 5], [2, 64, 9, 400, 12, 1, 1, 1]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]])


@pytest.fixture(scope="module")
def checkpoint():
    return tiny_opt_fp16_dir()  # saved once per process


@pytest.fixture
def model(checkpoint):
    """A fresh 8-bit tiny OPT (the kata's own loader), fp16 outside the int8 weights."""
    return load_tiny_opt_in_8bit(checkpoint)


@pytest.fixture
def peft_prepared(checkpoint):
    """The same model prepared by peft, with non-reentrant checkpointing as the kata asks."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        load_tiny_opt_in_8bit(checkpoint), gradient_checkpointing_kwargs={"use_reentrant": False}
    )


def prepare(model, **kwargs):
    prepared = int8.prepare_for_int8_training(model, **kwargs)
    assert prepared is model, (
        f"prepare_for_int8_training should return the model it prepared (in place), got "
        f"{type(prepared).__name__}: did you forget to return the model?"
    )
    return prepared


def embedding_output(model, **forward_kwargs):
    """What the input embeddings returned during one forward pass."""
    seen = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(output)
    )
    try:
        model(input_ids=TOKENS, attention_mask=MASK, **forward_kwargs)
    finally:
        handle.remove()
    return seen[0]


def checkpointed_layers(model):
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


# ---------------------------------------------------------------- load_in_8bit


def test_load_in_8bit_quantizes_every_decoder_linear_to_int8(checkpoint):
    loaded = int8.load_in_8bit(str(checkpoint))
    reference = load_tiny_opt_in_8bit(checkpoint)
    expected = linear8bit_module_names(reference)
    assert linear8bit_module_names(loaded) == expected, (
        f"every decoder Linear should be a bitsandbytes Linear8bitLt ({len(expected)} of them), "
        f"found {len(linear8bit_module_names(loaded))}: pass "
        "quantization_config=BitsAndBytesConfig(load_in_8bit=True) to from_pretrained"
    )
    assert getattr(loaded, "is_loaded_in_8bit", False), "the model should say is_loaded_in_8bit"
    reference_weights = dict(reference.named_parameters())
    for name in int8_parameter_names(reference):
        weight = dict(loaded.named_parameters())[name]
        assert weight.dtype == torch.int8 and torch.equal(weight, reference_weights[name]), (
            f"{name} should be the same int8 weight as an 8-bit load of the checkpoint gives"
        )
    assert isinstance(loaded.get_output_embeddings(), torch.nn.Linear), (
        "lm_head is tied to the embeddings and is never quantized"
    )


def test_load_in_8bit_passes_device_map_to_from_pretrained(checkpoint, monkeypatch):
    from transformers import BitsAndBytesConfig

    calls = record_from_pretrained(monkeypatch)
    int8.load_in_8bit(str(checkpoint), device_map={"": "cpu"})
    assert calls, "load_in_8bit should call from_pretrained (AutoModelForCausalLM's)"
    kwargs = calls[-1]
    assert kwargs.get("device_map") == {"": "cpu"}, (
        f"device_map={{'': 'cpu'}} should reach from_pretrained, it got device_map="
        f"{kwargs.get('device_map')!r}: pass device_map=device_map on"
    )
    config = kwargs.get("quantization_config")
    assert isinstance(config, BitsAndBytesConfig) and config.load_in_8bit, (
        f"from_pretrained should get quantization_config=BitsAndBytesConfig(load_in_8bit=True), "
        f"got {config!r}"
    )


# ---------------------------------------------------------------- prepare_for_int8_training


def test_prepare_returns_the_model_itself(model):
    prepare(model)  # the check is inside prepare()


def test_prepare_freezes_every_parameter(model):
    prepare(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert not trainable, (
        f"{len(trainable)} parameters still require grad (e.g. {trainable[:3]}): freeze every "
        "parameter (requires_grad False); only LoRA, added afterwards, trains"
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_parameters_that_are_not_int8_become_fp32(checkpoint, dtype):
    model = load_tiny_opt_in_8bit(checkpoint, dtype=dtype)
    quantized = set(int8_parameter_names(model))
    shapes = {name: p.ndim for name, p in model.named_parameters()}
    prepare(model)
    left = [
        (name, p.dtype)
        for name, p in model.named_parameters()
        if name not in quantized and p.dtype != torch.float32
    ]
    if left:
        name, kind = left[0]
        if len(left) == len(shapes) - len(quantized):
            why = "no fp32 cast at all? cast every float16 and bfloat16 parameter to float32"
        elif all(shapes[n] >= 2 for n, _ in left):
            why = "casting only ndim == 1 parameters misses the embeddings"
        else:
            why = "cast every float16 and bfloat16 parameter to float32"
        pytest.fail(
            f"{name} is still {str(kind).removeprefix('torch.')} after prepare ({len(left)} such "
            f"parameters): {why}; int8 weights aside, every parameter must be float32"
        )


def test_int8_weights_stay_int8_and_unchanged(model):
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    quantized = int8_parameter_names(model)
    prepare(model)
    after = dict(model.named_parameters())
    for name in quantized:
        assert after[name].dtype == torch.int8, (
            f"int8 weights cast to {after[name].dtype}: {name} must stay int8 — cast only "
            "float16/bfloat16 parameters (a test like `dtype != float32` catches int8 too)"
        )
        assert torch.equal(after[name], before[name]), f"{name}'s int8 values must not change"


def test_dtypes_and_frozen_parameters_match_peft_prepare_model_for_kbit_training(
    model, peft_prepared
):
    prepare(model)
    ours = {name: (p.dtype, p.requires_grad) for name, p in model.named_parameters()}
    theirs = {name: (p.dtype, p.requires_grad) for name, p in peft_prepared.named_parameters()}
    assert ours.keys() == theirs.keys(), (
        f"parameter names changed: {sorted(ours.keys() ^ theirs.keys())[:4]}"
    )
    differ = {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]}
    assert not differ, (
        f"{len(differ)} parameters differ from peft's prepare_model_for_kbit_training as "
        f"(dtype, requires_grad), ours vs peft's: {dict(list(differ.items())[:3])}"
    )


def test_input_embeddings_output_requires_grad_even_without_checkpointing(model):
    prepare(model, use_gradient_checkpointing=False)
    output = embedding_output(model)
    assert output.requires_grad, (
        "the input embeddings' output should require grad after prepare (also with "
        "use_gradient_checkpointing=False): register a forward hook on "
        "model.get_input_embeddings() that calls output.requires_grad_(True), or call "
        "model.enable_input_require_grads()"
    )


def test_gradient_checkpointing_is_on_when_asked_and_off_when_not(checkpoint):
    asked = prepare(load_tiny_opt_in_8bit(checkpoint), use_gradient_checkpointing=True)
    assert checkpointed_layers(asked), (
        "use_gradient_checkpointing=True should turn gradient checkpointing on: "
        "model.activation_checkpointing_enable(activation_checkpointing_kwargs="
        "{'use_reentrant': False})"
    )
    not_asked = prepare(load_tiny_opt_in_8bit(checkpoint), use_gradient_checkpointing=False)
    assert not checkpointed_layers(not_asked), (
        "use_gradient_checkpointing=False should leave checkpointing off: the flag is ignored"
    )


def test_checkpointing_is_turned_on_without_the_deprecated_alias(model):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(model)
    deprecated = [
        str(w.message)
        for w in caught
        if issubclass(w.category, DeprecationWarning | FutureWarning)
        and "checkpointing" in str(w.message)
    ]
    assert not deprecated, (
        f"prepare warned: {deprecated[0][:120]!r}. gradient_checkpointing_enable is a "
        "deprecated alias in transformers 5.24 (removed in v6): call "
        "model.activation_checkpointing_enable(activation_checkpointing_kwargs="
        "{'use_reentrant': False}) where it exists"
    )
    assert checkpointed_layers(model), "checkpointing should still be on after prepare"


def add_adapter(model):
    """A trainable fp32 vector added to layer 1's q_proj output: a stand-in for LoRA."""
    delta = torch.nn.Parameter(torch.zeros(model.config.hidden_size))
    q_proj = model.model.decoder.layers[1].self_attn.q_proj
    q_proj.register_forward_hook(lambda module, args, output: output + delta)
    return delta


def test_checkpointing_is_non_reentrant(model):
    prepare(model)
    layers = checkpointed_layers(model)
    assert layers, "gradient checkpointing should be on by default (use_gradient_checkpointing)"
    function = getattr(layers[0], "_gradient_checkpointing_func", None)
    keywords = getattr(function, "keywords", {})
    assert keywords.get("use_reentrant", False) is False, (
        f"checkpointing is reentrant (use_reentrant={keywords.get('use_reentrant')}): pass "
        "activation_checkpointing_kwargs={'use_reentrant': False}"
    )
    model.train()
    delta = add_adapter(model)
    loss = model(input_ids=TOKENS, attention_mask=MASK, labels=TOKENS).loss
    try:
        (grad,) = torch.autograd.grad(loss, [delta])
    except RuntimeError as error:
        pytest.fail(
            f"torch.autograd.grad through the checkpointed blocks failed, as it does with "
            f"reentrant checkpointing: use_reentrant must be False ({str(error)[:80]})"
        )
    assert grad.abs().sum() > 0, "the adapter inside a checkpointed block should get a gradient"


def test_logits_are_fp32_even_under_autocast(model):
    prepare(model)
    head = model.get_output_embeddings()
    # bf16 autocast on the CPU stands for the tutorial's fp16 autocast on the GPU: without the
    # cast, lm_head runs in 16 bits there and so do the logits (as after peft's prepare).
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=TOKENS, attention_mask=MASK).logits
    assert logits.dtype == torch.float32, (
        f"lm_head output left in {str(logits.dtype).removeprefix('torch.')} under autocast: "
        "cast lm_head's output to float32 (the PEFT example's CastOutputToFloat, e.g. a forward "
        "hook returning output.float()) — its output, not its input"
    )
    assert head.weight is model.get_input_embeddings().weight, (
        "lm_head.weight should still be the (tied) embedding weight: do not replace it"
    )
    assert head.weight.dtype == torch.float32, "lm_head.weight should be fp32 (like the rest)"


def test_prepared_model_computes_the_same_logits_as_peft_prepared_one(model, peft_prepared):
    prepare(model)
    model.eval()
    peft_prepared.eval()
    with torch.no_grad():
        ours = model(input_ids=TOKENS, attention_mask=MASK).logits
        theirs = peft_prepared(input_ids=TOKENS, attention_mask=MASK).logits
    # The same fp32 and int8 operations in the same order: equal up to float rounding.
    assert ours.dtype == torch.float32, (
        f"the prepared model's logits should be fp32 (lm_head output cast to fp32), got "
        f"{ours.dtype}"
    )
    assert torch.allclose(ours, theirs.float(), atol=1e-5, rtol=1e-5), (
        f"logits differ from the peft-prepared model's by up to "
        f"{(ours - theirs.float()).abs().max().item():.3g}: prepare must not change what the "
        "model computes, only its dtypes and training machinery"
    )


# Slow-ish: a training forward and backward through two checkpointed int8 blocks (~1 s).
def test_only_an_adapter_gets_gradients_through_the_prepared_model(model):
    prepare(model)
    quantized = {
        name: p.detach().clone() for name, p in model.named_parameters() if p.dtype == torch.int8
    }
    model.train()
    delta = add_adapter(model)
    model(input_ids=TOKENS, attention_mask=MASK, labels=TOKENS).loss.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0, (
        "an adapter inside a checkpointed block got no gradient: is the input embeddings' "
        "output not requiring grad, with reentrant checkpointing?"
    )
    with_grad = [name for name, p in model.named_parameters() if p.grad is not None]
    assert not with_grad, f"frozen parameters got gradients: {with_grad[:3]}"
    for name, p in model.named_parameters():
        if name in quantized:
            assert torch.equal(p, quantized[name]), f"{name} (int8) changed during backward"
