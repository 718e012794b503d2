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

from lora_kata.impl import implementation
from lora_kata.testing import distinct_dims, seeded_linear, seeded_randn

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


def without_dropout(layer):
    """The same layer (same weights) with lora_dropout replaced by nn.Identity: what the
    layer computes when nothing is dropped, by your own forward."""
    clean = copy.deepcopy(layer)
    clean.lora_dropout = torch.nn.Identity()
    return clean


@given(st.floats(0.25, 256, allow_nan=False), st.integers(1, 256))
def test_scaling_is_alpha_over_r(alpha, r):
    assert lora.lora_scaling(alpha, r) == pytest.approx(alpha / r, rel=1e-12), (
        f"lora_scaling({alpha}, {r}) should be alpha / r = {alpha / r}"
    )


@given(st.floats(0.25, 256, allow_nan=False), st.integers(2, 256))
def test_rslora_scaling_is_alpha_over_sqrt_r(alpha, r):
    got = lora.lora_scaling(alpha, r, rslora=True)
    assert got == pytest.approx(alpha / math.sqrt(r), rel=1e-12), (
        f"lora_scaling({alpha}, {r}, rslora=True) should be alpha / sqrt(r) = "
        f"{alpha / math.sqrt(r):.6g}, got {got!r} (is rslora ignored?)"
    )


def test_tutorial_scaling_is_two():
    assert lora.lora_scaling(32, 16) == 2.0, "the tutorial's r=16, lora_alpha=32 give s = 2"
    got = lora.lora_scaling(32, 16, rslora=True)
    assert got == 8.0, (
        f"with rslora=True, r=16, lora_alpha=32 give s = 32 / √16 = 8.0, got {got!r} "
        "(is rslora ignored?)"
    )


@given(distinct_dims(), st.floats(0.5, 64, allow_nan=False))
def test_layer_scaling_is_alpha_over_r(dims, alpha):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=alpha)
    assert float(layer.scaling) == pytest.approx(alpha / r), (
        f"layer.scaling should be alpha / r = {alpha / r:.6g}, got {layer.scaling!r}"
    )


@given(distinct_dims())
def test_output_equals_the_base_output_exactly_at_init(dims):
    k, d, r = dims
    base = seeded_linear(k, d)
    x = seeded_randn(5, k)
    expected = base(x)
    layer = lora.LoRALinear(base, r=r, alpha=2 * r)
    got = layer(x)
    assert torch.equal(got, expected), (
        "a fresh LoRALinear must return exactly base(x): B = 0 makes the update zero "
        f"(max difference {(got - expected).abs().max().item():.3g})"
    )


@given(distinct_dims(), st.floats(0.5, 64, allow_nan=False))
def test_delta_weight_is_scaling_times_B_at_A_with_the_base_weight_shape(dims, alpha):
    k, d, r = dims
    layer = randomised_layer(k, d, r, alpha)
    delta = layer.delta_weight()
    assert tuple(delta.shape) == (d, k), (
        f"delta_weight() should have base.weight's shape (out, in) = ({d}, {k}), got "
        f"{tuple(delta.shape)} (is ΔW transposed: A·B or (B·A).T?)"
    )
    scaling = float(layer.scaling)  # your lora_scaling: its value is checked above
    expected = scaling * (layer.lora_B.detach() @ layer.lora_A.detach())
    unscaled = torch.allclose(delta.detach(), expected / scaling, atol=ATOL)
    assert torch.allclose(delta.detach(), expected, atol=ATOL * max(1.0, scaling)), (
        "delta_weight() should be self.scaling · B @ A"
        + (
            ": it is B @ A unscaled (did you forget the scaling?)"
            if unscaled
            else " (did you forget the scaling, or multiply A @ B?)"
        )
    )


@given(distinct_dims(), st.floats(0.5, 64, allow_nan=False), st.integers(1, 3))
def test_forward_adds_the_scaled_update_to_the_base_output(dims, alpha, batch_dims):
    k, d, r = dims
    layer = randomised_layer(k, d, r, alpha)
    x = seeded_randn(*([2] * batch_dims), k, seed=7)
    got = layer(x)
    assert tuple(got.shape) == (*x.shape[:-1], d), (
        f"forward maps (..., {k}) to (..., {d}); got {tuple(got.shape)} from {tuple(x.shape)}"
    )
    expected = layer.base(x) + reference_update(layer, x)
    scale = max(1.0, alpha / r)
    unscaled = layer.base(x) + reference_update(layer, x) / float(layer.scaling)
    missing = torch.allclose(got, unscaled, atol=ATOL * scale, rtol=1e-5)
    assert torch.allclose(got, expected, atol=ATOL * scale, rtol=1e-5), (
        "forward should be base(x) + self.scaling · x Aᵀ Bᵀ; max difference "
        f"{(got - expected).abs().max().item():.3g}"
        + (
            ": the update is added unscaled (scaling missing in forward)"
            if missing
            else " (is the update unscaled, or transposed?)"
        )
    )


