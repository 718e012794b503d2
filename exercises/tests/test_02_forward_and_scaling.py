"""Exercise 02: scaling, ΔW and the forward pass (exercises/lora.py).

h = base(x) + s · B·A·dropout(x), s = α/r (or α/√r with rsLoRA).
Tolerances: fp32 matmuls done in a different order differ by ~1e-6 relative; 1e-5 absolute
on values of order 1 leaves room for that and none for a missing or wrong factor.
"""

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.properties import distinct_dims, seeded_linear, seeded_randn

lora = implementation("lora")

ATOL = 1e-5


def randomised_layer(k, d, r, alpha, dropout=0.0, seed=0):
    """A LoRALinear whose B is random too, so the update is not zero."""
    layer = lora.LoRALinear(seeded_linear(k, d, seed=seed), r=r, alpha=alpha, dropout=dropout)
    with torch.no_grad():
        layer.lora_A.copy_(seeded_randn(r, k, seed=seed + 1) * 0.5)
        layer.lora_B.copy_(seeded_randn(d, r, seed=seed + 2) * 0.5)
    return layer


def reference_update(layer, x):
    """s · x Aᵀ Bᵀ with the layer's own s (layer.scaling, from your lora_scaling): a wrong
    scaling value is the scaling tests' to report, not every forward test's."""
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    return float(layer.scaling) * (x @ A.T @ B.T)


def expected_scaling(alpha, r, rslora=False):
    return alpha / math.sqrt(r) if rslora else alpha / r


def update_factor(got, reference):
    """(f, proportional): the least-squares f with got ≈ f · reference, and whether got is that
    multiple of reference (to fp32 rounding) rather than some other tensor."""
    f = float((got * reference).sum() / (reference * reference).sum())
    proportional = torch.allclose(got, f * reference, atol=ATOL * max(1.0, abs(f)), rtol=1e-4)
    return f, proportional


def update_mistake(got, reference, scaling):
    """Which mistake makes `got` differ from the scaled `reference`: "other" (not a multiple of
    it), "none" (zero), "unscaled", "twice" (the scaling squared) or "factor" (another number);
    and the factor got is of the unscaled reference."""
    factor, proportional = update_factor(got, reference / scaling)
    if not proportional:
        return "other", factor
    if abs(factor) < 1e-6:
        return "none", factor
    if factor == pytest.approx(1.0, rel=1e-4):
        return "unscaled", factor
    if factor == pytest.approx(scaling * scaling, rel=1e-4):
        return "twice", factor
    return "factor", factor


def without_dropout(layer):
    """The same layer (same weights) with lora_dropout replaced by nn.Identity: what the
    layer computes when nothing is dropped, by your own forward."""
    clean = copy.deepcopy(layer)
    clean.lora_dropout = torch.nn.Identity()
    return clean


@given(st.floats(0.25, 256, allow_nan=False), st.integers(1, 256))
def test_scaling_is_alpha_over_r(alpha, r):
    got = lora.lora_scaling(alpha, r)
    if got == pytest.approx(r / alpha, rel=1e-12):
        why = msg("02.scaling_inverted")
    elif got == alpha // r:
        why = msg("02.scaling_floor_division")
    else:
        why = ""
    assert got == pytest.approx(alpha / r, rel=1e-12), msg(
        "02.scaling_alpha_over_r", alpha=alpha, r=r, want=alpha / r, got=got, why=why
    )


@given(st.floats(0.25, 256, allow_nan=False), st.integers(2, 256))
def test_rslora_scaling_is_alpha_over_sqrt_r(alpha, r):
    got = lora.lora_scaling(alpha, r, rslora=True)
    assert got == pytest.approx(alpha / math.sqrt(r), rel=1e-12), msg(
        "02.rslora_scaling", alpha=alpha, r=r, want=alpha / math.sqrt(r), got=got
    )


def test_tutorial_scaling_is_two():
    assert lora.lora_scaling(32, 16) == 2.0, msg("02.tutorial_scaling")
    got = lora.lora_scaling(32, 16, rslora=True)
    assert got == 8.0, msg("02.tutorial_rslora_scaling", got=got)


@given(distinct_dims(), st.floats(0.5, 64, allow_nan=False))
def test_layer_scaling_is_alpha_over_r(dims, alpha):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=alpha)
    assert float(layer.scaling) == pytest.approx(alpha / r), msg(
        "02.layer_scaling", want=alpha / r, got=layer.scaling
    )


