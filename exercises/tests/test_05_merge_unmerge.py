"""Exercise 05: merge and unmerge (LoRALinear.merge/unmerge in exercises/lora.py,
merge_lora/unmerge_lora in exercises/inject.py).

merge: W ← W0 + ΔW once (ΔW = s·B·A); unmerge: W ← W − ΔW if merged. A merged layer computes
base(x) alone, and equals the unmerged layer up to float rounding.
Tolerances: in fp32, W0·x + s·B·(A·x) and (W0 + s·B·A)·x add the same terms in a different
order (about 1e-7 relative each); 1e-5, scaled by the size of the values, leaves room for that
and none for a missing scaling or a ΔW added twice.
"""

import copy

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.properties import distinct_dims, seeded_linear, seeded_randn
from lora_kata.testing.raising import must_raise

lora = implementation("lora")
inject = implementation("inject")

ATOL = 1e-5


def randomised_layer(k, d, r, alpha, seed=0, dtype=None):
    """A LoRALinear (dropout off) whose B is random too, so ΔW is not zero."""
    layer = lora.LoRALinear(seeded_linear(k, d, seed=seed, dtype=dtype), r=r, alpha=alpha)
    with torch.no_grad():
        layer.lora_A.copy_(seeded_randn(r, k, seed=seed + 1) * 0.5)
        layer.lora_B.copy_(seeded_randn(d, r, seed=seed + 2) * 0.5)
    return layer.eval()


def expected_delta(layer):
    """s · B @ A in fp32, computed here (not with the layer's own delta_weight)."""
    return (layer.alpha / layer.r) * (layer.lora_B.detach() @ layer.lora_A.detach())


def tolerance(*tensors):
    return ATOL * max(1.0, *(t.abs().max().item() for t in tensors))


scalings = st.floats(0.5, 64, allow_nan=False)


@given(distinct_dims(), scalings)
def test_merge_adds_the_scaled_update_into_the_base_weight(dims, alpha):
    k, d, r = dims
    assume(abs(alpha / r - 1) > 0.05)  # s ≠ 1, so a missing scaling shows
    layer = randomised_layer(k, d, r, alpha)
    w0 = layer.base.weight.detach().clone()
    layer.merge()
    delta = expected_delta(layer)
    got = layer.base.weight.detach()
    unscaled = torch.allclose(got, w0 + delta / (alpha / r), atol=tolerance(w0, delta))
    assert torch.allclose(got, w0 + delta, atol=tolerance(w0, delta)), msg(
        "05.merge_adds_scaled_update",
        why=msg("05.merged_without_scaling") if unscaled else "",
        difference=(got - w0 - delta).abs().max().item(),
    )
    assert layer.merged is True, msg("05.merge_sets_merged")


def test_merge_updates_the_weight_in_place_without_autograd():
    layer = randomised_layer(9, 6, 2, alpha=4)
    weight = layer.base.weight
    storage = weight.data_ptr()
    layer.merge()
    assert layer.base.weight is weight and weight.data_ptr() == storage, msg("05.merge_in_place")
    assert not weight.requires_grad and weight.grad_fn is None, msg("05.merged_weight_frozen_leaf")


@given(distinct_dims(), scalings, st.integers(1, 3))
def test_merged_forward_equals_unmerged_forward(dims, alpha, batch_dims):
    k, d, r = dims
    layer = randomised_layer(k, d, r, alpha)
    x = seeded_randn(*([3] * batch_dims), k, seed=5)
    w0 = layer.base.weight.detach().clone()
    with torch.no_grad():
        unmerged = layer(x)
        layer.merge()
        merged = layer(x)
        base_only = layer.base(x)
    assert torch.equal(merged, base_only), msg("05.merged_forward_is_base_alone")
    added = layer.base.weight.detach() - w0
    unscaled = (layer.lora_B @ layer.lora_A).detach()
    assert torch.allclose(merged, unmerged, atol=tolerance(unmerged)), msg(
        "05.merged_equals_unmerged",
        difference=(merged - unmerged).abs().max().item(),
        why=msg("05.merge_added_unscaled")
        if torch.allclose(added, unscaled, atol=tolerance(unscaled))
        else msg("05.merge_added_other"),
    )


def test_a_second_merge_is_a_no_op():
    layer = randomised_layer(10, 7, 3, alpha=6)
    w0 = layer.base.weight.detach().clone()
    layer.merge()
    once = layer.base.weight.detach().clone()
    layer.merge()
    twice = layer.base.weight.detach()
    doubled = torch.allclose(twice, w0 + 2 * expected_delta(layer), atol=1e-4)
    assert torch.equal(twice, once), msg(
        "05.second_merge_no_op", why=msg("05.double_merge") if doubled else ""
    )
    assert layer.merged is True, msg("05.merged_after_merge", merged=layer.merged)


