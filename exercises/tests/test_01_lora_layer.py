"""Exercise 01: the LoRA layer's shapes and initialisation (exercises/lora.py).

Each test name is the rule it checks. Sizes come from Hypothesis with in ≠ out ≠ r, so a
transposed or swapped shape cannot pass by accident.
"""

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.properties import distinct_dims
from lora_kata.testing.raising import must_raise

lora = implementation("lora")


def names_the_argument(message: str, name: str) -> bool:
    """`name` occurs as a word of `message` ("r" in "r must be >= 1", not in "dropout")."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message) is not None


@given(distinct_dims())
def test_lora_A_has_shape_r_by_in_features(dims):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=2 * r)
    assert tuple(layer.lora_A.shape) == (r, k), msg(
        "01.lora_A_shape", r=r, k=k, d=d, got=tuple(layer.lora_A.shape)
    )


@given(distinct_dims())
def test_lora_B_has_shape_out_features_by_r(dims):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=2 * r)
    assert tuple(layer.lora_B.shape) == (d, r), msg(
        "01.lora_B_shape", r=r, k=k, d=d, got=tuple(layer.lora_B.shape)
    )


@given(distinct_dims())
def test_lora_B_starts_at_zero(dims):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=r)
    assert torch.count_nonzero(layer.lora_B) == 0, msg("01.B_starts_at_zero")


def test_lora_A_is_kaiming_uniform_within_one_over_sqrt_in_features():
    k, d, r = 400, 7, 64  # enough values to see the distribution's edges
    torch.manual_seed(0)
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=r)
    values = layer.lora_A.detach()
    # The fan-in is A's second dimension, in_features when A is (r, in_features). Reading it
    # from A itself leaves a wrong shape to the shape test, which names that mistake.
    bound = 1 / math.sqrt(values.shape[-1])
    assert torch.count_nonzero(values) == values.numel(), msg("01.A_not_zero")
    largest = values.abs().max().item()
    assert largest <= bound + 1e-7, msg("01.A_within_bound", largest=largest, bound=bound)
    assert largest > 0.9 * bound, msg("01.A_reaches_bound", largest=largest, bound=bound)
    mean_abs = values.abs().mean().item()
    assert mean_abs == pytest.approx(bound / 2, rel=0.05), msg(
        "01.A_uniform_mean", mean_abs=mean_abs, bound=bound, half=bound / 2
    )


def test_lora_A_differs_between_seeds_and_repeats_with_the_same_seed():
    torch.manual_seed(3)
    first = lora.LoRALinear(torch.nn.Linear(9, 5), r=3, alpha=3).lora_A.detach().clone()
    torch.manual_seed(3)
    again = lora.LoRALinear(torch.nn.Linear(9, 5), r=3, alpha=3).lora_A.detach().clone()
    torch.manual_seed(4)
    other = lora.LoRALinear(torch.nn.Linear(9, 5), r=3, alpha=3).lora_A.detach().clone()
    assert torch.equal(first, again), msg("01.A_from_torch_rng")
    assert not torch.equal(first, other), msg("01.A_is_random")


@given(distinct_dims())
def test_base_is_kept_and_frozen(dims):
    k, d, r = dims
    base = torch.nn.Linear(k, d)
    layer = lora.LoRALinear(base, r=r, alpha=r)
    assert layer.base is base, msg("01.base_kept")
    assert not base.weight.requires_grad, msg("01.base_weight_frozen")
    assert base.bias is None or not base.bias.requires_grad, msg("01.base_bias_frozen")


def test_adapters_are_trainable_parameters_named_lora_A_and_lora_B():
    layer = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=8)
    trainable = {name for name, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B"}, msg(
        "01.only_adapters_trainable", trainable=sorted(trainable)
    )
    for name in ("lora_A", "lora_B"):
        found = type(getattr(layer, name)).__name__
        assert isinstance(getattr(layer, name), torch.nn.Parameter), msg(
            "01.adapter_is_parameter", name=name, found=found
        )
    keys = set(layer.state_dict())
    assert {"base.weight", "base.bias", "lora_A", "lora_B"} <= keys, msg(
        "01.state_dict_keys", keys=sorted(keys)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_adapters_are_fp32_whatever_the_base_dtype(dtype):
    layer = lora.LoRALinear(torch.nn.Linear(6, 10).to(dtype), r=4, alpha=8)
    assert layer.lora_A.dtype == torch.float32 and layer.lora_B.dtype == torch.float32, msg(
        "01.adapters_fp32", dtype=dtype, a_dtype=layer.lora_A.dtype, b_dtype=layer.lora_B.dtype
    )


def test_adapters_live_on_the_base_weights_device():
    base = torch.nn.Linear(4096, 4096, device="meta")  # no memory: the meta device
    layer = lora.LoRALinear(base, r=16, alpha=32)
    assert layer.lora_A.device.type == "meta" and layer.lora_B.device.type == "meta", msg(
        "01.adapters_on_base_device", a_device=layer.lora_A.device, b_device=layer.lora_B.device
    )


def test_records_r_alpha_and_starts_unmerged():
    layer = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=12)
    assert layer.r == 4 and layer.alpha == 12, msg("01.r_alpha_stored")
    assert layer.merged is False, msg("01.starts_unmerged")


def test_dropout_module_is_dropout_with_p_or_identity():
    with_dropout = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=8, dropout=0.05)
    assert isinstance(with_dropout.lora_dropout, torch.nn.Dropout), msg("01.dropout_module")
    assert with_dropout.lora_dropout.p == pytest.approx(0.05), msg(
        "01.dropout_p", p=with_dropout.lora_dropout.p
    )
    without = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=8)
    assert isinstance(without.lora_dropout, (torch.nn.Identity, torch.nn.Dropout)), msg(
        "01.no_dropout_module"
    )
    if isinstance(without.lora_dropout, torch.nn.Dropout):
        assert without.lora_dropout.p == 0, msg(
            "01.no_dropout_drops_nothing", p=without.lora_dropout.p
        )


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(r=0, alpha=8), "r"),
        (dict(r=-2, alpha=8), "r"),
        (dict(r=2.0, alpha=8), "r"),
        (dict(r=True, alpha=8), "r"),
        (dict(r=4, alpha=0), "alpha"),
        (dict(r=4, alpha=-1.5), "alpha"),
        (dict(r=4, alpha=8, dropout=-0.1), "dropout"),
        (dict(r=4, alpha=8, dropout=1.0), "dropout"),
    ],
    ids=["r=0", "r<0", "r=2.0", "r=True", "alpha=0", "alpha<0", "dropout<0", "dropout=1"],
)
def test_rejects_bad_hyperparameters_with_a_value_error_naming_them(kwargs, names):
    def raised_another(error: Exception) -> str:  # what was raised instead, not a traceback
        return msg(
            "01.bad_hyperparameter_wrong_error",
            kwargs=kwargs,
            names=names,
            error_type=type(error).__name__,
            error=error,
        )

    accepted = msg("01.bad_hyperparameter_accepted", kwargs=kwargs, names=names)
    with must_raise(ValueError, accepted, instead=raised_another) as raised:
        lora.LoRALinear(torch.nn.Linear(6, 10), **kwargs)
    message = str(raised.value)
    assert names_the_argument(message, names), msg(
        "01.bad_hyperparameter_named", kwargs=kwargs, names=names, message=message
    )


@given(st.integers(1, 64), st.floats(0.5, 128, allow_nan=False))
def test_accepts_any_positive_rank_and_alpha(r, alpha):
    layer = lora.LoRALinear(torch.nn.Linear(5, 3), r=r, alpha=alpha)
    kept = (layer.r, layer.alpha)
    assert kept == (r, alpha), msg("01.valid_values_kept", r=r, alpha=alpha, kept=kept)
