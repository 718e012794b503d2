"""Exercise 14: DoRA, magnitude and direction (exercises/dora.py).

DoRALinear rescales every output row of V = W0 + s·B·A to a trained length m[i]:
forward(x) = (m/n) ⊙ V·x + bias with n = ||V[i, :]||₂ treated as a constant (no gradient).
Tolerances: fp32, the same terms summed in another order (about 1e-7 relative each): 1e-5,
scaled by the size of the values, leaves room for that and none for a wrong norm, a rescaled
bias or a missing scaling. Models: the tiny OPT (hidden 32, ffn 48) of lora_kata.models.tiny;
every comparison sets A, B and m to random non-zero values, so that "equal" proves something.
"""

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.lora_models import token_batch
from lora_kata.testing.properties import distinct_dims, seeded_linear, seeded_randn
from lora_kata.testing.raising import must_raise

dora = implementation("dora")
lora = implementation("lora")
inject = implementation("inject")
adapter = implementation("adapter")

ATOL = 1e-5
PREFIX = "base_model.model."
MAGNITUDE = "lora_magnitude_vector"
TARGETS = ["q_proj", "v_proj", "fc1"]  # fc1: out (48) ≠ in (32), so rows ≠ columns


def tolerance(*tensors):
    return ATOL * max(1.0, *(t.abs().max().item() for t in tensors))


def dora_layer(k, d, r, alpha=None, seed=0, randomise=False):
    """A DoRALinear on a seeded nn.Linear(k, d) with a bias; randomise: A, B and m non-zero."""
    layer = dora.DoRALinear(seeded_linear(k, d, seed=seed), r=r, alpha=alpha or 2.0 * r)
    magnitude_of(layer)
    if randomise:
        with torch.no_grad():
            layer.lora_A.copy_(seeded_randn(r, k, seed=seed + 1) * 0.5)
            layer.lora_B.copy_(seeded_randn(d, r, seed=seed + 2) * 0.5)
            layer.magnitude.mul_(1 + 0.5 * seeded_randn(d, seed=seed + 3).abs())
    return layer


def magnitude_of(layer):
    """The layer's magnitude, once it is an nn.Parameter of one value per output row."""
    magnitude = getattr(layer, "magnitude", None)
    assert isinstance(magnitude, torch.nn.Parameter), msg(
        "14.magnitude_parameter", got=type(magnitude).__name__
    )
    d, k = layer.base.weight.shape
    assert tuple(magnitude.shape) == (d,), msg(
        "14.magnitude_shape",
        got=tuple(magnitude.shape),
        d=d,
        why=msg("14.one_per_input_column", k=k) if tuple(magnitude.shape) == (k,) else "",
    )
    return magnitude


def check_forward_first(layer, x):
    """Tests of gradients and merging start from a forward pass that is right."""
    with torch.no_grad():
        got = layer(x)
    want = dora_output(*parts(layer), x)
    assert torch.allclose(got, want, atol=tolerance(want)), msg(
        "14.forward_first",
        difference=(got - want).abs().max().item(),
        why=diagnose_forward(layer, x, got),
    )


def parts(layer):
    """(W0, bias, s·B·A, m) of a layer, detached fp32, computed here from its tensors."""
    w0 = layer.base.weight.detach().float().clone()
    bias = layer.base.bias.detach().float()
    delta = (layer.alpha / layer.r) * (layer.lora_B.detach() @ layer.lora_A.detach())
    return w0, bias, delta, layer.magnitude.detach()


def dora_output(w0, bias, delta, m, x):
    """(m/n) ⊙ (W0 + ΔW)·x + bias, n the row norms of W0 + ΔW."""
    v = w0 + delta
    return (m / v.norm(dim=1)) * (x @ v.T) + bias