def test_forward_is_linear_in_the_update():
    """Doubling B doubles the update: no nonlinearity sneaks between A and B."""
    layer = randomised_layer(9, 5, 3, alpha=6)
    x = seeded_randn(4, 9, seed=11)
    base_out = layer.base(x)
    first = layer(x) - base_out
    with torch.no_grad():
        layer.lora_B.mul_(2)
    second = layer(x) - base_out
    assert torch.allclose(second, 2 * first, atol=ATOL), "the update must be linear in B"


def test_dropout_never_touches_the_base_path():
    layer = lora.LoRALinear(seeded_linear(12, 7), r=3, alpha=3, dropout=0.5)
    layer.train()
    x = seeded_randn(64, 12, seed=5)
    torch.manual_seed(0)
    got = layer(x)  # B = 0: whatever dropout does to the update's input, the update is 0
    assert torch.equal(got, layer.base(x)), (
        "with B = 0 the output must be exactly base(x) even in training mode: dropout belongs "
        "on the update's input only, not on the base path or on the output"
    )


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
    assert not torch.allclose(no_dropout, layer.base(x), atol=1e-4), (
        "with random A and B (and dropout off) forward returns base(x) alone: it adds no "
        "update, so dropout cannot be judged (test_forward_adds_the_scaled_update_to_the_base_"
        "output says what forward should add)"
    )
    assert not torch.allclose(got, no_dropout, atol=1e-4), (
        "in training mode with dropout=0.5 the update should see dropout(x): is lora_dropout "
        "never applied?"
    )
    assert torch.allclose(got, expected, atol=1e-4), (
        "training output should be base(x) + s · B A dropout(x), using self.lora_dropout on the "
        "update's input once"
        + (
            ": dropout is applied to the update's output instead"
            if torch.allclose(got, on_output, atol=1e-4)
            else " (not on the update's output, and not on the base path)"
        )
    )


def test_no_dropout_in_eval_mode():
    layer = randomised_layer(12, 7, 3, alpha=6, dropout=0.5)
    layer.eval()
    x = seeded_randn(16, 12, seed=5)
    expected = without_dropout(layer)(x)  # your own forward, with nothing dropped
    assert torch.allclose(layer(x), expected, atol=ATOL), (
        "in eval mode dropout must do nothing: use the nn.Dropout module (self.lora_dropout), "
        "which follows .train()/.eval(), not a dropout call with training=True"
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_output_keeps_the_base_dtype_and_adapters_stay_fp32(dtype):
    base = seeded_linear(8, 6, dtype=dtype)
    layer = lora.LoRALinear(base, r=2, alpha=4)
    with torch.no_grad():
        layer.lora_B.copy_(seeded_randn(6, 2, seed=3))
    x = seeded_randn(3, 8, seed=4).to(dtype)
    out = layer(x)
    assert out.dtype == dtype, (
        f"forward on a {dtype} base with {dtype} input should return {dtype}, got {out.dtype}: "
        "cast the update back to base(x)'s dtype"
    )
    # Your own forward on an fp32 copy: only the precision may differ, not the maths.
    expected = copy.deepcopy(layer).float()(x.float())
    assert torch.allclose(out.float(), expected, atol=0.05, rtol=0.02), (
        f"on a {dtype} base the output should match the same layer in fp32 to {dtype} "
        f"rounding; max difference {(out.float() - expected).abs().max().item():.3g} (is the "
        "update computed in low precision, or lost in the cast?)"
    )


def test_gradients_reach_B_only_at_init_and_never_the_base():
    layer = lora.LoRALinear(seeded_linear(10, 4), r=3, alpha=6)
    x = seeded_randn(8, 10, seed=2)
    out = layer(x)
    assert out.requires_grad, (
        "the output does not require grad: the update is cut off from autograd "
        "(torch.no_grad, .detach() or .data in forward?)"
    )
    out.pow(2).sum().backward()
    assert layer.base.weight.grad is None, "the frozen base weight must get no gradient"
    grad = layer.lora_B.grad
    assert grad is not None and grad.abs().sum() > 0, (
        "at init B must get a gradient (A is random): "
        + (
            "is the update cut off from autograd (torch.no_grad, .detach(), .data)?"
            if grad is None
            else "B's gradient is all zeros, so B never enters the output as s · x Aᵀ Bᵀ "
            "(is the update multiplied away, or built from other tensors?)"
        )
    )
    assert layer.lora_A.grad is None or torch.count_nonzero(layer.lora_A.grad) == 0, (
        "at init A's gradient is Bᵀ·(…) = 0, since B = 0"
    )


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
    assert torch.allclose(got, expected, atol=ATOL), (
        f"output differs from peft's LoRA Linear (rslora={rslora}) holding the same weights, by "
        f"up to {(got - expected).abs().max().item():.3g}: peft computes base(x) + "
        f"{expected_scaling(alpha, r, rslora):g} · x Aᵀ Bᵀ (check the scaling and the forward)"
    )
