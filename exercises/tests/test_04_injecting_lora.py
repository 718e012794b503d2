"""Exercise 04: finding target modules and injecting LoRA (exercises/inject.py).

Most tests use a tiny OPT (hidden 32, 2 layers; lora_kata.models.tiny), whose attention block holds,
in this order: k_proj, v_proj, q_proj, out_proj; then fc1, fc2 and layer norms. The last tests
compare with peft's get_peft_model on the same model (fp32, and loaded in 8-bit on the CPU)
and reproduce the tutorial's opt-6.7b line with your inject_lora, on the meta device.
"""

import copy
import re

import pytest
import torch

from lora_kata.catalog.impl import implementation
from lora_kata.messages import msg
from lora_kata.testing.raising import must_raise

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
    from lora_kata.models.tiny import build_tiny_opt

    return build_tiny_opt(seed)


def tokens():
    from lora_kata.testing.lora_models import token_batch

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


def dotted_children(model) -> list[str]:
    """Children of the root whose name holds a '.': what setattr(model, "a.b.c", layer) adds."""
    return [name for name, _ in model.named_children() if "." in name]


def not_in_place(model, targets) -> dict | None:
    """The first target that is not a LoRALinear at its own dotted name, as the values of the
    04.*lora_not_in_place messages (name, found, where); None when every target is one."""
    for name in targets:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            module = None
        if isinstance(module, lora.LoRALinear):
            continue
        dotted = dotted_children(model)
        where = msg("04.lora_on_the_root_under_dotted_names", example=dotted[0]) if dotted else ""
        found = type(module).__name__ if module is not None else msg("04.nothing_at_that_name")
        return dict(name=name, found=found, where=where)
    return None


def inject_in_place(model, cfg, targets=Q_AND_V):
    """inject_lora(model, cfg). An AttributeError raised in it while a target is not a
    LoRALinear at its own name (`.base` looked up on a layer never replaced) fails the test
    saying so, with the error's text; any other error goes through untouched."""
    try:
        return inject.inject_lora(model, cfg)
    except AttributeError as error:
        misplaced = not_in_place(model, targets)
        if misplaced is None:
            raise
        pytest.fail(
            msg("04.inject_raised_with_lora_not_in_place", bias=cfg.bias, error=error, **misplaced)
        )


@pytest.fixture(scope="module")
def opt_6_7b():
    from lora_kata.testing.lora_models import opt_6_7b_on_meta

    return opt_6_7b_on_meta()


@pytest.fixture(scope="module")
def tiny_opt_dir(tmp_path_factory):
    from lora_kata.models.tiny import save_tiny_opt

    return save_tiny_opt(tmp_path_factory.mktemp("tiny_opt"), with_tokenizer=False)


# ---- LoRAConfig ---------------------------------------------------------------------------


def test_config_has_peft_field_names_and_defaults():
    cfg = inject.LoRAConfig()
    got = (cfg.r, cfg.lora_alpha, tuple(cfg.target_modules), cfg.lora_dropout, cfg.bias)
    assert got == (8, 8.0, ("q_proj", "v_proj"), 0.0, "none"), msg("04.config_defaults", got=got)


