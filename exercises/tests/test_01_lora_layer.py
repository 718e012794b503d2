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

from lora_kata.impl import implementation
from lora_kata.testing import distinct_dims

lora = implementation("lora")


def names_the_argument(message: str, name: str) -> bool:
    """`name` occurs as a word of `message` ("r" in "r must be >= 1", not in "dropout")."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message) is not None


@given(distinct_dims())
def test_lora_A_has_shape_r_by_in_features(dims):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=2 * r)
    assert tuple(layer.lora_A.shape) == (r, k), (
        f"lora_A should be (r, in_features) = ({r}, {k}) for Linear({k} → {d}), "
        f"got {tuple(layer.lora_A.shape)}: A maps the input down to rank r"
    )


@given(distinct_dims())
def test_lora_B_has_shape_out_features_by_r(dims):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=2 * r)
    assert tuple(layer.lora_B.shape) == (d, r), (
        f"lora_B should be (out_features, r) = ({d}, {r}) for Linear({k} → {d}), "
        f"got {tuple(layer.lora_B.shape)}: B maps rank r back up to the output"
    )


@given(distinct_dims())
def test_lora_B_starts_at_zero(dims):
    k, d, r = dims
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=r)
    assert torch.count_nonzero(layer.lora_B) == 0, (
        "lora_B must start as all zeros, so that ΔW = B·A = 0 and the wrapped layer starts "
        "exactly as the pretrained one (is B random, or are A's and B's inits swapped?)"
    )


def test_lora_A_is_kaiming_uniform_within_one_over_sqrt_in_features():
    k, d, r = 400, 7, 64  # enough values to see the distribution's edges
    torch.manual_seed(0)
    layer = lora.LoRALinear(torch.nn.Linear(k, d), r=r, alpha=r)
    values = layer.lora_A.detach()
    # The fan-in is A's second dimension, in_features when A is (r, in_features). Reading it
    # from A itself leaves a wrong shape to the shape test, which names that mistake.
    bound = 1 / math.sqrt(values.shape[-1])
    assert torch.count_nonzero(values) == values.numel(), (
        "lora_A must be random (kaiming_uniform_ with a=math.sqrt(5)), not zero: with A = 0 "
        "and B = 0 no gradient ever reaches either (are A's and B's inits swapped?)"
    )
    largest = values.abs().max().item()
    assert largest <= bound + 1e-7, (
        f"|lora_A| reaches {largest:.4f}, over the kaiming-uniform bound 1/√in_features = "
        f"{bound:.4f}: use nn.init.kaiming_uniform_(A, a=math.sqrt(5)), as nn.Linear does"
    )
    assert largest > 0.9 * bound, (
        f"|lora_A| stays below {largest:.4f}, far inside the bound 1/√in_features = {bound:.4f}: "
        "the fan-in must be in_features (is A created as (in, r), or the bound 1/in?)"
    )
    mean_abs = values.abs().mean().item()
    assert mean_abs == pytest.approx(bound / 2, rel=0.05), (
        f"mean |A| is {mean_abs:.5f}; a uniform draw on ±{bound:.4f} has mean |A| = bound/2 = "
        f"{bound / 2:.5f} (is A normal instead of uniform?)"
    )


def test_lora_A_differs_between_seeds_and_repeats_with_the_same_seed():
    torch.manual_seed(3)
    first = lora.LoRALinear(torch.nn.Linear(9, 5), r=3, alpha=3).lora_A.detach().clone()
    torch.manual_seed(3)
    again = lora.LoRALinear(torch.nn.Linear(9, 5), r=3, alpha=3).lora_A.detach().clone()
    torch.manual_seed(4)
    other = lora.LoRALinear(torch.nn.Linear(9, 5), r=3, alpha=3).lora_A.detach().clone()
    assert torch.equal(first, again), "lora_A must come from torch's RNG (torch.manual_seed)"
    assert not torch.equal(first, other), "lora_A must be random, not a fixed pattern"


@given(distinct_dims())
def test_base_is_kept_and_frozen(dims):
    k, d, r = dims
    base = torch.nn.Linear(k, d)
    layer = lora.LoRALinear(base, r=r, alpha=r)
    assert layer.base is base, "keep the wrapped layer itself as self.base (no copy)"
    assert not base.weight.requires_grad, (
        "the base weight must be frozen (requires_grad False): LoRA trains only A and B"
    )
    assert base.bias is None or not base.bias.requires_grad, (
        "the base bias must be frozen too (requires_grad False)"
    )


def test_adapters_are_trainable_parameters_named_lora_A_and_lora_B():
    layer = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=8)
    trainable = {name for name, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B"}, (
        f"exactly lora_A and lora_B should be trainable parameters, found {sorted(trainable)}"
    )
    for name in ("lora_A", "lora_B"):
        found = type(getattr(layer, name)).__name__
        assert isinstance(getattr(layer, name), torch.nn.Parameter), (
            f"{name} should be a torch.nn.Parameter (so the optimizer sees it), found a {found}: "
            "wrap the tensor in nn.Parameter(...)"
        )
    keys = set(layer.state_dict())
    assert {"base.weight", "base.bias", "lora_A", "lora_B"} <= keys, (
        f"state_dict keys should include base.weight, base.bias, lora_A, lora_B; got {sorted(keys)}"
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_adapters_are_fp32_whatever_the_base_dtype(dtype):
    layer = lora.LoRALinear(torch.nn.Linear(6, 10).to(dtype), r=4, alpha=8)
    assert layer.lora_A.dtype == torch.float32 and layer.lora_B.dtype == torch.float32, (
        f"lora_A/lora_B should be float32 on a {dtype} base (as peft does), got "
        f"{layer.lora_A.dtype}/{layer.lora_B.dtype}: fp16 adapters lose small updates"
    )


def test_adapters_live_on_the_base_weights_device():
    base = torch.nn.Linear(4096, 4096, device="meta")  # no memory: the meta device
    layer = lora.LoRALinear(base, r=16, alpha=32)
    assert layer.lora_A.device.type == "meta" and layer.lora_B.device.type == "meta", (
        "create lora_A/lora_B on base.weight.device (here 'meta'), "
        f"got {layer.lora_A.device}/{layer.lora_B.device}"
    )


def test_records_r_alpha_and_starts_unmerged():
    layer = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=12)
    assert layer.r == 4 and layer.alpha == 12, "store r and alpha as self.r and self.alpha"
    assert layer.merged is False, "a new layer is not merged: set self.merged = False"


def test_dropout_module_is_dropout_with_p_or_identity():
    with_dropout = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=8, dropout=0.05)
    assert isinstance(with_dropout.lora_dropout, torch.nn.Dropout), (
        "lora_dropout should be nn.Dropout(dropout) when dropout > 0"
    )
    assert with_dropout.lora_dropout.p == pytest.approx(0.05), (
        f"lora_dropout should be nn.Dropout(p=0.05) for dropout=0.05, found p = "
        f"{with_dropout.lora_dropout.p}: pass the dropout argument to nn.Dropout"
    )
    without = lora.LoRALinear(torch.nn.Linear(6, 10), r=4, alpha=8)
    assert isinstance(without.lora_dropout, (torch.nn.Identity, torch.nn.Dropout)), (
        "lora_dropout should be nn.Identity() (or nn.Dropout(0.0)) when dropout is 0"
    )
    if isinstance(without.lora_dropout, torch.nn.Dropout):
        assert without.lora_dropout.p == 0, (
            f"with dropout=0 lora_dropout must drop nothing, found nn.Dropout(p="
            f"{without.lora_dropout.p}): use nn.Identity() or nn.Dropout(0.0)"
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
    try:
        lora.LoRALinear(torch.nn.Linear(6, 10), **kwargs)
    except ValueError as error:
        message = str(error)
    except NotImplementedError:
        raise  # the stub: the report says "not started", not "wrong exception"
    except Exception as error:  # say what was raised instead, not a bare traceback
        pytest.fail(
            f"LoRALinear(..., {kwargs}) should raise a ValueError naming {names!r}; it raised "
            f"{type(error).__name__}: {error} (check the argument before using it)"
        )
    else:
        pytest.fail(f"LoRALinear(..., {kwargs}) was accepted: raise a ValueError naming {names!r}")
    assert names_the_argument(message, names), (
        f"the ValueError for {kwargs} should name {names!r} (as a word) so the user knows what "
        f"to fix; it said: {message}"
    )


@given(st.integers(1, 64), st.floats(0.5, 128, allow_nan=False))
def test_accepts_any_positive_rank_and_alpha(r, alpha):
    layer = lora.LoRALinear(torch.nn.Linear(5, 3), r=r, alpha=alpha)
    kept = (layer.r, layer.alpha)
    assert kept == (r, alpha), (
        f"r={r}, alpha={alpha} is valid and should be kept as given, found (r, alpha) = {kept} "
        "(is a valid value rejected, clamped or rounded?)"
    )