def diagnose_forward(layer, x, got):
    """The likely mistake behind a wrong forward, or a generic pointer."""
    w0, bias, delta, m = parts(layer)
    v = w0 + delta
    n = v.norm(dim=1)
    unscaled = w0 + delta / (layer.alpha / layer.r)  # V without the scaling s
    candidates = [
        ((m / n) * (x @ v.T + bias), msg("14.bias_rescaled")),
        ((m / w0.norm(dim=1)) * (x @ v.T) + bias, msg("14.norm_of_w0_only")),
        ((m / n) * (x @ unscaled.T) + bias, msg("14.update_unscaled")),
        ((m / unscaled.norm(dim=1)) * (x @ unscaled.T) + bias, msg("14.update_unscaled")),
        (m * (x @ v.T) + bias, msg("14.not_divided_by_the_norm")),
        (x @ v.T + bias, msg("14.magnitude_ignored")),
    ]
    for candidate, why in candidates:
        if torch.allclose(got, candidate, atol=tolerance(candidate)):
            return why
    return msg("14.forward_other")


def fresh_base(seed=0):
    from lora_kata.models.tiny import build_tiny_opt

    return build_tiny_opt(seed)


def dora_opt(seed=0, r=4, lora_alpha=8, target_modules=TARGETS, randomise=True):
    """(model, config): a tiny OPT with inject_dora, A, B and m seeded random when asked."""
    model = fresh_base(seed)
    config = inject.LoRAConfig(r=r, lora_alpha=lora_alpha, target_modules=list(target_modules))
    dora.inject_dora(model, config)
    for layer in dora_layers(model).values():
        magnitude_of(layer)
    if randomise:
        randomise_dora(model, seed + 100)
    return model, config


def randomise_dora(model, seed):
    """Random A and B (ΔW ≠ 0) and magnitudes 1–1.5 × their start, in named order."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith(("lora_A", "lora_B")) or ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            elif "magnitude" in name:
                param.mul_(1 + 0.5 * torch.rand(param.shape, generator=generator))


def dora_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, dora.DoRALinear)}


def logits(model, ids=None):
    ids = token_batch(2, 9) if ids is None else ids
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def save(model, directory, config):
    """save_dora_adapter, or exercise 09's save_adapter extended for DoRA."""
    if hasattr(load_module(), "save_dora_adapter"):
        return dora.save_dora_adapter(model, directory, config)
    return adapter.save_adapter(model, directory, config)


def load_into(model, directory):
    if hasattr(load_module(), "load_dora_adapter"):
        return dora.load_dora_adapter(model, directory)
    return adapter.load_adapter(model, directory)


def load_module():
    from lora_kata.catalog.impl import load

    return load("dora")


def peft_name_to_ours(name):
    name = name.removeprefix(PREFIX)
    for peft_part, ours in (
        (".lora_A.default.weight", ".lora_A"),
        (".lora_B.default.weight", ".lora_B"),
        (f".{MAGNITUDE}.default.weight", ".magnitude"),
    ):
        name = name.replace(peft_part, ours)
    return name


def peft_dora(model_seed=0, r=4, lora_alpha=8, target_modules=TARGETS):
    import warnings

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules),
        use_dora=True,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(fresh_base(model_seed), config)


scalings = st.floats(0.5, 32, allow_nan=False)


# ---------------------------------------------------------------- the layer


@given(distinct_dims(), st.integers(1, 3))
def test_a_new_dora_layer_computes_exactly_its_base_layer(dims, batch_dims):
    k, d, r = dims
    layer = dora_layer(k, d, r)
    x = seeded_randn(*([3] * batch_dims), k, seed=5)
    with torch.no_grad():
        got, want = layer(x), layer.base(x)
    assert got.shape == want.shape, msg(
        "14.output_shape", got=tuple(got.shape), want=tuple(want.shape)
    )
    assert torch.allclose(got, want, atol=tolerance(want)), msg(
        "14.starts_as_base",
        difference=(got - want).abs().max().item(),
        why=msg("14.start_magnitude")
        if not torch.allclose(layer.magnitude.detach(), layer.base.weight.detach().norm(dim=1))
        else diagnose_forward(layer, x.reshape(-1, k), got.reshape(-1, d)),
    )