def test_config_accepts_the_tutorials_settings_and_every_bias_mode():
    cfg = inject.LoRAConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none"
    )
    got = (cfg.r, cfg.lora_alpha, cfg.lora_dropout)
    assert got == (16, 32, 0.05), msg("04.config_keeps_the_values", got=got)
    for bias in ("none", "all", "lora_only"):
        kept = inject.LoRAConfig(bias=bias).bias
        assert kept == bias, msg("04.config_keeps_every_bias_mode", bias=bias, kept=kept)
    assert inject.LoRAConfig(target_modules=r".*\.q_proj").target_modules == r".*\.q_proj", msg(
        "04.config_keeps_a_regex_target"
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
    def raised_another(error: Exception) -> str:  # what was raised instead, not a traceback
        return msg(
            "04.config_raised_another_error",
            kwargs=kwargs,
            field=field,
            error_type=type(error).__name__,
            error=error,
        )

    accepted = msg("04.config_accepted_a_bad_value", kwargs=kwargs)
    with must_raise(ValueError, accepted, instead=raised_another) as raised:
        inject.LoRAConfig(**kwargs)
    assert names_the_argument(str(raised.value), field), msg(
        "04.config_error_names_the_field", kwargs=kwargs, field=field, error=raised.value
    )


# ---- find_target_modules ------------------------------------------------------------------


def test_list_targets_match_by_name_suffix_in_model_order():
    model = tiny_opt()
    got = inject.find_target_modules(model, ["q_proj", "v_proj"])
    assert got == Q_AND_V, msg("04.targets_in_model_order", expected=Q_AND_V, got=got)


def test_list_targets_match_whole_name_parts_not_substrings():
    model = tiny_opt()
    for targets in (["proj"], ["_proj"], ["elf_attn.q_proj"], ["q"]):
        got = inject.find_target_modules(model, targets)
        assert got == [], msg("04.whole_name_parts_only", targets=targets, got=got[:3])
    got = inject.find_target_modules(model, ["self_attn.q_proj"])
    assert got == [ATTN.format(0, "q_proj"), ATTN.format(1, "q_proj")], msg(
        "04.dotted_entry_matches_a_names_end", got=got
    )


def test_a_full_dotted_name_matches_only_that_module():
    model = tiny_opt()
    name = ATTN.format(1, "out_proj")
    got = inject.find_target_modules(model, [name])
    assert got == [name], msg("04.full_name_selects_only_itself", name=name, got=got)


def test_a_string_is_a_regex_that_must_match_the_whole_name():
    model = tiny_opt()
    got = inject.find_target_modules(model, r".*\.(q|v)_proj")
    assert got == Q_AND_V, msg("04.regex_selects_q_and_v", expected=Q_AND_V, got=got)
    got = inject.find_target_modules(model, "q_proj")
    assert got == [], msg("04.regex_matches_whole_names_only", got=got)
    got = inject.find_target_modules(model, r"model\.decoder\.layers\.0\.self_attn")
    assert got == ["model.decoder.layers.0.self_attn"], msg("04.regex_fullmatch_not_match", got=got)


def test_finds_the_64_tutorial_targets_in_opt_6_7b(opt_6_7b):
    got = inject.find_target_modules(opt_6_7b, ["q_proj", "v_proj"])
    assert len(got) == 64, msg("04.opt_6_7b_has_64_targets", count=len(got))
    got = inject.find_target_modules(opt_6_7b, r".*layers\.(0|1)\.self_attn\.q_proj")
    assert got == [ATTN.format(0, "q_proj"), ATTN.format(1, "q_proj")], msg(
        "04.regex_selects_layers_0_and_1", got=got[:4]
    )


# ---- inject_lora --------------------------------------------------------------------------


def test_inject_wraps_each_target_in_place_at_the_same_name():
    model = tiny_opt()
    originals = {name: model.get_submodule(name) for name in Q_AND_V}
    k_proj = model.get_submodule(ATTN.format(0, "k_proj"))
    returned = inject.inject_lora(model, config(lora_dropout=0.05))
    assert returned is model, msg("04.inject_returns_the_same_model")
    for name, original in originals.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, lora.LoRALinear), msg(
            "04.target_is_a_loralinear", name=name, found=type(layer).__name__
        )
        assert layer.base is original, msg("04.base_is_the_original_layer", name=name)
        assert (layer.r, layer.alpha) == (4, 8), msg("04.r_and_alpha_passed_on")
        assert getattr(layer.lora_dropout, "p", 0.0) == pytest.approx(0.05), msg(
            "04.dropout_passed_on"
        )
    assert model.get_submodule(ATTN.format(0, "k_proj")) is k_proj, msg("04.k_proj_not_a_target")
    assert set(lora_layers(model)) == set(Q_AND_V), msg(
        "04.exactly_the_targets_wrapped", found=sorted(lora_layers(model))
    )
    assert "." not in "".join(name for name, _ in model.named_children()), msg(
        "04.no_dotted_child_on_the_root"
    )


def test_everything_but_lora_is_frozen():
    model = inject.inject_lora(tiny_opt(), config())
    got = trainable_names(model)
    expected = lora_names(Q_AND_V)
    assert not got - expected, msg(
        "04.non_targets_left_trainable", extra=sorted(got - expected)[:3]
    )
    assert got == expected, msg("04.lora_frozen", missing=sorted(expected - got)[:2])