@given(distinct_dims())
def test_output_equals_the_base_output_exactly_at_init(dims):
    k, d, r = dims
    base = seeded_linear(k, d)
    x = seeded_randn(5, k)
    expected = base(x)
    layer = lora.LoRALinear(base, r=r, alpha=2 * r)
    got = layer(x)
    assert torch.equal(got, expected), msg(
        "02.output_is_base_at_init", diff=(got - expected).abs().max().item()
    )


@given(distinct_dims(), st.floats(0.5, 64, allow_nan=False))
def test_delta_weight_is_scaling_times_B_at_A_with_the_base_weight_shape(dims, alpha):
    k, d, r = dims
    layer = randomised_layer(k, d, r, alpha)
    delta = layer.delta_weight()
    assert tuple(delta.shape) == (d, k), msg(
        "02.delta_weight_shape", d=d, k=k, got=tuple(delta.shape)
    )
    scaling = float(layer.scaling)  # your lora_scaling: its value is checked above
    expected = scaling * (layer.lora_B.detach() @ layer.lora_A.detach())
    if torch.allclose(delta.detach(), expected, atol=ATOL * max(1.0, scaling)):
        return
    mistake, factor = update_mistake(delta.detach(), expected, scaling)
    why = {
        "other": lambda: msg("02.delta_weight_not_proportional"),
        "none": lambda: msg("02.delta_weight_no_update"),
        "unscaled": lambda: msg("02.delta_weight_unscaled"),
        "twice": lambda: msg("02.delta_weight_scaled_twice", scaling=scaling),
        "factor": lambda: msg("02.delta_weight_wrong_factor", factor=factor, scaling=scaling),
    }[mistake]()
    pytest.fail(msg("02.delta_weight_value", why=why))


@given(distinct_dims(), st.floats(0.5, 64, allow_nan=False), st.integers(1, 3))
def test_forward_adds_the_scaled_update_to_the_base_output(dims, alpha, batch_dims):
    k, d, r = dims
    layer = randomised_layer(k, d, r, alpha)
    x = seeded_randn(*([2] * batch_dims), k, seed=7)
    got = layer(x)
    assert tuple(got.shape) == (*x.shape[:-1], d), msg(
        "02.forward_shape", k=k, d=d, got=tuple(got.shape), x_shape=tuple(x.shape)
    )
    reference = reference_update(layer, x)
    expected = layer.base(x) + reference
    scale = max(1.0, alpha / r)
    if torch.allclose(got, expected, atol=ATOL * scale, rtol=1e-5):
        return
    scaling = float(layer.scaling)
    mistake, factor = update_mistake((got - layer.base(x)).detach(), reference, scaling)
    why = {
        "other": lambda: msg("02.forward_not_proportional"),
        "none": lambda: msg("02.forward_no_update"),
        "unscaled": lambda: msg("02.forward_unscaled"),
        "twice": lambda: msg("02.forward_scaled_twice", scaling=scaling),
        "factor": lambda: msg("02.forward_wrong_factor", factor=factor, scaling=scaling),
    }[mistake]()
    pytest.fail(msg("02.forward_value", diff=(got - expected).abs().max().item(), why=why))


def test_forward_is_linear_in_the_update():
    """Doubling B doubles the update: no nonlinearity sneaks between A and B."""
    layer = randomised_layer(9, 5, 3, alpha=6)
    x = seeded_randn(4, 9, seed=11)
    base_out = layer.base(x)
    first = layer(x) - base_out
    with torch.no_grad():
        layer.lora_B.mul_(2)
    second = layer(x) - base_out
    assert torch.allclose(second, 2 * first, atol=ATOL), msg("02.update_linear_in_B")


def test_dropout_never_touches_the_base_path():
    layer = lora.LoRALinear(seeded_linear(12, 7), r=3, alpha=3, dropout=0.5)
    layer.train()
    x = seeded_randn(64, 12, seed=5)
    torch.manual_seed(0)
    got = layer(x)  # B = 0: whatever dropout does to the update's input, the update is 0
    assert torch.equal(got, layer.base(x)), msg("02.dropout_not_on_base")