@given(distinct_dims(), scalings)
def test_unmerge_restores_the_base_weight(dims, alpha):
    k, d, r = dims
    layer = randomised_layer(k, d, r, alpha)
    w0 = layer.base.weight.detach().clone()
    layer.merge()
    layer.unmerge()
    got = layer.base.weight.detach()
    # (W0 + ΔW) − ΔW rounds once per add: equal to W0 within a few ulps of |W0| + |ΔW|.
    assert torch.allclose(got, w0, atol=tolerance(w0, expected_delta(layer))), msg(
        "05.unmerge_restores_w0", difference=(got - w0).abs().max().item()
    )
    assert layer.merged is False, msg("05.unmerge_sets_merged_false")


def test_unmerge_when_not_merged_is_a_no_op():
    layer = randomised_layer(10, 7, 3, alpha=6)
    w0 = layer.base.weight.detach().clone()
    layer.unmerge()
    assert torch.equal(layer.base.weight.detach(), w0), msg("05.unmerge_when_not_merged")
    assert layer.merged is False, msg("05.unmerge_keeps_merged_false", merged=layer.merged)


def test_unmerged_layer_adds_the_update_again():
    layer = randomised_layer(8, 5, 2, alpha=3)
    x = seeded_randn(4, 8, seed=6)
    with torch.no_grad():
        layer.merge()
        layer.unmerge()
        after = layer(x)
        # base(x) with whatever weight unmerge left (test_unmerge_restores_the_base_weight
        # checks that weight), plus the update from your delta_weight.
        expected = layer.base(x) + x @ layer.delta_weight().T
    assert torch.allclose(after, expected, atol=tolerance(expected)), msg(
        "05.unmerged_adds_update_again",
        why=(
            msg("05.merged_left_true")
            if layer.merged
            else msg("05.max_difference", difference=(after - expected).abs().max().item())
        ),
    )


@pytest.mark.parametrize(
    "dtype, rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)], ids=["fp16", "bf16"]
)
def test_merge_keeps_the_base_dtype_and_unmerge_restores_it_up_to_rounding(dtype, rtol):
    layer = randomised_layer(16, 12, 4, alpha=8, dtype=dtype)
    # Your own merge and unmerge on an fp32 copy: here only the precision may differ (what
    # merge adds is the other tests' business).
    fp32 = copy.deepcopy(layer).float()
    fp32.merge()
    fp32_merged = fp32.base.weight.detach().clone()
    fp32.unmerge()
    layer.merge()
    weight = layer.base.weight.detach()
    assert weight.dtype == dtype, msg("05.merged_weight_dtype", dtype=dtype, got=weight.dtype)
    # rtol: two ulps of the half-precision format (each add rounds once to it).
    assert torch.allclose(weight.float(), fp32_merged, rtol=rtol, atol=rtol), msg(
        "05.merge_in_half_precision",
        dtype=dtype,
        difference=(weight.float() - fp32_merged).abs().max().item(),
    )
    layer.unmerge()
    restored = layer.base.weight.detach()
    expected = fp32.base.weight.detach()
    assert torch.allclose(restored.float(), expected, rtol=rtol, atol=2 * rtol), msg(
        "05.unmerge_in_half_precision",
        dtype=dtype,
        difference=(restored.float() - expected).abs().max().item(),
    )


def int8_layer(k=12, d=7, r=3):
    import bitsandbytes as bnb

    base = bnb.nn.Linear8bitLt(k, d, has_fp16_weights=False, threshold=0.0)
    base.load_state_dict(seeded_linear(k, d).state_dict())
    base = base.to("cpu")  # quantizes: the weight becomes int8 with one scale per row
    assert base.weight.dtype == torch.int8, msg("05.int8_setup", dtype=base.weight.dtype)
    layer = lora.LoRALinear(base, r=r, alpha=2 * r)
    with torch.no_grad():
        layer.lora_B.copy_(seeded_randn(d, r, seed=3))
    return layer.eval()


def test_merging_into_an_8bit_base_is_refused_with_a_type_error():
    layer = int8_layer()
    int8 = layer.base.weight.detach().clone()
    x = seeded_randn(2, 12, seed=4)
    try:
        layer.merge()
    except TypeError as error:
        text = str(error).lower()
        assert "8-bit" in text or "int8" in text or "8bit" in text, msg(
            "05.int8_error_says_8bit", error=error
        )
    else:
        pytest.fail(msg("05.merge_into_int8_refused"))
    assert torch.equal(layer.base.weight.detach(), int8), msg("05.refused_merge_keeps_w")
    assert layer.merged is False, msg("05.refused_merge_keeps_merged_false")
    with torch.no_grad():
        out = layer(x)
        expected = layer.base(x) + x @ expected_delta(layer).T
    assert torch.allclose(out, expected, atol=1e-4), msg("05.refused_merge_still_adds_update")


# ---- the whole model ----------------------------------------------------------------------