def test_trainable_count_is_r_times_in_plus_out_per_target():
    model = inject.inject_lora(tiny_opt(), config(r=3, target_modules=["q_proj", "fc1"]))
    # q_proj: 32 → 32, fc1: 32 → 48, in both layers
    expected = 2 * (3 * (32 + 32) + 3 * (32 + 48))
    trainable, total = counting.count_parameters(model)
    assert trainable == expected, msg("04.trainable_count", expected=expected, trainable=trainable)
    before = counting.count_parameters(tiny_opt())[1]
    assert total == before + expected, msg(
        "04.total_count",
        before=before,
        expected=expected,
        expected_total=before + expected,
        total=total,
    )


def test_bias_all_trains_every_bias_in_the_model():
    model = inject.inject_lora(tiny_opt(), config(bias="all"))
    got = trainable_names(model) - lora_names(Q_AND_V)
    expected = bias_names(model)
    missing, extra = sorted(expected - got), sorted(got - expected)
    assert got == expected, msg(
        "04.bias_all_trains_every_bias",
        guess=msg("04.bias_all_treated_as_lora_only") if missing and not extra else "",
        missing=missing[:3],
        extra=extra[:3],
        why=msg("04.non_bias_weights_left_trainable") if extra else "",
    )


def test_bias_lora_only_trains_only_the_wrapped_layers_biases():
    model = inject_in_place(tiny_opt(), config(bias="lora_only"))
    got = trainable_names(model) - lora_names(Q_AND_V)
    expected = {f"{t}.base.bias" for t in Q_AND_V}
    assert got == expected, msg(
        "04.bias_lora_only_trains_the_wrapped_biases", expected=sorted(expected), got=sorted(got)
    )


def test_bias_none_trains_no_bias():
    model = inject.inject_lora(tiny_opt(), config(bias="none"))
    got = trainable_names(model) & bias_names(model)
    assert not got, msg("04.bias_none_trains_no_bias", got=sorted(got))


def test_no_match_raises_a_value_error_naming_the_targets():
    model = tiny_opt()
    try:
        inject.inject_lora(model, config(target_modules=["query", "value"]))
    except ValueError as error:
        assert "query" in str(error), msg("04.no_match_error_shows_the_targets", error=error)
    else:
        pytest.fail(msg("04.silent_no_match"))
    assert not lora_layers(model), msg(
        "04.refused_inject_leaves_the_model", found=sorted(lora_layers(model))
    )


def test_a_match_that_is_not_linear_raises_a_type_error_naming_it():
    for targets, culprit in (
        (["embed_tokens"], "embed_tokens"),
        (r".*layers\.0\.final_layer_norm", "final_layer_norm"),
        (["self_attn"], "self_attn"),
    ):
        with must_raise(
            TypeError, msg("04.non_linear_match_raises", targets=targets, culprit=culprit)
        ) as raised:
            inject.inject_lora(tiny_opt(), config(target_modules=targets))
        assert culprit in str(raised.value), msg(
            "04.type_error_names_the_module", targets=targets, culprit=culprit, error=raised.value
        )


def test_a_failed_inject_leaves_the_model_untouched():
    model = tiny_opt()
    # layer 0: q_proj (linear) comes before self_attn_layer_norm (not linear)
    bad = config(target_modules=r".*\.(q_proj|self_attn_layer_norm)")
    with must_raise(TypeError, msg("04.a_non_linear_match_among_others_raises")):
        inject.inject_lora(model, bad)
    assert not lora_layers(model), msg(
        "04.failed_inject_wrapped_layers", wrapped=sorted(lora_layers(model))
    )
    assert all(p.requires_grad for p in model.parameters()), msg("04.failed_inject_froze_the_model")


def test_injecting_twice_is_refused():
    model = inject.inject_lora(tiny_opt(), config())
    # ValueError ("already injected") or TypeError ("a LoRALinear is not a linear layer"):
    # either tells the user what is wrong, so either message is accepted.
    try:
        inject.inject_lora(model, config())
    except (ValueError, TypeError) as error:
        said = str(error)
    else:
        pytest.fail(msg("04.second_inject_returned"))
    # A learner may write the error in Chinese: "已" (already, 已经/已注入) counts as "already".
    words = ("already", "loralinear", "已")
    assert any(word in said.lower() for word in words), msg(
        "04.second_inject_says_lora_is_there", said=said
    )
    with must_raise((ValueError, TypeError), msg("04.layer_inside_lora_refused")):
        inject.inject_lora(model, config(target_modules=r".*\.q_proj\.base"))
    layers = lora_layers(model)
    assert set(layers) == set(Q_AND_V) and not any(
        isinstance(layer.base, lora.LoRALinear) for layer in layers.values()
    ), msg("04.lora_inside_lora", layers=sorted(layers))