@given(distinct_dims())
def test_the_magnitude_is_a_trainable_float32_vector_of_the_row_norms_of_w0(dims):
    k, d, r = dims
    layer = dora_layer(k, d, r)
    magnitude = magnitude_of(layer)
    assert magnitude.dtype == torch.float32, msg("14.magnitude_dtype", got=magnitude.dtype)
    assert magnitude.requires_grad, msg("14.magnitude_trains")
    want = layer.base.weight.detach().norm(dim=1)
    assert torch.allclose(magnitude.detach(), want, atol=tolerance(want)), msg(
        "14.magnitude_init",
        got=magnitude.detach()[:3].tolist(),
        want=want[:3].tolist(),
        why=msg("14.magnitude_not_squared_norm")
        if torch.allclose(magnitude.detach(), want**2, atol=tolerance(want**2))
        else "",
    )
    trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
    assert trainable == ["lora_A", "lora_B", "magnitude"], msg("14.layer_trainable", got=trainable)


@given(distinct_dims(), scalings)
def test_forward_rescales_each_row_of_w0_plus_delta_w_to_its_magnitude(dims, alpha):
    k, d, r = dims
    layer = dora_layer(k, d, r, alpha=alpha, randomise=True).eval()
    x = seeded_randn(4, k, seed=7)
    with torch.no_grad():
        got = layer(x)
    want = dora_output(*parts(layer), x)
    assert torch.allclose(got, want, atol=tolerance(want)), msg(
        "14.forward_formula",
        difference=(got - want).abs().max().item(),
        why=diagnose_forward(layer, x, got),
    )


def test_gradients_treat_the_row_norm_as_a_constant():
    layer = dora_layer(11, 7, 3, alpha=6, randomise=True)
    x = seeded_randn(5, 11, seed=8)
    check_forward_first(layer, x)
    upstream = seeded_randn(5, 7, seed=9)
    (layer(x) * upstream).sum().backward()
    w0, bias, _, _ = parts(layer)
    grads = {}
    for detach in (True, False):
        A = layer.lora_A.detach().clone().requires_grad_(True)
        B = layer.lora_B.detach().clone().requires_grad_(True)
        m = layer.magnitude.detach().clone().requires_grad_(True)
        v = w0 + (layer.alpha / layer.r) * (B @ A)
        n = v.norm(dim=1)
        n = n.detach() if detach else n
        ((((m / n) * (x @ v.T) + bias) * upstream).sum()).backward()
        grads[detach] = {"lora_A": A.grad, "lora_B": B.grad, "magnitude": m.grad}
    for name in ("magnitude", "lora_A", "lora_B"):
        got = getattr(layer, name).grad
        assert got is not None, msg("14.no_gradient", name=name)
        want, coupled = grads[True][name], grads[False][name]
        assert torch.allclose(got, want, atol=tolerance(want)), msg(
            "14.gradient",
            name=name,
            difference=(got - want).abs().max().item(),
            why=msg("14.norm_not_detached")
            if torch.allclose(got, coupled, atol=tolerance(coupled))
            else msg("14.gradient_other"),
        )
    assert layer.base.weight.grad is None, msg("14.base_no_gradient")


# ---------------------------------------------------------------- merge and unmerge


@given(distinct_dims(), scalings)
def test_merge_keeps_the_output_and_unmerge_restores_w0(dims, alpha):
    k, d, r = dims
    layer = dora_layer(k, d, r, alpha=alpha, randomise=True).eval()
    x = seeded_randn(3, k, seed=4)
    check_forward_first(layer, x)
    w0, _, delta, m = parts(layer)
    with torch.no_grad():
        before = layer(x)
        layer.merge()
        merged_weight = layer.base.weight.detach().clone()
        merged = layer(x)
    v = w0 + delta
    want_weight = (m / v.norm(dim=1))[:, None] * v
    assert layer.merged is True, msg("14.merge_sets_merged")
    assert torch.allclose(merged_weight, want_weight, atol=tolerance(want_weight)), msg(
        "14.merged_weight",
        difference=(merged_weight - want_weight).abs().max().item(),
        why=msg("14.merged_like_lora")
        if torch.allclose(merged_weight, v, atol=tolerance(v))
        else msg("14.merged_weight_other"),
    )
    assert torch.allclose(merged, before, atol=tolerance(before)), msg(
        "14.merged_output", difference=(merged - before).abs().max().item()
    )
    with torch.no_grad():
        layer.merge()  # a second merge changes nothing
    assert torch.equal(layer.base.weight.detach(), merged_weight), msg("14.second_merge")
    with torch.no_grad():
        layer.unmerge()
        after = layer(x)
    restored = layer.base.weight.detach()
    assert layer.merged is False, msg("14.unmerge_clears_merged")
    assert torch.allclose(restored, w0, atol=tolerance(w0)), msg(
        "14.unmerge_restores",
        difference=(restored - w0).abs().max().item(),
    )
    assert torch.allclose(after, before, atol=tolerance(before)), msg(
        "14.unmerged_output", difference=(after - before).abs().max().item()
    )


