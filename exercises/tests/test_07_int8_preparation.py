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

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.int8 import (
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
    assert prepared is model, msg("07.prepare_returns_model", got=type(prepared).__name__)
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
    assert linear8bit_module_names(loaded) == expected, msg(
        "07.every_linear_is_8bit",
        expected=len(expected),
        found=len(linear8bit_module_names(loaded)),
    )
    assert getattr(loaded, "is_loaded_in_8bit", False), msg("07.says_loaded_in_8bit")
    reference_weights = dict(reference.named_parameters())
    for name in int8_parameter_names(reference):
        weight = dict(loaded.named_parameters())[name]
        assert weight.dtype == torch.int8 and torch.equal(weight, reference_weights[name]), msg(
            "07.same_int8_weight", name=name
        )
    assert isinstance(loaded.get_output_embeddings(), torch.nn.Linear), msg(
        "07.lm_head_not_quantized"
    )


def test_load_in_8bit_passes_device_map_to_from_pretrained(checkpoint, monkeypatch):
    from transformers import BitsAndBytesConfig

    calls = record_from_pretrained(monkeypatch)
    int8.load_in_8bit(str(checkpoint), device_map={"": "cpu"})
    assert calls, msg("07.calls_from_pretrained")
    kwargs = calls[-1]
    assert kwargs.get("device_map") == {"": "cpu"}, msg(
        "07.device_map_reaches", got=kwargs.get("device_map")
    )
    config = kwargs.get("quantization_config")
    assert isinstance(config, BitsAndBytesConfig) and config.load_in_8bit, msg(
        "07.quantization_config_passed", config=config
    )


# ---------------------------------------------------------------- prepare_for_int8_training


def test_prepare_returns_the_model_itself(model):
    prepare(model)  # the check is inside prepare()


def test_prepare_freezes_every_parameter(model):
    prepare(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert not trainable, msg(
        "07.freeze_every_parameter", count=len(trainable), examples=trainable[:3]
    )


def parameter_layout(model):
    """(names of the int8 parameters, every parameter's ndim), taken before prepare."""
    return set(int8_parameter_names(model)), {name: p.ndim for name, p in model.named_parameters()}


def left_in_16bit(model, layout):
    """The still_16bit message when a non-int8 parameter is not fp32 after prepare, else None."""
    quantized, shapes = layout
    left = [
        (name, p.dtype)
        for name, p in model.named_parameters()
        if name not in quantized and p.dtype != torch.float32
    ]
    if not left:
        return None
    name, kind = left[0]
    if len(left) == len(shapes) - len(quantized):
        why = msg("07.no_fp32_cast")
    elif all(shapes[n] >= 2 for n, _ in left):
        why = msg("07.only_1d_cast")
    else:
        why = msg("07.cast_16bit_to_fp32")
    return msg(
        "07.still_16bit",
        name=name,
        dtype=str(kind).removeprefix("torch."),
        count=len(left),
        why=why,
    )


def prepare_for_running(model, **kwargs):
    """prepare(), then fail before any forward pass if a non-int8 parameter is not fp32: a
    16-bit one meets fp32 tensors in the forward pass, and torch stops with a dtype error that
    does not name it."""
    layout = parameter_layout(model)
    prepared = prepare(model, **kwargs)
    problem = left_in_16bit(model, layout)
    if problem:
        pytest.fail(msg("07.cannot_run_with_16bit_left", problem=problem), pytrace=False)
    return prepared


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_parameters_that_are_not_int8_become_fp32(checkpoint, dtype):
    model = load_tiny_opt_in_8bit(checkpoint, dtype=dtype)
    layout = parameter_layout(model)
    prepare(model)
    problem = left_in_16bit(model, layout)
    if problem:
        pytest.fail(problem)


def test_int8_weights_stay_int8_and_unchanged(model):
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    quantized = int8_parameter_names(model)
    prepare(model)
    after = dict(model.named_parameters())
    for name in quantized:
        assert after[name].dtype == torch.int8, msg(
            "07.int8_weights_cast", dtype=after[name].dtype, name=name
        )
        assert torch.equal(after[name], before[name]), msg("07.int8_values_unchanged", name=name)


def test_dtypes_and_frozen_parameters_match_peft_prepare_model_for_kbit_training(
    model, peft_prepared
):
    prepare(model)
    ours = {name: (p.dtype, p.requires_grad) for name, p in model.named_parameters()}
    theirs = {name: (p.dtype, p.requires_grad) for name, p in peft_prepared.named_parameters()}
    assert ours.keys() == theirs.keys(), msg(
        "07.parameter_names_changed", names=sorted(ours.keys() ^ theirs.keys())[:4]
    )
    differ = {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]}
    assert not differ, msg(
        "07.differ_from_peft", count=len(differ), examples=dict(list(differ.items())[:3])
    )


def test_input_embeddings_output_requires_grad_even_without_checkpointing(model):
    prepare(model, use_gradient_checkpointing=False)
    output = embedding_output(model)
    assert output.requires_grad, msg("07.embeddings_output_requires_grad")


def test_gradient_checkpointing_is_on_when_asked_and_off_when_not(checkpoint):
    asked = prepare(load_tiny_opt_in_8bit(checkpoint), use_gradient_checkpointing=True)
    assert checkpointed_layers(asked), msg("07.checkpointing_on_when_asked")
    not_asked = prepare(load_tiny_opt_in_8bit(checkpoint), use_gradient_checkpointing=False)
    assert not checkpointed_layers(not_asked), msg("07.checkpointing_off_when_not")


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
    assert not deprecated, msg("07.deprecated_alias", warning=deprecated[0][:120])
    assert checkpointed_layers(model), msg("07.checkpointing_still_on")


def add_adapter(model):
    """A trainable fp32 vector added to layer 1's q_proj output: a stand-in for LoRA."""
    delta = torch.nn.Parameter(torch.zeros(model.config.hidden_size))
    q_proj = model.model.decoder.layers[1].self_attn.q_proj
    q_proj.register_forward_hook(lambda module, args, output: output + delta)
    return delta


def test_checkpointing_is_non_reentrant(model):
    prepare_for_running(model)
    layers = checkpointed_layers(model)
    assert layers, msg("07.checkpointing_on_by_default")
    function = getattr(layers[0], "_gradient_checkpointing_func", None)
    keywords = getattr(function, "keywords", {})
    assert keywords.get("use_reentrant", False) is False, msg(
        "07.reentrant", use_reentrant=keywords.get("use_reentrant")
    )
    model.train()
    delta = add_adapter(model)
    loss = model(input_ids=TOKENS, attention_mask=MASK, labels=TOKENS).loss
    try:
        (grad,) = torch.autograd.grad(loss, [delta])
    except RuntimeError as error:
        pytest.fail(msg("07.grad_through_checkpoint_failed", error=str(error)[:80]))
    assert grad.abs().sum() > 0, msg("07.adapter_gets_gradient")


def test_logits_are_fp32_even_under_autocast(model):
    prepare_for_running(model)
    head = model.get_output_embeddings()
    # bf16 autocast on the CPU stands for the tutorial's fp16 autocast on the GPU: without the
    # cast, lm_head runs in 16 bits there and so do the logits (as after peft's prepare).
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=TOKENS, attention_mask=MASK).logits
    assert logits.dtype == torch.float32, msg(
        "07.lm_head_output_fp32", dtype=str(logits.dtype).removeprefix("torch.")
    )
    assert head.weight is model.get_input_embeddings().weight, msg("07.lm_head_still_tied")
    assert head.weight.dtype == torch.float32, msg("07.lm_head_weight_fp32")