def test_output_is_unchanged_right_after_injection():
    model = tiny_opt()
    x = tokens()
    with torch.no_grad():
        expected = model(x).logits
        got = inject.inject_lora(model, config()).eval()(x).logits
    assert torch.equal(got, expected), msg(
        "04.output_unchanged_after_injection", difference=(got - expected).abs().max().item()
    )


def test_gradients_reach_only_the_lora_matrices():
    model = inject.inject_lora(tiny_opt(), config())
    x = tokens()
    trainable = trainable_names(model)
    assert trainable, msg("04.nothing_trainable")
    misplaced = not_in_place(model, Q_AND_V)  # else backward() finds nothing that needs a grad
    assert misplaced is None, msg("04.lora_not_in_place", **(misplaced or {}))
    model(x, labels=x).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    extra = sorted(with_grad - lora_names(Q_AND_V))
    assert with_grad == lora_names(Q_AND_V), msg("04.gradients_reach_only_lora", extra=extra)


def test_works_on_the_meta_device_and_reproduces_the_tutorials_line(opt_6_7b):
    cfg = inject.LoRAConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])
    model = inject.inject_lora(copy.deepcopy(opt_6_7b), cfg)
    wrapped = len(lora_layers(model))
    assert wrapped == 64, msg("04.opt_6_7b_has_64_lora_layers", wrapped=wrapped)
    line = counting.trainable_parameters_line(model)
    assert line == TUTORIAL_LINE, msg("04.tutorials_line", expected=TUTORIAL_LINE, line=line)


# ---- lora_state_dict ----------------------------------------------------------------------


def test_lora_state_dict_holds_only_the_lora_tensors():
    model = inject.inject_lora(tiny_opt(), config())
    state = inject.lora_state_dict(model)
    assert set(state) == lora_names(Q_AND_V), msg(
        "04.state_dict_holds_only_lora",
        extra=sorted(set(state) - lora_names(Q_AND_V))[:3],
        missing=sorted(lora_names(Q_AND_V) - set(state))[:3],
    )
    full = model.state_dict()
    for key, value in state.items():
        assert torch.equal(value, full[key]), msg("04.state_dict_current_values", key=key)


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_lora_state_dict_has_the_keys_peft_saves(bias):
    from peft import get_peft_model_state_dict

    from lora_kata.testing.lora_models import peft_model, peft_to_kata_name

    ours = inject_in_place(tiny_opt(), config(bias=bias))
    theirs = peft_model(
        tiny_opt(), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], bias=bias
    )
    expected = {peft_to_kata_name(k) for k in get_peft_model_state_dict(theirs)}
    got = set(inject.lora_state_dict(ours))
    if bias != "none":
        # DESIGN.md asks for "only LoRA tensors"; peft adds the trainable biases. Both are fine:
        # every LoRA tensor must be there, and nothing peft would not save.
        lora_only = {k for k in expected if ".lora_A" in k or ".lora_B" in k}
        assert lora_only <= got <= expected, msg(
            "04.state_dict_lora_and_what_peft_saves",
            bias=bias,
            missing=sorted(lora_only - got)[:3],
            extra=sorted(got - expected)[:3],
        )
        return
    assert got == expected, msg(
        "04.state_dict_keys_as_peft",
        bias=bias,
        n_expected=len(expected),
        n_got=len(got),
        missing=sorted(expected - got)[:3],
        extra=sorted(got - expected)[:3],
    )


# ---- against peft ---------------------------------------------------------------------------
# Both models are the same tiny OPT (same seed); after copying our A and B into peft's layers
# they compute with identical weights. The base path is the same code on the same tensors and
# only the LoRA matmuls may be dispatched differently (x @ A.T vs F.linear): fp32 rounding of
# ~1e-7 relative. 1e-5 absolute on logits of size ~0.5 leaves room for that; a missing or
# inverted scaling, or a transposed update, moves them by more than 1e-2 (checked below).
ATOL = 1e-5