def test_dropout_applies_to_the_updates_input_in_training():
    k, d, r, p = 12, 7, 3, 0.5
    layer = randomised_layer(k, d, r, alpha=6, dropout=p)
    layer.train()
    x = seeded_randn(64, k, seed=5)
    clean = without_dropout(layer)  # your own forward, with nothing dropped
    torch.manual_seed(123)
    got = layer(x)
    torch.manual_seed(123)
    dropped = torch.nn.functional.dropout(x, p=p, training=True)
    with torch.no_grad():
        # base(x) plus the update your forward computes for the dropped input
        expected = layer.base(x) + (clean(dropped) - clean.base(dropped))
        no_dropout = clean(x)
        torch.manual_seed(123)
        on_output = layer.base(x) + torch.nn.functional.dropout(no_dropout - layer.base(x), p=p)
    assert not torch.allclose(no_dropout, layer.base(x), atol=1e-4), msg(
        "02.forward_adds_no_update"
    )
    assert not torch.allclose(got, no_dropout, atol=1e-4), msg("02.dropout_applied")
    assert torch.allclose(got, expected, atol=1e-4), msg(
        "02.dropout_on_the_input_once",
        why=msg("02.dropout_on_the_update_output")
        if torch.allclose(got, on_output, atol=1e-4)
        else msg("02.dropout_not_on_output_or_base"),
    )


def test_no_dropout_in_eval_mode():
    layer = randomised_layer(12, 7, 3, alpha=6, dropout=0.5)
    layer.eval()
    x = seeded_randn(16, 12, seed=5)
    expected = without_dropout(layer)(x)  # your own forward, with nothing dropped
    assert torch.allclose(layer(x), expected, atol=ATOL), msg("02.no_dropout_in_eval")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_output_keeps_the_base_dtype_and_adapters_stay_fp32(dtype):
    base = seeded_linear(8, 6, dtype=dtype)
    layer = lora.LoRALinear(base, r=2, alpha=4)
    with torch.no_grad():
        layer.lora_B.copy_(seeded_randn(6, 2, seed=3))
    x = seeded_randn(3, 8, seed=4).to(dtype)
    out = layer(x)
    assert out.dtype == dtype, msg("02.output_dtype", dtype=dtype, got=out.dtype)
    # Your own forward on an fp32 copy: only the precision may differ, not the maths.
    expected = copy.deepcopy(layer).float()(x.float())
    assert torch.allclose(out.float(), expected, atol=0.05, rtol=0.02), msg(
        "02.output_matches_fp32", dtype=dtype, diff=(out.float() - expected).abs().max().item()
    )


def test_gradients_reach_B_only_at_init_and_never_the_base():
    layer = lora.LoRALinear(seeded_linear(10, 4), r=3, alpha=6)
    x = seeded_randn(8, 10, seed=2)
    out = layer(x)
    assert out.requires_grad, msg("02.output_requires_grad")
    out.pow(2).sum().backward()
    assert layer.base.weight.grad is None, msg("02.base_gets_no_gradient")
    grad = layer.lora_B.grad
    assert grad is not None and grad.abs().sum() > 0, msg(
        "02.B_gets_a_gradient",
        why=msg("02.B_cut_off_from_autograd") if grad is None else msg("02.B_gradient_zero"),
    )
    assert layer.lora_A.grad is None or torch.count_nonzero(layer.lora_A.grad) == 0, msg(
        "02.A_gradient_zero_at_init"
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
@pytest.mark.parametrize("rslora", [False, True])
def test_matches_peft_lora_linear_on_the_same_weights(rslora):
    """Differential check: peft's own LoRA Linear, holding the same W0, A and B."""
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear

    k, d, r, alpha = 11, 7, 3, 5.0
    ours = randomised_layer(k, d, r, alpha)
    peft_base = seeded_linear(k, d)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, use_rslora=rslora)
    theirs = PeftLoraLinear(
        peft_base, "default", config=config, r=r, lora_alpha=alpha, use_rslora=rslora
    )
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x = seeded_randn(4, k, seed=9)
    expected = theirs(x)
    if rslora:  # LoRALinear takes no rslora flag: check the learner's rsLoRA factor instead
        scaling = lora.lora_scaling(alpha, r, rslora=True)
        got = ours.base(x) + scaling * (x @ ours.lora_A.T @ ours.lora_B.T)
    else:
        got = ours(x)
    assert torch.allclose(got, expected, atol=ATOL), msg(
        "02.matches_peft",
        rslora=rslora,
        diff=(got - expected).abs().max().item(),
        scaling=expected_scaling(alpha, r, rslora),
    )