def test_prepared_model_computes_the_same_logits_as_peft_prepared_one(model, peft_prepared):
    layout = parameter_layout(model)
    prepare(model)
    model.eval()
    peft_prepared.eval()
    with torch.no_grad():
        ours = model(input_ids=TOKENS, attention_mask=MASK).logits
        theirs = peft_prepared(input_ids=TOKENS, attention_mask=MASK).logits
    # The same fp32 and int8 operations in the same order: equal up to float rounding.
    assert ours.dtype == torch.float32, msg("07.logits_fp32", dtype=ours.dtype)
    same = torch.allclose(ours, theirs.float(), atol=1e-5, rtol=1e-5)
    difference = (ours - theirs.float()).abs().max().item()
    problem = None if same else left_in_16bit(model, layout)
    assert not problem, msg("07.logits_differ_16bit_left", difference=difference, problem=problem)
    assert same, msg("07.logits_match_peft", difference=difference)


# Slow-ish: a training forward and backward through two checkpointed int8 blocks (~1 s).
def test_only_an_adapter_gets_gradients_through_the_prepared_model(model):
    prepare_for_running(model)
    quantized = {
        name: p.detach().clone() for name, p in model.named_parameters() if p.dtype == torch.int8
    }
    model.train()
    delta = add_adapter(model)
    model(input_ids=TOKENS, attention_mask=MASK, labels=TOKENS).loss.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0, msg("07.adapter_got_no_gradient")
    with_grad = [name for name, p in model.named_parameters() if p.grad is not None]
    assert not with_grad, msg("07.frozen_got_gradients", names=with_grad[:3])
    for name, p in model.named_parameters():
        if name in quantized:
            assert torch.equal(p, quantized[name]), msg("07.int8_changed_in_backward", name=name)