def test_merging_into_an_8bit_base_is_refused_with_a_type_error():
    from lora_kata.testing.int8 import load_tiny_opt_in_8bit, tiny_opt_fp16_dir

    model = load_tiny_opt_in_8bit(tiny_opt_fp16_dir())
    name = "model.decoder.layers.0.self_attn.q_proj"
    int8_weight = model.get_submodule(name).weight.detach().clone()
    config = inject.LoRAConfig(r=2, lora_alpha=4, target_modules=["q_proj"])
    try:
        dora.inject_dora(model, config)
    except (TypeError, ValueError):
        return  # refusing the 8-bit base when injecting is a refusal too
    layer = model.get_submodule(name)
    with torch.no_grad():
        layer.lora_B.fill_(0.1)
    with must_raise(
        TypeError,
        msg(
            "common.accepted_bad_input",
            call="layer.merge()",
            expected="TypeError",
            why=msg("14.merge_into_8bit_why"),
        ),
    ):
        layer.merge()
    assert layer.merged is False, msg("14.refused_merge_leaves_merged_false")
    assert torch.equal(layer.base.weight.detach(), int8_weight), msg("14.refused_merge_leaves_int8")


# ---------------------------------------------------------------- a model


def test_inject_dora_follows_inject_loras_rules():
    model, _ = dora_opt(randomise=False)
    layers = dora_layers(model)
    want = [
        f"model.decoder.layers.{i}.{part}"
        for i in range(2)
        for part in ("self_attn.v_proj", "self_attn.q_proj", "fc1")
    ]
    assert sorted(layers) == sorted(want), msg(
        "14.inject_targets", got=sorted(layers), want=sorted(want)
    )
    assert all(isinstance(m, lora.LoRALinear) for m in layers.values()), msg("14.dora_is_lora")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"{n}.{p}" for n in layers for p in ("lora_A", "lora_B", "magnitude")}
    assert trainable == expected, msg(
        "14.inject_trainable",
        extra=sorted(trainable - expected)[:3],
        missing=sorted(expected - trainable)[:3],
    )
    model = fresh_base()
    dora.inject_dora(
        model, inject.LoRAConfig(r=2, lora_alpha=4, target_modules=["q_proj"], bias="lora_only")
    )
    biases = sorted(
        n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")
    )
    want_biases = [f"model.decoder.layers.{i}.self_attn.q_proj.base.bias" for i in range(2)]
    assert biases == want_biases, msg("14.lora_only_bias", got=biases, want=want_biases)
    with must_raise(ValueError, msg("14.no_match_accepted")):
        dora.inject_dora(fresh_base(), inject.LoRAConfig(target_modules=["no_such_layer"]))


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_logits_and_gradients_equal_peft_use_dora_on_the_same_weights():
    ours, _ = dora_opt(seed=0)
    theirs = peft_dora()
    params = dict(ours.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if param.requires_grad:
                param.copy_(params[peft_name_to_ours(name)])
                copied += 1
    trainable = sum(p.requires_grad for p in params.values())
    assert copied == trainable, msg("14.peft_parameters_match", copied=copied, ours=trainable)
    ids = token_batch(2, 9, seed=3)
    ours.train(), theirs.train()
    out_ours = ours(input_ids=ids, labels=ids)
    out_theirs = theirs(input_ids=ids, labels=ids)
    plain = logits(fresh_base(0), ids)
    assert not torch.allclose(out_theirs.logits, plain, atol=1e-3), msg("14.adapter_changes_logits")
    assert torch.allclose(out_ours.logits, out_theirs.logits, rtol=0, atol=1e-5), msg(
        "14.peft_logits", difference=(out_ours.logits - out_theirs.logits).abs().max().item()
    )
    out_ours.loss.backward()
    out_theirs.loss.backward()
    for name, param in theirs.named_parameters():
        if not param.requires_grad:
            continue
        mine = params[peft_name_to_ours(name)].grad
        assert mine is not None, msg("14.no_gradient", name=peft_name_to_ours(name))
        assert torch.allclose(mine, param.grad, rtol=1e-4, atol=1e-6), msg(
            "14.peft_gradient",
            name=peft_name_to_ours(name),
            difference=(mine - param.grad).abs().max().item(),
        )


# ---------------------------------------------------------------- adapter files


def test_a_saved_dora_adapter_says_use_dora_and_holds_one_magnitude_per_layer(tmp_path):
    model, config = dora_opt()
    save(model, tmp_path, config)
    settings = json.loads((tmp_path / "adapter_config.json").read_text(encoding="utf-8"))
    assert settings.get("use_dora") is True, msg("14.use_dora_true", got=settings.get("use_dora"))
    assert settings.get("peft_type") == "LORA" and settings.get("r") == 4, msg(
        "14.config_as_09", got={k: settings.get(k) for k in ("peft_type", "r", "lora_alpha")}
    )
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    for name, layer in dora_layers(model).items():
        key = f"{PREFIX}{name}.{MAGNITUDE}"
        assert key in tensors, msg("14.magnitude_key", key=key, found=sorted(tensors)[:4])
        assert torch.equal(tensors[key], layer.magnitude.detach()), msg(
            "14.magnitude_saved", key=key
        )
        for which in ("lora_A", "lora_B"):
            assert f"{PREFIX}{name}.{which}.weight" in tensors, msg(
                "14.lora_keys_as_09", key=f"{PREFIX}{name}.{which}.weight"
            )


def test_a_dora_adapter_round_trip_restores_the_logits(tmp_path):
    model, config = dora_opt()
    save(model, tmp_path, config)
    loaded = load_into(fresh_base(), tmp_path)
    assert loaded is not None, msg("14.load_returns_model")
    assert sorted(dora_layers(loaded)) == sorted(dora_layers(model)), msg("14.loaded_dora_layers")
    expected, got = logits(model), logits(loaded)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6), msg(
        "14.round_trip_logits", difference=(got - expected).abs().max().item()
    )


