"""Exercise 04: finding target modules and injecting LoRA (exercises/inject.py).

Most tests use a tiny OPT (hidden 32, 2 layers; lora_kata.tiny), whose attention block holds,
in this order: k_proj, v_proj, q_proj, out_proj; then fc1, fc2 and layer norms. The last tests
compare with peft's get_peft_model on the same model (fp32, and loaded in 8-bit on the CPU)
and reproduce the tutorial's opt-6.7b line with your inject_lora, on the meta device.
"""

import copy
import re

import pytest
import torch

from lora_kata.impl import implementation

inject = implementation("inject")
lora = implementation("lora")
counting = implementation("counting")

TUTORIAL_LINE = (
    "trainable params: 8388608 || all params: 6666862592 || trainable%: 0.12582542214183376"
)
ATTN = "model.decoder.layers.{}.self_attn.{}"
Q_AND_V = [ATTN.format(i, p) for i in (0, 1) for p in ("v_proj", "q_proj")]  # model order


def names_the_argument(message: str, name: str) -> bool:
    """`name` occurs as a word of `message` ("r" in "r must be >= 1", not in "lora_dropout")."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message) is not None


def tiny_opt(seed=0):
    from lora_kata.tiny import build_tiny_opt

    return build_tiny_opt(seed)


def tokens():
    from lora_kata.testing_models import token_batch

    return token_batch()


def config(**kwargs):
    settings = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    settings.update(kwargs)
    return inject.LoRAConfig(**settings)


def lora_layers(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, lora.LoRALinear)}


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def lora_names(targets):
    return {f"{t}.{m}" for t in targets for m in ("lora_A", "lora_B")}


def bias_names(model):
    return {n for n, _ in model.named_parameters() if n == "bias" or n.endswith(".bias")}


@pytest.fixture(scope="module")
def opt_6_7b():
    from lora_kata.testing_models import opt_6_7b_on_meta

    return opt_6_7b_on_meta()


@pytest.fixture(scope="module")
def tiny_opt_dir(tmp_path_factory):
    from lora_kata.tiny import save_tiny_opt

    return save_tiny_opt(tmp_path_factory.mktemp("tiny_opt"), with_tokenizer=False)


# ---- LoRAConfig ---------------------------------------------------------------------------


def test_config_has_peft_field_names_and_defaults():
    cfg = inject.LoRAConfig()
    got = (cfg.r, cfg.lora_alpha, tuple(cfg.target_modules), cfg.lora_dropout, cfg.bias)
    assert got == (8, 8.0, ("q_proj", "v_proj"), 0.0, "none"), (
        f"LoRAConfig() should default to r=8, lora_alpha=8.0, target_modules=('q_proj', "
        f"'v_proj'), lora_dropout=0.0, bias='none'; got {got}"
    )


def test_config_accepts_the_tutorials_settings_and_every_bias_mode():
    cfg = inject.LoRAConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none"
    )
    got = (cfg.r, cfg.lora_alpha, cfg.lora_dropout)
    assert got == (16, 32, 0.05), (
        f"LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.05) should keep those values, found "
        f"(r, lora_alpha, lora_dropout) = {got}: store the fields as given"
    )
    for bias in ("none", "all", "lora_only"):
        kept = inject.LoRAConfig(bias=bias).bias
        assert kept == bias, (
            f"bias={bias!r} is one of peft's modes and should be accepted and kept, found {kept!r}"
        )
    assert inject.LoRAConfig(target_modules=r".*\.q_proj").target_modules == r".*\.q_proj", (
        "target_modules may also be a string (a regex): keep it as given"
    )


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(r=0), "r"),
        (dict(r=-4), "r"),
        (dict(r=2.5), "r"),
        (dict(r=True), "r"),
        (dict(lora_alpha=0), "lora_alpha"),
        (dict(lora_alpha=-8), "lora_alpha"),
        (dict(lora_dropout=-0.1), "lora_dropout"),
        (dict(lora_dropout=1.0), "lora_dropout"),
        (dict(bias="lora"), "bias"),
        (dict(bias="None"), "bias"),
        (dict(target_modules=[]), "target_modules"),
        (dict(target_modules=()), "target_modules"),
        (dict(target_modules=""), "target_modules"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_config_rejects_bad_values_with_a_message_naming_the_field(kwargs, field):
    try:
        inject.LoRAConfig(**kwargs)
    except ValueError as error:
        assert names_the_argument(str(error), field), (
            f"the ValueError for {kwargs} should name {field!r} (as a word) so the user knows "
            f"what to fix; it said: {error}"
        )
    except NotImplementedError:
        raise  # the stub: the report says "not started", not "wrong exception"
    except Exception as error:  # say what was raised instead, not a bare traceback
        pytest.fail(
            f"LoRAConfig({kwargs}) should raise a ValueError naming {field!r} in __post_init__; "
            f"it raised {type(error).__name__}: {error}"
        )
    else:
        pytest.fail(f"LoRAConfig({kwargs}) was accepted: __post_init__ should raise ValueError")


# ---- find_target_modules ------------------------------------------------------------------


def test_list_targets_match_by_name_suffix_in_model_order():
    model = tiny_opt()
    got = inject.find_target_modules(model, ["q_proj", "v_proj"])
    assert got == Q_AND_V, (
        f"['q_proj', 'v_proj'] should select, in model order (v_proj comes before q_proj in "
        f"OPT's attention), {Q_AND_V}; got {got}"
    )


def test_list_targets_match_whole_name_parts_not_substrings():
    model = tiny_opt()
    for targets in (["proj"], ["_proj"], ["elf_attn.q_proj"], ["q"]):
        got = inject.find_target_modules(model, targets)
        assert got == [], (
            f"{targets} should match nothing (an entry equals a whole name or the part after a "
            f"'.'), got {got[:3]}...: substring matching (t in name), or endswith without the '.'?"
        )
    got = inject.find_target_modules(model, ["self_attn.q_proj"])
    assert got == [ATTN.format(0, "q_proj"), ATTN.format(1, "q_proj")], (
        f"['self_attn.q_proj'] matches a name's end after a '.': expected both q_proj, got {got}"
    )


def test_a_full_dotted_name_matches_only_that_module():
    model = tiny_opt()
    name = ATTN.format(1, "out_proj")
    got = inject.find_target_modules(model, [name])
    assert got == [name], f"the full dotted name [{name!r}] should select only itself, got {got}"


def test_a_string_is_a_regex_that_must_match_the_whole_name():
    model = tiny_opt()
    got = inject.find_target_modules(model, r".*\.(q|v)_proj")
    assert got == Q_AND_V, f"the regex r'.*\\.(q|v)_proj' should select {Q_AND_V}, got {got}"
    got = inject.find_target_modules(model, "q_proj")
    assert got == [], (
        f"the string 'q_proj' is a regex that must match a WHOLE name, so it matches nothing; "
        f"got {got}: re.search (or a list of one name) instead of re.fullmatch?"
    )
    got = inject.find_target_modules(model, r"model\.decoder\.layers\.0\.self_attn")
    assert got == ["model.decoder.layers.0.self_attn"], (
        f"r'model\\.decoder\\.layers\\.0\\.self_attn' should fullmatch the attention block only, "
        f"not its children; got {got}: re.match instead of re.fullmatch?"
    )


def test_finds_the_64_tutorial_targets_in_opt_6_7b(opt_6_7b):
    got = inject.find_target_modules(opt_6_7b, ["q_proj", "v_proj"])
    assert len(got) == 64, f"opt-6.7b has 32 layers × (q_proj, v_proj) = 64 targets, got {len(got)}"
    got = inject.find_target_modules(opt_6_7b, r".*layers\.(0|1)\.self_attn\.q_proj")
    assert got == [ATTN.format(0, "q_proj"), ATTN.format(1, "q_proj")], (
        f"r'.*layers\\.(0|1)\\.self_attn\\.q_proj' should select q_proj of layers 0 and 1 (not "
        f"10-19, 100...), got {got[:4]}"
    )


# ---- inject_lora --------------------------------------------------------------------------


def test_inject_wraps_each_target_in_place_at_the_same_name():
    model = tiny_opt()
    originals = {name: model.get_submodule(name) for name in Q_AND_V}
    k_proj = model.get_submodule(ATTN.format(0, "k_proj"))
    returned = inject.inject_lora(model, config(lora_dropout=0.05))
    assert returned is model, "inject_lora works in place and returns the same model object"
    for name, original in originals.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, lora.LoRALinear), (
            f"{name} should now be a LoRALinear, found {type(layer).__name__}: set it on the "
            "parent module (setattr(model, 'a.b.c', ...) adds a new child named 'a.b.c')"
        )
        assert layer.base is original, f"{name}.base should be the original layer, not a copy"
        assert (layer.r, layer.alpha) == (4, 8), "pass config.r and config.lora_alpha on"
        assert getattr(layer.lora_dropout, "p", 0.0) == pytest.approx(0.05), (
            "pass config.lora_dropout on to LoRALinear"
        )
    assert model.get_submodule(ATTN.format(0, "k_proj")) is k_proj, "k_proj is not a target"
    assert set(lora_layers(model)) == set(Q_AND_V), (
        f"exactly the targets should be LoRALinear: found {sorted(lora_layers(model))}"
    )
    assert "." not in "".join(name for name, _ in model.named_children()), (
        "a child with a dotted name was added to the root: setattr on the parent instead"
    )


def test_everything_but_lora_is_frozen():
    model = inject.inject_lora(tiny_opt(), config())
    got = trainable_names(model)
    expected = lora_names(Q_AND_V)
    assert not got - expected, (
        f"non-targets left trainable after inject_lora: {sorted(got - expected)[:3]}...; "
        "freeze every parameter of the model, then wrap"
    )
    assert got == expected, (
        f"LoRA frozen: {sorted(expected - got)[:2]}... should train. Freeze everything first, "
        "then wrap (new lora_A/lora_B are created trainable)"
    )


def test_trainable_count_is_r_times_in_plus_out_per_target():
    model = inject.inject_lora(tiny_opt(), config(r=3, target_modules=["q_proj", "fc1"]))
    # q_proj: 32 → 32, fc1: 32 → 48, in both layers
    expected = 2 * (3 * (32 + 32) + 3 * (32 + 48))
    trainable, total = counting.count_parameters(model)
    assert trainable == expected, f"expected {expected} trainable parameters, got {trainable}"
    before = counting.count_parameters(tiny_opt())[1]
    assert total == before + expected, (
        f"injection adds only the LoRA matrices: total should be {before} + {expected} = "
        f"{before + expected}, got {total} (was a weight copied, or a layer counted twice?)"
    )


def test_bias_all_trains_every_bias_in_the_model():
    model = inject.inject_lora(tiny_opt(), config(bias="all"))
    got = trainable_names(model) - lora_names(Q_AND_V)
    expected = bias_names(model)
    missing, extra = sorted(expected - got), sorted(got - expected)
    assert got == expected, (
        ('bias="all" treated as "lora_only"? ' if missing and not extra else "")
        + "every bias in the model should train (layer norms, fc1, k_proj... too) and nothing "
        f"else but LoRA: missing {missing[:3]}, extra {extra[:3]}"
        + (" (non-bias weights left trainable?)" if extra else "")
    )


def test_bias_lora_only_trains_only_the_wrapped_layers_biases():
    model = inject.inject_lora(tiny_opt(), config(bias="lora_only"))
    got = trainable_names(model) - lora_names(Q_AND_V)
    expected = {f"{t}.base.bias" for t in Q_AND_V}
    assert got == expected, (
        f'bias="lora_only" should train the biases of the wrapped layers only ({sorted(expected)}'
        f"), got {sorted(got)}"
    )


def test_bias_none_trains_no_bias():
    model = inject.inject_lora(tiny_opt(), config(bias="none"))
    got = trainable_names(model) & bias_names(model)
    assert not got, f'bias="none" should leave every bias frozen, found trainable {sorted(got)}'


def test_no_match_raises_a_value_error_naming_the_targets():
    model = tiny_opt()
    try:
        inject.inject_lora(model, config(target_modules=["query", "value"]))
    except ValueError as error:
        assert "query" in str(error), (
            f"the ValueError should show the target_modules that matched nothing, said: {error}"
        )
    else:
        pytest.fail(
            "inject_lora returned silently when target_modules ['query', 'value'] matched "
            "nothing: a silent no-match trains nothing; raise ValueError naming the targets"
        )
    assert not lora_layers(model), (
        f"a refused inject_lora should leave the model as it was, found LoRA layers at "
        f"{sorted(lora_layers(model))}"
    )


def test_a_match_that_is_not_linear_raises_a_type_error_naming_it():
    for targets, culprit in (
        (["embed_tokens"], "embed_tokens"),
        (r".*layers\.0\.final_layer_norm", "final_layer_norm"),
        (["self_attn"], "self_attn"),
    ):
        with pytest.raises(TypeError) as caught:
            inject.inject_lora(tiny_opt(), config(target_modules=targets))
        assert culprit in str(caught.value), (
            f"the TypeError for {targets!r} should name the module that is not linear "
            f"({culprit}); it said: {caught.value}"
        )


def test_a_failed_inject_leaves_the_model_untouched():
    model = tiny_opt()
    # layer 0: q_proj (linear) comes before self_attn_layer_norm (not linear)
    bad = config(target_modules=r".*\.(q_proj|self_attn_layer_norm)")
    with pytest.raises(TypeError):
        inject.inject_lora(model, bad)
    assert not lora_layers(model), (
        f"a failed inject_lora wrapped {sorted(lora_layers(model))} before raising: check every "
        "match first, then change the model"
    )
    assert all(p.requires_grad for p in model.parameters()), (
        "a failed inject_lora froze the model before raising: check every match first"
    )


def test_injecting_twice_is_refused():
    model = inject.inject_lora(tiny_opt(), config())
    # ValueError ("already injected") or TypeError ("a LoRALinear is not a linear layer"):
    # either tells the user what is wrong, so either message is accepted.
    try:
        inject.inject_lora(model, config())
    except (ValueError, TypeError) as error:
        said = str(error)
    else:
        pytest.fail(
            "a second inject_lora on the same layers returned: it should refuse (LoRA is "
            "already there) with a ValueError or TypeError, not wrap LoRA inside LoRA"
        )
    assert "already" in said.lower() or "loralinear" in said.lower(), (
        "a second inject_lora on the same layers should say LoRA is already there (or that "
        f"the match is a LoRALinear, not a plain linear layer); it said: {said}"
    )
    with pytest.raises((ValueError, TypeError)):
        inject.inject_lora(model, config(target_modules=r".*\.q_proj\.base"))
    layers = lora_layers(model)
    assert set(layers) == set(Q_AND_V) and not any(
        isinstance(layer.base, lora.LoRALinear) for layer in layers.values()
    ), f"LoRA was wrapped inside LoRA: {sorted(layers)}"


def test_output_is_unchanged_right_after_injection():
    model = tiny_opt()
    x = tokens()
    with torch.no_grad():
        expected = model(x).logits
        got = inject.inject_lora(model, config()).eval()(x).logits
    assert torch.equal(got, expected), (
        "right after injection the model must compute exactly what it did (B = 0); max "
        f"difference {(got - expected).abs().max().item():.3g}"
    )


def test_gradients_reach_only_the_lora_matrices():
    model = inject.inject_lora(tiny_opt(), config())
    x = tokens()
    trainable = trainable_names(model)
    assert trainable, (
        "nothing is trainable after inject_lora, so no gradient can flow: LoRA frozen? "
        "Freeze everything first, then wrap"
    )
    model(x, labels=x).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    extra = sorted(with_grad - lora_names(Q_AND_V))
    assert with_grad == lora_names(Q_AND_V), (
        f"only lora_A/lora_B should receive gradients, also got {extra}"
    )


def test_works_on_the_meta_device_and_reproduces_the_tutorials_line(opt_6_7b):
    cfg = inject.LoRAConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])
    model = inject.inject_lora(copy.deepcopy(opt_6_7b), cfg)
    wrapped = len(lora_layers(model))
    assert wrapped == 64, (
        f"opt-6.7b has 32 layers with a q_proj and a v_proj each: expected 64 LoRA layers, "
        f"found {wrapped}"
    )
    line = counting.trainable_parameters_line(model)
    assert line == TUTORIAL_LINE, f"expected the tutorial's line {TUTORIAL_LINE!r}, got {line!r}"


# ---- lora_state_dict ----------------------------------------------------------------------


def test_lora_state_dict_holds_only_the_lora_tensors():
    model = inject.inject_lora(tiny_opt(), config())
    state = inject.lora_state_dict(model)
    assert set(state) == lora_names(Q_AND_V), (
        f"lora_state_dict should hold exactly the lora_A/lora_B entries of model.state_dict(), "
        f"got extra {sorted(set(state) - lora_names(Q_AND_V))[:3]}, "
        f"missing {sorted(lora_names(Q_AND_V) - set(state))[:3]} (base weights included?)"
    )
    full = model.state_dict()
    for key, value in state.items():
        assert torch.equal(value, full[key]), f"{key} should hold the model's current values"


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_lora_state_dict_has_the_keys_peft_saves(bias):
    from peft import get_peft_model_state_dict

    from lora_kata.testing_models import peft_model, peft_to_kata_name

    ours = inject.inject_lora(tiny_opt(), config(bias=bias))
    theirs = peft_model(
        tiny_opt(), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], bias=bias
    )
    expected = {peft_to_kata_name(k) for k in get_peft_model_state_dict(theirs)}
    got = set(inject.lora_state_dict(ours))
    if bias != "none":
        # DESIGN.md asks for "only LoRA tensors"; peft adds the trainable biases. Both are fine:
        # every LoRA tensor must be there, and nothing peft would not save.
        lora_only = {k for k in expected if ".lora_A" in k or ".lora_B" in k}
        assert lora_only <= got <= expected, (
            f"bias={bias!r}: lora_state_dict should hold every lora_A/lora_B tensor (missing "
            f"{sorted(lora_only - got)[:3]}) and nothing peft would not save (extra "
            f"{sorted(got - expected)[:3]})"
        )
        return
    assert got == expected, (
        f"bias={bias!r}: peft saves {len(expected)} tensors, lora_state_dict gave {len(got)}; "
        f"missing {sorted(expected - got)[:3]}, extra {sorted(got - expected)[:3]} "
        "(trainable biases belong in it when bias is not 'none')"
    )


# ---- against peft ---------------------------------------------------------------------------
# Both models are the same tiny OPT (same seed); after copying our A and B into peft's layers
# they compute with identical weights. The base path is the same code on the same tensors and
# only the LoRA matmuls may be dispatched differently (x @ A.T vs F.linear): fp32 rounding of
# ~1e-7 relative. 1e-5 absolute on logits of size ~0.5 leaves room for that; a missing or
# inverted scaling, or a transposed update, moves them by more than 1e-2 (checked below).
ATOL = 1e-5


def check_same_as_peft(ours, theirs, targets):
    from lora_kata.testing_models import (
        copy_lora_into_peft,
        peft_targeted_names,
        peft_to_kata_name,
        randomise_lora,
    )

    assert list(lora_layers(ours)) == peft_targeted_names(theirs) == targets, (
        f"wrapped modules differ from peft's: ours {list(lora_layers(ours))}, "
        f"peft {peft_targeted_names(theirs)}"
    )
    peft_trainable = {peft_to_kata_name(n) for n, p in theirs.named_parameters() if p.requires_grad}
    ours_trainable = trainable_names(ours)
    only_ours, only_peft = ours_trainable - peft_trainable, peft_trainable - ours_trainable
    assert ours_trainable == peft_trainable, (
        f"trainable parameters differ from peft's: only ours {sorted(only_ours)}, "
        f"only peft's {sorted(only_peft)}"
    )
    trainable, total = counting.count_parameters(ours)
    expected_counts = theirs.get_nb_trainable_parameters()
    assert (trainable, total) == expected_counts, (
        f"(trainable, total) should equal peft's {expected_counts}, got {(trainable, total)}"
    )
    x = tokens()
    with torch.no_grad():
        before = ours(x).logits
        randomise_lora(ours, seed=1)
        copied = copy_lora_into_peft(ours, theirs)
        assert copied == 2 * len(targets), (
            f"expected to copy lora_A and lora_B for each of {len(targets)} targets into peft, "
            f"copied {copied}: the LoRA layers are not where peft's are"
        )
        got, expected = ours(x).logits, theirs(input_ids=x).logits
    assert (got - before).abs().max() > 1e-2, "the random A and B should change the logits"
    difference = (got - expected).abs().max().item()
    assert torch.allclose(got, expected, rtol=0, atol=ATOL), (
        f"with the same A and B the logits differ from peft's by up to {difference:.3g}"
    )


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_matches_peft_on_a_tiny_opt(bias):
    from lora_kata.testing_models import peft_model

    targets = ["q_proj", "v_proj", "fc2"]
    ours = inject.inject_lora(tiny_opt(), config(target_modules=targets, bias=bias)).eval()
    theirs = peft_model(tiny_opt(), r=4, lora_alpha=8, target_modules=targets, bias=bias).eval()
    names = [n for n, _ in tiny_opt().named_modules() if n.endswith(("q_proj", "v_proj", "fc2"))]
    check_same_as_peft(ours, theirs, names)


def test_wraps_the_linear8bitlt_layers_of_a_model_loaded_in_8bit(tiny_opt_dir):
    from lora_kata.testing_int8 import load_tiny_opt_in_8bit

    model = load_tiny_opt_in_8bit(tiny_opt_dir).eval()
    originals = {name: model.get_submodule(name) for name in Q_AND_V}
    inject.inject_lora(model, config())
    for name, original in originals.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, lora.LoRALinear) and layer.base is original, (
            f"{name} (a bitsandbytes Linear8bitLt, a subclass of nn.Linear) should be wrapped"
        )
        assert layer.base.weight.dtype == torch.int8, "the 8-bit weight must stay int8"
        dtypes = (layer.lora_A.dtype, layer.lora_B.dtype)
        assert dtypes == (torch.float32, torch.float32), (
            f"{name}: lora_A/lora_B should be float32 on an 8-bit base, found {dtypes}"
        )
    trainable = trainable_names(model)
    assert trainable == lora_names(Q_AND_V), (
        f"in 8-bit only lora_A/lora_B should be trainable, found "
        f"{sorted(trainable ^ lora_names(Q_AND_V))} differing"
    )
    x = tokens()
    model(x, labels=x).loss.backward()  # the int8 base path and the fp32 update both run
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == lora_names(Q_AND_V), (
        f"in 8-bit too, only lora_A/lora_B should receive gradients, got {sorted(with_grad)[:4]}"
    )


@pytest.mark.parametrize("bias", ["none", "lora_only"])
def test_matches_peft_on_a_tiny_opt_loaded_in_8bit(tiny_opt_dir, bias):
    from lora_kata.testing_int8 import load_tiny_opt_in_8bit
    from lora_kata.testing_models import peft_model

    # Same int8 weights, same Linear8bitLt code on the base path (eval mode: MatMul8bitLt),
    # same fp32 LoRA path: the outputs agree to fp32 rounding, as in fp32 (ATOL above).
    ours = inject.inject_lora(load_tiny_opt_in_8bit(tiny_opt_dir).eval(), config(bias=bias)).eval()
    theirs = peft_model(
        load_tiny_opt_in_8bit(tiny_opt_dir).eval(),
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        bias=bias,
    ).eval()
    check_same_as_peft(ours, theirs, Q_AND_V)