def injected_tiny_opt(targets=("q_proj", "v_proj", "fc1")):
    from lora_kata.models.tiny import build_tiny_opt
    from lora_kata.testing.lora_models import randomise_lora

    model = build_tiny_opt()
    inject.inject_lora(model, inject.LoRAConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    randomise_lora(model, seed=2)
    return model.eval()


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, lora.LoRALinear)]


def test_merge_lora_merges_every_layer_and_keeps_the_logits():
    from lora_kata.testing.lora_models import token_batch

    model = injected_tiny_opt()
    x = token_batch()
    # The same model merged layer by layer with your LoRALinear.merge(): merge_lora's job is
    # to do that for every layer (what merge() adds is the layer tests' business).
    reference = copy.deepcopy(model)
    for layer in lora_layers(reference):
        layer.merge()
    with torch.no_grad():
        expected_logits = reference(x).logits
        returned = inject.merge_lora(model)
        after = model(x).logits
    assert returned is model, msg("05.returns_the_model", function="merge_lora")
    layers = lora_layers(model)
    assert all(layer.merged for layer in layers), msg(
        "05.merge_lora_merges_every_layer",
        unmerged=sum(not layer.merged for layer in layers),
        total=len(layers),
    )
    for layer, merged in zip(layers, lora_layers(reference), strict=True):
        got, expected = layer.base.weight.detach(), merged.base.weight.detach()
        assert torch.allclose(got, expected, atol=1e-6), msg(
            "05.merge_lora_weight_as_merge", difference=(got - expected).abs().max().item()
        )
    assert torch.allclose(after, expected_logits, atol=tolerance(expected_logits)), msg(
        "05.merge_lora_logits", difference=(after - expected_logits).abs().max().item()
    )


def test_unmerge_lora_restores_every_base_weight():
    model = injected_tiny_opt()
    # The same model merged and unmerged layer by layer with your merge() and unmerge().
    reference = copy.deepcopy(model)
    for layer in lora_layers(reference):
        layer.merge()
        layer.unmerge()
    inject.merge_lora(model)
    returned = inject.unmerge_lora(model)
    assert returned is model, msg("05.returns_the_model", function="unmerge_lora")
    layers = lora_layers(model)
    still = sum(layer.merged for layer in layers)
    assert not still, msg("05.unmerge_lora_unmerges_every_layer", merged=still, total=len(layers))
    for layer, unmerged in zip(layers, lora_layers(reference), strict=True):
        got, expected = layer.base.weight.detach(), unmerged.base.weight.detach()
        assert torch.allclose(got, expected, atol=1e-6), msg(
            "05.unmerge_lora_weight_as_unmerge", difference=(got - expected).abs().max().item()
        )


def test_merge_lora_and_unmerge_lora_refuse_a_model_without_lora_with_a_value_error():
    """Nothing to merge (inject_lora was never called?): both docstrings ask for a ValueError.
    Returning silently hides the mistake; a refused call changes no weight."""
    from lora_kata.models.tiny import build_tiny_opt

    for function in (inject.merge_lora, inject.unmerge_lora):
        model = build_tiny_opt()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        name = function.__name__

        def raised_another(error, name=name):
            return msg(
                "05.no_lora_raised_another",
                function=name,
                error_type=type(error).__name__,
                error=str(error)[:200],
            )

        with must_raise(ValueError, msg("05.no_lora_accepted", function=name), raised_another):
            function(model)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert not changed, msg(
            "05.changed_model_without_lora", function=function.__name__, changed=changed[:3]
        )


def test_merge_lora_on_a_model_loaded_in_8bit_is_refused(tmp_path):
    from lora_kata.models.tiny import save_tiny_opt
    from lora_kata.testing.int8 import load_tiny_opt_in_8bit

    model = load_tiny_opt_in_8bit(save_tiny_opt(tmp_path, with_tokenizer=False)).eval()
    inject.inject_lora(model, inject.LoRAConfig(r=4, lora_alpha=8))
    try:
        inject.merge_lora(model)
    except TypeError:
        pass
    else:
        pytest.fail(msg("05.merge_lora_int8_refused"))
    assert not any(layer.merged for layer in lora_layers(model)), msg(
        "05.refused_merge_lora_leaves_unmerged"
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_merged_weights_equal_peft_merge_and_unload():
    from lora_kata.models.tiny import build_tiny_opt
    from lora_kata.testing.lora_models import copy_lora_into_peft, peft_model

    ours = injected_tiny_opt()
    theirs = peft_model(
        build_tiny_opt(), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"]
    )
    copy_lora_into_peft(ours, theirs)
    inject.merge_lora(ours)
    plain = theirs.merge_and_unload()  # a plain OPTForCausalLM with ΔW folded in
    for name, module in ours.named_modules():
        if isinstance(module, lora.LoRALinear):
            expected = plain.get_submodule(name).weight
            assert torch.allclose(module.base.weight, expected, atol=1e-6), msg(
                "05.merged_equals_peft",
                name=name,
                difference=(module.base.weight - expected).abs().max().item(),
            )