def check_same_as_peft(ours, theirs, targets):
    from lora_kata.testing.lora_models import (
        copy_lora_into_peft,
        peft_targeted_names,
        peft_to_kata_name,
        randomise_lora,
    )

    if dotted_children(ours):  # LoRA layers on the root: their names below would look right
        misplaced = not_in_place(ours, targets)
        assert misplaced is None, msg("04.lora_not_in_place", **(misplaced or {}))
    assert list(lora_layers(ours)) == peft_targeted_names(theirs) == targets, msg(
        "04.wrapped_as_peft", ours=list(lora_layers(ours)), peft=peft_targeted_names(theirs)
    )
    peft_trainable = {peft_to_kata_name(n) for n, p in theirs.named_parameters() if p.requires_grad}
    ours_trainable = trainable_names(ours)
    only_ours, only_peft = ours_trainable - peft_trainable, peft_trainable - ours_trainable
    assert ours_trainable == peft_trainable, msg(
        "04.trainable_as_peft", only_ours=sorted(only_ours), only_peft=sorted(only_peft)
    )
    trainable, total = counting.count_parameters(ours)
    expected_counts = theirs.get_nb_trainable_parameters()
    assert (trainable, total) == expected_counts, msg(
        "04.counts_as_peft", expected=expected_counts, got=(trainable, total)
    )
    x = tokens()
    with torch.no_grad():
        before = ours(x).logits
        randomise_lora(ours, seed=1)
        copied = copy_lora_into_peft(ours, theirs)
        assert copied == 2 * len(targets), msg(
            "04.copied_into_peft", n_targets=len(targets), copied=copied
        )
        got, expected = ours(x).logits, theirs(input_ids=x).logits
    assert (got - before).abs().max() > 1e-2, msg("04.random_lora_changes_the_logits")
    difference = (got - expected).abs().max().item()
    assert torch.allclose(got, expected, rtol=0, atol=ATOL), msg(
        "04.logits_as_peft", difference=difference
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_matches_peft_on_a_tiny_opt(bias):
    from lora_kata.testing.lora_models import peft_model

    targets = ["q_proj", "v_proj", "fc2"]
    names = [n for n, _ in tiny_opt().named_modules() if n.endswith(("q_proj", "v_proj", "fc2"))]
    ours = inject_in_place(tiny_opt(), config(target_modules=targets, bias=bias), names).eval()
    theirs = peft_model(tiny_opt(), r=4, lora_alpha=8, target_modules=targets, bias=bias).eval()
    check_same_as_peft(ours, theirs, names)


def test_wraps_the_linear8bitlt_layers_of_a_model_loaded_in_8bit(tiny_opt_dir):
    from lora_kata.testing.int8 import load_tiny_opt_in_8bit

    model = load_tiny_opt_in_8bit(tiny_opt_dir).eval()
    originals = {name: model.get_submodule(name) for name in Q_AND_V}
    inject.inject_lora(model, config())
    for name, original in originals.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, lora.LoRALinear) and layer.base is original, msg(
            "04.linear8bitlt_wrapped", name=name
        )
        assert layer.base.weight.dtype == torch.int8, msg("04.int8_weight_stays_int8")
        dtypes = (layer.lora_A.dtype, layer.lora_B.dtype)
        assert dtypes == (torch.float32, torch.float32), msg(
            "04.lora_float32_on_8bit", name=name, dtypes=dtypes
        )
    trainable = trainable_names(model)
    want = lora_names(Q_AND_V)
    assert trainable == want, msg(
        "04.only_lora_trainable_in_8bit",
        extra=sorted(trainable - want),
        missing=sorted(want - trainable),
    )
    x = tokens()
    model(x, labels=x).loss.backward()  # the int8 base path and the fp32 update both run
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == lora_names(Q_AND_V), msg(
        "04.only_lora_gradients_in_8bit", got=sorted(with_grad)[:4]
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
@pytest.mark.parametrize("bias", ["none", "lora_only"])
def test_matches_peft_on_a_tiny_opt_loaded_in_8bit(tiny_opt_dir, bias):
    from lora_kata.testing.int8 import load_tiny_opt_in_8bit
    from lora_kata.testing.lora_models import peft_model

    # Same int8 weights, same Linear8bitLt code on the base path (eval mode: MatMul8bitLt),
    # same fp32 LoRA path: the outputs agree to fp32 rounding, as in fp32 (ATOL above).
    ours = inject_in_place(load_tiny_opt_in_8bit(tiny_opt_dir).eval(), config(bias=bias)).eval()
    theirs = peft_model(
        load_tiny_opt_in_8bit(tiny_opt_dir).eval(),
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        bias=bias,
    ).eval()
    check_same_as_peft(ours, theirs, Q_AND_V)