def test_a_dora_adapter_without_its_magnitudes_is_an_error(tmp_path):
    from safetensors.torch import save_file

    model, _ = dora_opt()
    # Written here, not by your save: peft's DoRA files with the magnitude tensors left out.
    settings = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": TARGETS}
    settings |= {"use_dora": True, "bias": "none", "lora_dropout": 0.0}
    (tmp_path / "adapter_config.json").write_text(json.dumps(settings), encoding="utf-8")
    tensors = {
        f"{PREFIX}{name}.{which}.weight": getattr(layer, which).detach().contiguous()
        for name, layer in dora_layers(model).items()
        for which in ("lora_A", "lora_B")
    }
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    with must_raise(ValueError, msg("14.missing_magnitude_accepted")) as raised:
        load_into(fresh_base(), tmp_path)
    assert MAGNITUDE in str(raised.value), msg("14.missing_magnitude_named", error=raised.value)


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_peft_loads_our_dora_adapter_with_identical_logits(tmp_path):
    import warnings

    from peft import PeftModel

    model, config = dora_opt()
    save(model, tmp_path, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PeftModel.from_pretrained(fresh_base(), str(tmp_path))
    expected, got = logits(model), logits(theirs)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), msg(
        "14.peft_loads_ours", difference=(got - expected).abs().max().item()
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_a_peft_saved_dora_adapter_loads_with_identical_logits(tmp_path):
    magnitude_of(dora_layer(32, 48, 2))  # one value per output row, before loading into one
    theirs = peft_dora()
    randomise_dora(theirs, 7)
    theirs.save_pretrained(str(tmp_path))
    expected = logits(theirs)
    loaded = load_into(fresh_base(), tmp_path)
    got = logits(loaded)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), msg(
        "14.loads_peft_files", difference=(got - expected).abs().max().item()
    )
