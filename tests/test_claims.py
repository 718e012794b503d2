"""Every claim a lesson or README makes about a library, checked against the installed library.

Each test is named for the claim and registered with `@claim(file, section)` for the place(s)
it backs. When an upgrade of torch, transformers, peft, bitsandbytes or safetensors changes one
of these behaviours, the test fails here, naming the lesson section that has become false.
The last tests check the registry itself: every cited file and `## ` section exists, and the
README states how many claims are checked.

Heavy libraries are imported inside the tests; models are tiny OPTs built locally.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import warnings
from functools import cache
from pathlib import Path

import pytest

from tests.claims_support import CLAIMS, claim, section_text, sections, zh_counterpart
from tests.kata_harness import REPO

README = ("README.md", "What changed since the tutorial (2023)")
L01 = "lessons/en/01-lora-layer.md"
L02 = "lessons/en/02-forward-and-scaling.md"
L03 = "lessons/en/03-counting-parameters.md"
L04 = "lessons/en/04-injecting-lora.md"
L05 = "lessons/en/05-merge-unmerge.md"
L06 = "lessons/en/06-quotes-data.md"
L07 = "lessons/en/07-int8-preparation.md"
L08 = "lessons/en/08-training-step.md"
L09 = "lessons/en/09-adapter-files.md"
L10 = "lessons/en/10-capstone.md"
L14 = "lessons/en/14-dora.md"
L15 = "lessons/en/15-multi-lora.md"


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet():
    """Silence the libraries' deprecation chatter where it is not what a test checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _eight_bit_model():
    """A fresh tiny OPT (fp16 checkpoint) loaded with BitsAndBytesConfig(load_in_8bit=True)."""
    from lora_kata.testing.int8 import load_tiny_opt_in_8bit, tiny_opt_fp16_dir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_tiny_opt_in_8bit(tiny_opt_fp16_dir())


def _peft(model, target_modules, r=4, lora_alpha=8, **options):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=lora_alpha, target_modules=target_modules, task_type="CAUSAL_LM", **options
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def _wrapped_by_peft(peft_model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if isinstance(module, BaseTunerLayer)
    ]


@cache
def _peft_adapter_files() -> tuple[dict, dict]:
    """(adapter_config.json, the tensors) of a peft LoRA on a tiny OPT with B ≠ 0."""
    import tempfile

    import torch
    from safetensors.torch import load_file

    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), ["q_proj", "v_proj"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        config = json.loads(Path(directory, "adapter_config.json").read_text())
        tensors = load_file(f"{directory}/adapter_model.safetensors")
    return config, tensors


def _load_into_peft(config: dict, tensors: dict):
    """PeftModel.from_pretrained on a directory holding these files; (model, warnings)."""
    import tempfile

    from peft import PeftModel
    from safetensors.torch import save_file

    from lora_kata.models.tiny import build_tiny_opt

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "adapter_config.json").write_text(json.dumps(config))
        save_file(tensors, f"{directory}/adapter_model.safetensors")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = PeftModel.from_pretrained(build_tiny_opt(0), directory)
    return model, [str(w.message) for w in caught]


def _nonzero_lora_B(model) -> int:
    return sum(
        int(bool(param.abs().sum() > 0))
        for name, param in model.named_parameters()
        if "lora_B" in name
    )


# --------------------------------------------------------------------------- 01, 02, 03


@claim(L01, "The formula")
def test_kaiming_uniform_with_a_sqrt5_is_bounded_by_one_over_sqrt_fan_in():
    import math

    import torch

    weight = torch.empty(6, 400)  # (r, in_features): fan-in 400, not 6
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(400)
    assert weight.abs().max() <= bound, (
        f"expected |A| ≤ 1/√fan_in = {bound:.4f}, found {weight.abs().max():.4f}: torch's "
        "kaiming_uniform_(a=√5) bound changed; lesson 01's formula is wrong"
    )
    assert weight.abs().max() > 0.9 * bound, (
        f"expected values reaching close to 1/√fan_in = {bound:.4f}, found at most "
        f"{weight.abs().max():.4f}: the bound is smaller than lesson 01 says"
    )


@claim(L01, "What changed")
def test_peft_default_init_is_kaiming_uniform_A_and_zero_B_and_other_inits_exist():
    import math

    from peft import LoraConfig

    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), ["q_proj"])
    layer = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    bound = 1 / math.sqrt(a.shape[1])
    assert 0 < a.abs().max() <= bound, (
        f"expected peft's lora_A kaiming-uniform within ±1/√in = {bound:.4f}, found max "
        f"{a.abs().max():.4f}"
    )
    assert b.abs().sum() == 0, f"expected peft's lora_B zero by default, found |B| {b.abs().sum()}"
    assert tuple(a.shape) == (4, 32) and tuple(b.shape) == (32, 4), (
        f"expected peft's lora_A.default (r, in) = (4, 32) and lora_B (out, r) = (32, 4), found "
        f"{tuple(a.shape)} and {tuple(b.shape)}"
    )
    for init in ("gaussian", "pissa"):
        assert LoraConfig(init_lora_weights=init).init_lora_weights == init, (
            f"expected peft to accept init_lora_weights={init!r}"
        )
    assert LoraConfig(use_dora=True).use_dora, "expected peft's LoraConfig to offer use_dora"


@claim(L01, "What you implement", (L02, "Pitfalls"))
def test_grad_scaler_refuses_fp16_gradients():
    import torch

    param = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))
    param.grad = torch.ones(3, dtype=torch.float16)
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones((), dtype=torch.float16))
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        scaler.unscale_(optimizer)


@claim(L02, "What changed")
def test_peft_use_rslora_scales_by_alpha_over_sqrt_r():
    import math

    from lora_kata.models.tiny import build_tiny_opt

    for use_rslora, expected in ((False, 32 / 16), (True, 32 / math.sqrt(16))):
        model = _peft(build_tiny_opt(0), ["q_proj"], r=16, lora_alpha=32, use_rslora=use_rslora)
        layer = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
        found = layer.scaling["default"]
        assert math.isclose(found, expected), (
            f"expected peft's scaling {expected} with use_rslora={use_rslora} (r=16, α=32), "
            f"found {found}: lesson 02's α/r vs α/√r is out of date"
        )


@claim(L03, "From the tutorial")
def test_named_parameters_yields_the_tied_lm_head_once():
    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(0)
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight, (
        "expected OPT's lm_head tied to the input embeddings, found two tensors"
    )
    once = sum(p.numel() for _, p in model.named_parameters())
    twice = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    tied = model.lm_head.weight.numel()
    assert twice - once == tied, (
        f"expected named_parameters() to skip the tied head ({tied} values) by default, "
        f"found a difference of {twice - once}"
    )
    state = model.state_dict()
    assert "lm_head.weight" in state and "model.decoder.embed_tokens.weight" in state, (
        "expected state_dict() to list the tied tensor under both names, found "
        f"{[k for k in state if 'embed_tokens' in k or 'lm_head' in k]}"
    )


@claim(L03, "What changed", README, (L10, "What changed"))
def test_peft_print_trainable_parameters_uses_separators_and_four_decimals():
    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), ["q_proj", "v_proj"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model.print_trainable_parameters()
    line = printed.getvalue().strip()
    pattern = r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}"
    assert re.fullmatch(pattern, line) and "," in line, (
        f"expected peft's line like 'trainable params: 1,024 || all params: 36,640 || "
        f"trainable%: 2.7948', found {line!r}: the lessons quote an outdated format"
    )
    # Lesson 03 and the README quote this exact line for the tiny OPT (r=4 on q and v).
    quoted = "trainable params: 1,024 || all params: 36,640 || trainable%: 2.7948"
    assert line == quoted, f"expected the quoted line {quoted!r}, found {line!r}"


@claim(L03, "What changed")
def test_peft_counts_a_4bit_weight_as_two_parameters_per_byte():
    import bitsandbytes as bnb
    import torch
    from peft.peft_model import PeftModel

    weight = bnb.nn.Params4bit(torch.zeros(32 * 48 // 2, 1, dtype=torch.uint8), requires_grad=False)
    holder = torch.nn.Module()
    holder.weight = weight
    _, total = PeftModel.get_nb_trainable_parameters(_Holder(holder))
    assert total == 32 * 48, (
        f"expected peft to count a packed 4-bit tensor of {weight.numel()} bytes as "
        f"{32 * 48} parameters, found {total}: lesson 03's remark on 4-bit counts is out of date"
    )


class _Holder:
    """Just enough of a PeftModel for PeftModel.get_nb_trainable_parameters."""

    def __init__(self, module):
        self.module = module

    def named_parameters(self):
        return self.module.named_parameters()


# --------------------------------------------------------------------------- 04


def _opt_block_linear_names(model) -> list[str]:
    import torch

    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers.0." in name
    ]


@claim(L04, "Pitfalls")
def test_substring_proj_matches_four_modules_per_opt_block_and_q_only_q_proj():
    from lora_kata.models.tiny import build_tiny_opt

    names = _opt_block_linear_names(build_tiny_opt(0))
    by_proj = [n for n in names if "proj" in n.rsplit("layers.0.", 1)[1]]
    by_q = [n for n in names if "q" in n.rsplit("layers.0.", 1)[1]]
    assert sorted(n.rsplit(".", 1)[1] for n in by_proj) == [
        "k_proj",
        "out_proj",
        "q_proj",
        "v_proj",
    ], f"expected the substring 'proj' to match q/k/v/out_proj in an OPT block, found {by_proj}"
    assert [n.rsplit(".", 1)[1] for n in by_q] == ["q_proj"], (
        f"expected the substring 'q' to match only q_proj in an OPT block, found {by_q}"
    )


@claim(L04, "The idea", (L04, "From the tutorial"))
def test_peft_list_entries_match_whole_name_components_and_strings_fullmatch():
    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), ["q_proj", "v_proj"])
    wrapped = _wrapped_by_peft(model)
    assert len(wrapped) == 4 and all(n.endswith(("q_proj", "v_proj")) for n in wrapped), (
        f"expected peft to wrap q_proj and v_proj in both tiny layers, found {wrapped}"
    )
    with pytest.raises(ValueError, match=r"not found|Target modules"):
        _peft(build_tiny_opt(0), ["proj"])  # a list entry never matches a substring
    with pytest.raises(ValueError, match=r"not found|Target modules"):
        _peft(build_tiny_opt(0), "q_proj")  # a string must fullmatch the dotted name


def _lesson_regexes(path: str) -> list[str]:
    """Every r"..." string literal written in a lesson, as Python reads it."""
    text = (REPO / path).read_text(encoding="utf-8")
    return [ast.literal_eval(literal) for literal in re.findall(r'r"[^"`]*"', text)]


@claim(L04, "The idea")
def test_the_regex_in_lesson_04_selects_layers_0_and_1_q_proj_as_copied():
    from lora_kata.models.tiny import build_tiny_opt

    layered = {}
    for path in (L04, zh_counterpart(L04)):
        layered[path] = [r for r in _lesson_regexes(path) if "layers" in r]
        assert layered[path], f"expected a layer-selecting regex in {path}, found none"
    assert layered[L04] == layered[zh_counterpart(L04)], (
        f"expected the same regexes in both languages, found {layered}"
    )
    model = build_tiny_opt(0, num_hidden_layers=3)
    expected = [f"model.decoder.layers.{i}.self_attn.q_proj" for i in (0, 1)]
    for pattern in layered[L04]:
        assert "\\|" not in pattern, (
            f"expected no Markdown escape in the regex, found {pattern!r}: copied, it matches a "
            "literal '|' and so nothing"
        )
        by_re = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
        assert by_re == expected, f"expected {pattern!r} to fullmatch {expected}, found {by_re}"
        wrapped = _wrapped_by_peft(_peft(build_tiny_opt(0, num_hidden_layers=3), pattern))
        assert wrapped == expected, (
            f"expected peft to wrap {expected} for {pattern!r}, found {wrapped}"
        )


@claim(L04, "What changed", (L03, "The formula"))
def test_peft_defaults_to_q_proj_and_v_proj_for_opt():
    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), None)
    found = sorted(model.peft_config["default"].target_modules)
    assert found == ["q_proj", "v_proj"], (
        f"expected peft's default target modules for OPT to be q_proj and v_proj, found {found}"
    )


@claim(L04, "Pitfalls")
def test_setattr_with_a_dotted_name_registers_a_new_literal_child():
    import torch

    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 5)))
    original = model[0][0]
    setattr(model, "0.0", torch.nn.Linear(3, 7))
    assert "0.0" in model._modules and model[0][0] is original, (
        "expected setattr(root, 'a.b', m) to add a child literally named 'a.b' and leave the "
        f"real layer alone, found children {list(model._modules)}"
    )


# --------------------------------------------------------------------------- 05, 07 (int8)


@claim(L05, "The idea", (L07, "The formula"))
def test_bitsandbytes_stores_round_127_w_over_row_absmax_with_scb_the_absmax():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = _eight_bit_model()
    layer = model.model.decoder.layers[0].self_attn.q_proj
    weight = build_tiny_opt(0).half().model.decoder.layers[0].self_attn.q_proj.weight.float()
    absmax = weight.abs().amax(dim=1)
    assert layer.weight.dtype == torch.int8, f"expected an int8 weight, found {layer.weight.dtype}"
    assert torch.equal(layer.weight.SCB.float(), absmax), (
        "expected bitsandbytes' SCB to be each row's absmax, found max difference "
        f"{(layer.weight.SCB.float() - absmax).abs().max()}"
    )
    expected = torch.round(weight * 127 / absmax[:, None])
    assert torch.equal(layer.weight.data.float(), expected), (
        "expected the int8 weight to be round(127·W / absmax), found max difference "
        f"{(layer.weight.data.float() - expected).abs().max()}"
    )


@claim(L05, "What changed")
def test_peft_merges_into_an_8bit_base_with_a_rounding_warning():
    model = _peft(_eight_bit_model(), ["q_proj"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.merge_adapter()
    messages = [str(w.message) for w in caught]
    assert any("8-bit" in m and "rounding errors" in m for m in messages), (
        f"expected peft to merge into Linear8bitLt with a rounding-error warning, found {messages}"
    )


@claim(L07, "What changed", README, (L10, "What changed"))
def test_from_pretrained_load_in_8bit_keyword_raises_type_error():
    from transformers import AutoModelForCausalLM

    from lora_kata.testing.int8 import tiny_opt_fp16_dir

    with pytest.raises(TypeError, match="unexpected keyword argument 'load_in_8bit'"), _quiet():
        AutoModelForCausalLM.from_pretrained(str(tiny_opt_fp16_dir()), load_in_8bit=True)


@claim(L07, "What you implement")
def test_bitsandbytes_config_quantizes_the_linear_layers_only():
    import bitsandbytes as bnb
    import torch

    model = _eight_bit_model()
    linear = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(linear) == 2 * 6 and all(
        model.get_submodule(n).weight.dtype == torch.int8 for n in linear
    ), f"expected 6 int8 Linear8bitLt per tiny OPT block (12), found {linear}"
    assert not isinstance(model.lm_head, bnb.nn.Linear8bitLt), (
        "expected lm_head (tied to the embeddings) to stay unquantized"
    )
    assert model.model.decoder.embed_tokens.weight.dtype == torch.float16, (
        "expected the embeddings to keep the checkpoint's fp16, found "
        f"{model.model.decoder.embed_tokens.weight.dtype}"
    )


@claim(L07, "What changed", README, (L10, "What changed"))
def test_dtype_replaces_torch_dtype_in_from_pretrained():
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from lora_kata.testing.int8 import tiny_opt_fp16_dir

    directory = str(tiny_opt_fp16_dir())
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16, f"expected dtype= to load bf16, found {model.dtype}"
    logged = io.StringIO()
    handler = __import__("logging").StreamHandler(logged)
    logger = hf_logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        with _quiet():
            AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.bfloat16)
    finally:
        logger.removeHandler(handler)
    assert "torch_dtype" in logged.getvalue() and "deprecated" in logged.getvalue(), (
        f"expected transformers to log that torch_dtype is deprecated, found {logged.getvalue()!r}"
    )


@claim(L07, "What changed", README, (L10, "What changed"))
def test_prepare_model_for_int8_training_is_gone_from_peft():
    import peft

    assert not hasattr(peft, "prepare_model_for_int8_training"), (
        "expected peft to no longer export prepare_model_for_int8_training, found it"
    )
    assert callable(peft.prepare_model_for_kbit_training), (
        "expected prepare_model_for_kbit_training in peft"
    )


@claim(L07, "What changed", README)
def test_prepare_model_for_kbit_training_leaves_lm_head_unwrapped():
    import torch
    from peft import prepare_model_for_kbit_training

    model = _eight_bit_model()
    with _quiet():
        prepare_model_for_kbit_training(model)
    assert type(model.lm_head) is torch.nn.Linear, (
        f"expected peft to leave lm_head a plain Linear (no CastOutputToFloat), found "
        f"{type(model.lm_head).__name__}"
    )
    assert model.model.decoder.final_layer_norm.weight.dtype == torch.float32, (
        "expected peft to cast the fp16 layer norms to fp32, found "
        f"{model.model.decoder.final_layer_norm.weight.dtype}"
    )


def _input_grad_hooks(model) -> int:
    return len(model.get_input_embeddings()._forward_hooks)


@claim(L07, "What changed")
def test_prepare_model_for_kbit_training_skips_its_input_grad_hook_when_not_reentrant():
    from peft import prepare_model_for_kbit_training

    counts = {}
    for reentrant in (True, False):
        model = _eight_bit_model()
        with _quiet():
            prepare_model_for_kbit_training(
                model, gradient_checkpointing_kwargs={"use_reentrant": reentrant}
            )
        counts[reentrant] = _input_grad_hooks(model)
    assert counts[True] == counts[False] + 1, (
        "expected peft to add its own input-grad hook only for use_reentrant=True (one hook "
        f"more than with False), found hooks per setting {counts}"
    )


@claim(L07, "The idea", (L07, "Pitfalls"))
def test_reentrant_checkpointing_without_the_input_grad_hook_gives_lora_no_gradient():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    def lora_gradients(reentrant: bool, hook: bool):
        model = _peft(build_tiny_opt(0), ["q_proj"])
        inner = model.base_model.model
        inner.activation_checkpointing_enable({"use_reentrant": reentrant})
        if not hook:
            inner.disable_input_require_grads()
        model.train()
        ids = torch.tensor([[5, 6, 7, 8]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = model(input_ids=ids, labels=ids).loss
        if loss.requires_grad:
            loss.backward()
        grads = [p.grad is not None for n, p in model.named_parameters() if "lora_A" in n]
        return grads, [str(w.message) for w in caught]

    grads, caught = lora_gradients(reentrant=True, hook=False)
    assert not any(grads) and any("None of the inputs have requires_grad" in m for m in caught), (
        "expected reentrant checkpointing without the hook to leave every LoRA weight without a "
        f"gradient, with PyTorch's warning; found gradients {grads}, warnings {caught}"
    )
    for reentrant, hook in ((True, True), (False, False)):
        grads, _ = lora_gradients(reentrant, hook)
        assert grads and all(grads), (
            f"expected LoRA gradients with use_reentrant={reentrant}, hook={hook}, found {grads}"
        )


@claim(L07, "What changed")
def test_gradient_checkpointing_enable_is_a_deprecated_alias():
    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(0)
    with pytest.warns(FutureWarning, match="activation_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_activation_checkpointing, "expected checkpointing on after the alias"


@claim(L07, "What changed", (L07, "The idea"))
def test_activation_checkpointing_enable_defaults_to_non_reentrant_and_hooks_input_grads():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(0)
    assert _input_grad_hooks(model) == 0, "expected no input-grad hook on a fresh model"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the new name must not warn
        model.activation_checkpointing_enable()
    layer = model.model.decoder.layers[0]
    keywords = getattr(layer._gradient_checkpointing_func, "keywords", None)
    assert keywords == {"use_reentrant": False}, (
        f"expected checkpointing with use_reentrant=False by default, found {keywords}"
    )
    for param in model.parameters():
        param.requires_grad_(False)
    embedded = model.get_input_embeddings()(torch.tensor([[5, 6, 7]]))
    assert embedded.requires_grad, (
        "expected activation_checkpointing_enable to make the input embeddings' output require "
        "grad itself (enable_input_require_grads), found it does not"
    )


@claim(L07, "The idea")
def test_checkpointing_in_training_switches_the_kv_cache_off():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(0)
    model.activation_checkpointing_enable()
    model.train()
    with _quiet():
        output = model(torch.tensor([[5, 6, 7]]), use_cache=True)
    assert output.past_key_values is None, (
        "expected transformers to turn use_cache off in training with checkpointing, found a cache"
    )


# --------------------------------------------------------------------------- 06


@claim(L06, "The idea", (L06, "From the tutorial"), (L06, "Pitfalls"))
def test_data_collator_for_language_modeling_masks_every_pad_id_token():
    from transformers import DataCollatorForLanguageModeling

    from lora_kata.models.tiny import EOS_ID, quotes_tokenizer

    tokenizer = quotes_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # the common recipe: pad = eos
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)(
        [{"input_ids": [EOS_ID, 10, 11, EOS_ID]}, {"input_ids": [EOS_ID, 12]}]
    )
    assert batch["labels"][0].tolist() == [-100, 10, 11, -100], (
        "expected the collator to mask every token equal to the pad id, the real EOS "
        f"included, found labels {batch['labels'][0].tolist()}"
    )


@claim(L06, "What changed")
def test_the_trainer_drops_unused_columns_by_default():
    import tempfile

    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory() as directory:
        arguments = TrainingArguments(output_dir=directory, report_to=[])
    assert arguments.remove_unused_columns is True, (
        "expected TrainingArguments.remove_unused_columns to default to True (the Trainer drops "
        f"quote/author/tags before the collator), found {arguments.remove_unused_columns}"
    )


@claim(L10, "What you implement")
def test_generate_stops_at_the_eos_token_id():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(0)
    prompt = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        free = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
        first = int(free[0, 3])
        stopped = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=first)
    assert free.shape[1] == 3 + 6, f"expected 6 new tokens without EOS, found {free.shape[1] - 3}"
    assert stopped[0].tolist() == [5, 6, 7, first], (
        f"expected greedy generation to stop right after emitting eos_token_id={first}, found "
        f"{stopped[0].tolist()}"
    )


# --------------------------------------------------------------------------- 08


def _adamw_update(gradient, steps: int = 3):
    import torch

    weight = torch.nn.Parameter(torch.zeros(gradient.shape))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    for _ in range(steps):
        weight.grad = gradient.clone()
        optimizer.step()
    return weight.detach()


@claim(L08, "Pitfalls")
def test_adamw_update_is_invariant_to_the_gradient_scale_and_sgd_is_not():
    import torch

    gradient = torch.randn(200, generator=torch.Generator().manual_seed(0)) * 1e-3
    once, four_times = _adamw_update(gradient), _adamw_update(4 * gradient)
    relative = ((four_times - once).norm() / once.norm()).item()
    assert relative < 1e-3, (
        f"expected AdamW's update to change by < 0.1 % (relative) for a 4× gradient, found "
        f"{relative:.2e}: lesson 08's claim that Adam is scale-invariant is false"
    )
    weight = torch.nn.Parameter(torch.zeros(200))
    sgd = torch.optim.SGD([weight], lr=1e-3)
    weight.grad = 4 * gradient
    sgd.step()
    assert torch.allclose(weight.detach(), -1e-3 * 4 * gradient), (
        "expected plain SGD's step to scale with the gradient (4×), found otherwise"
    )


@claim(L08, "Pitfalls")
def test_trainer_clips_gradients_at_norm_one_by_default():
    from transformers import TrainingArguments

    default = TrainingArguments.__dataclass_fields__["max_grad_norm"].default
    assert default == 1.0, f"expected TrainingArguments.max_grad_norm = 1.0, found {default}"


@claim(L08, "What changed", (L10, "The idea"))
def test_trainer_refuses_a_purely_quantized_model():
    import tempfile

    from transformers import Trainer, TrainingArguments

    model = _eight_bit_model()
    with tempfile.TemporaryDirectory() as directory, _quiet():
        arguments = TrainingArguments(output_dir=directory, report_to=[], use_cpu=True)
        with pytest.raises(ValueError, match="purely quantized models"):
            Trainer(model=model, args=arguments)


@claim(L08, "What changed")
def test_causal_lm_loss_with_num_items_in_batch_divides_by_label_tokens():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = build_tiny_opt(0)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    labels = ids.clone()
    mean = model(input_ids=ids, labels=labels).loss
    summed = model(input_ids=ids, labels=labels, num_items_in_batch=1).loss
    assert torch.allclose(summed, mean * 4), (
        "expected loss(num_items_in_batch=1) to be the sum over the 4 predicted tokens "
        f"(= 4 × the mean {mean.item():.4f}), found {summed.item():.4f}: the Trainer's per-token "
        "normalisation that lesson 08 describes is gone"
    )
    from transformers import Trainer

    assert hasattr(Trainer, "_get_num_items_in_batch"), (
        "expected the Trainer to count label tokens across micro-batches (_get_num_items_in_batch)"
    )


@claim(L08, "What you implement", (L08, "The formula"))
def test_get_linear_schedule_with_warmup_is_the_tutorials_triangle():
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    schedule = get_linear_schedule_with_warmup(optimizer, 100, 200)
    rates = {}
    for step in range(201):
        rates[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    found = [rates[s] for s in (0, 50, 100, 150, 200)]
    assert found == pytest.approx([0, 1e-4, 2e-4, 1e-4, 0]), (
        f"expected lr 0, 1e-4, 2e-4, 1e-4, 0 at steps 0/50/100/150/200, found {found}"
    )


@claim(L08, "What changed", (L10, "What changed"))
def test_torch_cuda_amp_autocast_and_grad_scaler_are_deprecated():
    import torch

    with pytest.warns(FutureWarning, match=r"torch\.amp\.autocast\('cuda'"), _ignore_cuda():
        torch.cuda.amp.autocast()
    with pytest.warns(FutureWarning, match=r"torch\.amp\.GradScaler\('cuda'"), _ignore_cuda():
        torch.cuda.amp.GradScaler()


@contextlib.contextmanager
def _ignore_cuda():
    """Without a GPU torch also warns that CUDA is unavailable; that is not the claim."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        yield


# --------------------------------------------------------------------------- 09


@claim(L09, "Pitfalls")
def test_peft_loads_keys_with_or_without_default_exactly_and_without_warning():
    config, tensors = _peft_adapter_files()
    expected = sum(1 for key in tensors if "lora_B" in key)
    for keys in ("as saved", "with .default"):
        renamed = (
            tensors
            if keys == "as saved"
            else {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()}
        )
        model, caught = _load_into_peft(config, renamed)
        assert _nonzero_lora_B(model) == expected, (
            f"expected peft to load all {expected} lora_B tensors from keys {keys}, found "
            f"{_nonzero_lora_B(model)}"
        )
        missing = [m for m in caught if "missing adapter keys" in m]
        assert not missing, f"expected no missing-key warning for keys {keys}, found {missing}"


@claim(L09, "Pitfalls")
def test_peft_loads_nothing_and_warns_when_keys_lack_base_model_model():
    config, tensors = _peft_adapter_files()
    stripped = {k.removeprefix("base_model.model."): v for k, v in tensors.items()}
    model, caught = _load_into_peft(config, stripped)
    assert _nonzero_lora_B(model) == 0, (
        f"expected peft to load no lora_B without the prefix, found {_nonzero_lora_B(model)}"
    )
    assert any("Found missing adapter keys" in m for m in caught), (
        f"expected peft to warn 'Found missing adapter keys', found {caught}"
    )


@claim(L09, "Pitfalls")
def test_load_state_dict_strict_false_still_raises_on_a_shape_mismatch():
    import torch

    layer = torch.nn.Linear(12, 16, bias=False)  # an r = 16 lora_B
    with pytest.raises(RuntimeError, match="size mismatch"):
        layer.load_state_dict({"weight": torch.zeros(8, 12)}, strict=False)  # an r = 8 file


@claim(L09, "What changed")
def test_peft_save_pretrained_writes_safetensors_not_a_pickle():
    config, tensors = _peft_adapter_files()
    assert tensors and all(k.startswith("base_model.model.") for k in tensors), (
        f"expected adapter_model.safetensors with base_model.model. keys, found {list(tensors)[:2]}"
    )
    assert all(".default." not in k for k in tensors), "expected peft to strip .default on save"
    assert len(config) > 12, f"expected peft's config to hold many fields, found {sorted(config)}"


@claim(L09, "What changed")
def test_peft_fills_missing_config_fields_with_defaults():
    config, tensors = _peft_adapter_files()
    short = {
        key: config[key]
        for key in ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "bias")
    } | {"target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": None}
    model, _ = _load_into_peft(short, tensors)
    loaded = model.peft_config["default"]
    assert loaded.use_rslora is False and loaded.use_dora is False, (
        f"expected missing fields to take peft's defaults, found rslora={loaded.use_rslora}, "
        f"dora={loaded.use_dora}"
    )
    assert _nonzero_lora_B(model) == sum(1 for k in tensors if "lora_B" in k), (
        "expected a config with only the kata's fields to load every tensor"
    )


@claim(L09, "Pitfalls")
def test_safetensors_refuses_non_contiguous_and_memory_sharing_tensors():
    import tempfile

    import torch
    from safetensors.torch import save_file

    matrix = torch.randn(4, 6)
    with tempfile.TemporaryDirectory() as directory:
        with pytest.raises(ValueError, match="non contiguous"):
            save_file({"a": matrix.t()}, f"{directory}/a.safetensors")
        with pytest.raises(RuntimeError, match="share memory"):
            save_file({"a": matrix, "b": matrix}, f"{directory}/b.safetensors")


@claim(L09, "The idea")
def test_torch_load_refuses_arbitrary_pickles_by_default():
    import pickle

    import torch

    payload = io.BytesIO()
    torch.save({"config": _Holder(None)}, payload)  # any class outside torch's allow-list
    payload.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(payload)


# --------------------------------------------------------------------------- more of 01-05


@claim(L01, "Pitfalls")
def test_assigning_a_module_before_super_init_fails_with_torchs_message():
    import torch

    class Forgetful(torch.nn.Module):
        def __init__(self):
            self.layer = torch.nn.Linear(2, 3)

    with pytest.raises(AttributeError, match=r"cannot assign module before Module.__init__\(\)"):
        Forgetful()


@claim(L01, "What you implement")
def test_fp16_drops_an_update_smaller_than_half_its_step():
    import torch

    weight = torch.tensor(1.0, dtype=torch.float16)
    assert weight + 1e-4 == weight, "expected 1 + 1e-4 to round back to 1 in fp16"
    assert weight.float() + 1e-4 != weight.float(), "expected fp32 to keep 1 + 1e-4"


@claim(L01, "What you implement", (L02, "From the tutorial"))
def test_peft_keeps_fp32_adapters_on_an_fp16_base_and_returns_the_base_dtype():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0).half(), ["q_proj"])
    layer = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.dtype == torch.float32, (
        f"expected fp32 adapters on an fp16 base, found {layer.lora_A['default'].weight.dtype}"
    )
    output = layer(torch.randn(2, 32, dtype=torch.float16))
    assert output.dtype == torch.float16, (
        f"expected peft's LoRA output in the base's fp16, found {output.dtype}"
    )


@claim(L03, "What changed")
def test_an_8bit_weight_counts_one_parameter_per_value():
    from lora_kata.models.tiny import build_tiny_opt

    fp32 = sum(p.numel() for p in build_tiny_opt(0).parameters())
    int8 = sum(p.numel() for p in _eight_bit_model().parameters())
    assert int8 == fp32, (
        f"expected numel() of the 8-bit model to equal the fp32 model's {fp32}, found {int8}"
    )


@claim(L04, "What changed")
def test_peft_all_linear_wraps_every_block_linear_in_a_base_layer():
    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), "all-linear")
    wrapped = _wrapped_by_peft(model)
    assert len(wrapped) == 2 * 6 and not any("lm_head" in n for n in wrapped), (
        f"expected 'all-linear' to wrap the 6 linears of both blocks, not lm_head; found {wrapped}"
    )
    layer = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
    assert hasattr(layer, "base_layer"), "expected peft's wrapped layer to hold base_layer"


@claim(L04, "What changed")
def test_peft_wraps_gpt2_conv1d_with_fan_in_fan_out():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = _peft(GPT2LMHeadModel(config), ["c_attn"], fan_in_fan_out=True)
    wrapped = _wrapped_by_peft(model)
    assert wrapped == ["transformer.h.0.attn.c_attn"], (
        f"expected peft to wrap GPT-2's Conv1D c_attn, found {wrapped}"
    )


@claim(L04, "From the tutorial")
def test_peft_model_wraps_a_lora_model_that_wraps_the_original():
    from peft import LoraModel, PeftModelForCausalLM
    from transformers import OPTForCausalLM

    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), ["q_proj"])
    layers = [type(model), type(model.base_model), type(model.base_model.model)]
    assert layers == [PeftModelForCausalLM, LoraModel, OPTForCausalLM], (
        f"expected PeftModelForCausalLM → LoraModel → OPTForCausalLM, found {layers}"
    )


@claim(L04, "The idea")
def test_peft_bias_all_trains_every_bias_and_lora_only_the_wrapped_ones():
    from lora_kata.models.tiny import build_tiny_opt

    def trainable_biases(bias):
        model = _peft(build_tiny_opt(0), ["q_proj"], bias=bias)
        return sorted(n for n, p in model.named_parameters() if p.requires_grad and "bias" in n)

    every_bias = [n for n, _ in build_tiny_opt(0).named_parameters() if n.endswith(".bias")]
    assert trainable_biases("none") == [], "expected bias='none' to train no bias"
    assert len(trainable_biases("all")) == len(every_bias), (
        f"expected bias='all' to train all {len(every_bias)} biases, found "
        f"{len(trainable_biases('all'))}"
    )
    only = trainable_biases("lora_only")
    assert len(only) == 2 and all("q_proj" in n for n in only), (
        f"expected bias='lora_only' to train only the two q_proj biases, found {only}"
    )


@claim(L04, "What you implement")
def test_adding_a_child_while_iterating_named_modules_raises():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                model.add_module(f"wrapped_{name}", torch.nn.Identity())


@claim(L05, "From the tutorial", (L05, "What changed"))
def test_peft_merge_and_unload_returns_the_plain_model_and_safe_merge_catches_nan():
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import OPTForCausalLM

    from lora_kata.models.tiny import build_tiny_opt

    merged = _peft(build_tiny_opt(0), ["q_proj"]).merge_and_unload()
    assert type(merged) is OPTForCausalLM and not any(
        isinstance(m, BaseTunerLayer) for m in merged.modules()
    ), f"expected a plain OPTForCausalLM without LoRA layers, found {type(merged).__name__}"
    broken = _peft(build_tiny_opt(0), ["q_proj"])
    with torch.no_grad():
        for name, param in broken.named_parameters():
            if "lora_B" in name:
                param.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        broken.merge_and_unload(safe_merge=True)


@claim(L05, "Pitfalls")
def test_an_inplace_merge_outside_no_grad_is_recorded_by_autograd():
    import torch

    weight = torch.nn.Parameter(torch.zeros(4, 3), requires_grad=False)
    lora_A = torch.nn.Parameter(torch.randn(2, 3))
    lora_B = torch.nn.Parameter(torch.randn(4, 2))
    weight.add_(lora_B @ lora_A)
    assert weight.requires_grad and weight.grad_fn is not None, (
        "expected an in-place add of ΔW outside no_grad to put the frozen weight in the graph, "
        f"found requires_grad={weight.requires_grad}, grad_fn={weight.grad_fn}"
    )


@claim(L09, "Pitfalls")
def test_a_set_of_target_modules_is_not_json_serialisable():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        json.dumps({"target_modules": {"q_proj", "v_proj"}})


# --------------------------------------------------------------------------- more of 07-09


@claim(L07, "What you implement", ("README.md", "Install"))
def test_bitsandbytes_runs_8bit_forward_and_backward_on_the_cpu():
    import torch

    model = _peft(_eight_bit_model(), ["q_proj"])
    ids = torch.tensor([[5, 6, 7, 8]])
    with _quiet():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert torch.isfinite(loss) and grads and all(g is not None for g in grads), (
        f"expected a finite loss and LoRA gradients through Linear8bitLt on the CPU, found "
        f"loss {loss.item()} and gradients {[g is not None for g in grads]}"
    )


@claim("docs/gpu.md", "Run the capstone")
def test_an_8bit_load_refuses_a_device_map_that_spills_onto_cpu_or_disk():
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from lora_kata.testing.int8 import tiny_opt_fp16_dir

    with pytest.raises(ValueError, match="llm_int8_enable_fp32_cpu_offload"), _quiet():
        AutoModelForCausalLM.from_pretrained(
            str(tiny_opt_fp16_dir()),
            quantization_config=BitsAndBytesConfig(load_in_8bit=True),
            device_map={"model": "cpu", "lm_head": "disk"},
        )


@claim(L07, "The idea")
def test_llm_int8_threshold_defaults_to_6():
    from transformers import BitsAndBytesConfig

    found = BitsAndBytesConfig(load_in_8bit=True).llm_int8_threshold
    assert found == 6.0, f"expected llm_int8_threshold 6.0 by default, found {found}"


@claim(L08, "From the tutorial")
def test_trainer_defaults_to_adamw_and_a_linear_schedule():
    import tempfile

    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory() as directory:
        arguments = TrainingArguments(output_dir=directory, report_to=[])
    assert str(arguments.optim.value).startswith("adamw"), (
        f"expected the Trainer's default optimizer to be AdamW, found {arguments.optim}"
    )
    assert arguments.lr_scheduler_type.value == "linear", (
        f"expected a linear schedule by default, found {arguments.lr_scheduler_type}"
    )


@claim(L08, "Pitfalls")
def test_grad_scaler_starts_at_a_scale_of_65536():
    import torch

    scale = torch.amp.GradScaler("cpu").get_scale()
    assert scale == 65536.0, f"expected GradScaler's initial scale 2**16, found {scale}"


@claim(L09, "The idea")
def test_a_safetensors_file_is_a_json_header_then_raw_bytes():
    import struct
    import tempfile

    import torch
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "a.safetensors")
        save_file({"lora_A": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(path))
        raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    body = raw[8 + length :]
    assert header["lora_A"]["shape"] == [2, 3] and len(body) == 6 * 4, (
        f"expected an 8-byte length, a JSON header and 24 raw bytes, found {header}, {len(body)}"
    )
    assert torch.equal(torch.frombuffer(bytearray(body), dtype=torch.float32), torch.arange(6.0)), (
        "expected the tensor's bytes as they are after the header"
    )


@claim(L09, "What changed", (L10, "What changed"))
def test_push_to_hub_takes_token_not_use_auth_token():
    import inspect

    from peft import PeftModel

    parameters = inspect.signature(PeftModel.push_to_hub).parameters
    assert "token" in parameters and "use_auth_token" not in parameters, (
        f"expected push_to_hub(token=...) without use_auth_token, found {list(parameters)}"
    )


# --------------------------------------------------------------------------- 14, 15


def _dora_peft(model, target_modules, r=4, lora_alpha=8):
    return _peft(model, target_modules, r=r, lora_alpha=lora_alpha, use_dora=True)


def _random_adapters(model, seed=0):
    """Seeded random values in every trainable tensor of a peft model (B ≠ 0, m ≠ its start)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.requires_grad:
                noise = torch.rand(param.shape, generator=generator)
                param.copy_(param * (1 + 0.5 * noise) if "magnitude" in name else noise - 0.5)


@claim(L14, "The formula", (L14, "What you implement"), (L14, "Pitfalls"))
def test_peft_dora_starts_m_at_the_row_norms_of_w0_and_saves_it_as_lora_magnitude_vector():
    import tempfile

    from safetensors.torch import load_file

    from lora_kata.models.tiny import build_tiny_opt

    model = _dora_peft(build_tiny_opt(0), ["fc1"])  # fc1: (48, 32), rows ≠ columns
    fc1 = model.base_model.model.model.decoder.layers[0].fc1
    magnitude = fc1.lora_magnitude_vector["default"].weight
    w0 = fc1.base_layer.weight.detach()
    assert magnitude.shape == (48,) and magnitude.detach().allclose(w0.norm(dim=1)), (
        f"expected m to start as the 48 row norms of W0, found shape {tuple(magnitude.shape)}"
    )
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        keys = sorted(load_file(f"{directory}/adapter_model.safetensors"))
        config = json.loads(Path(directory, "adapter_config.json").read_text())
    ours = [k for k in keys if "magnitude" in k]
    assert ours and all(k.endswith(".fc1.lora_magnitude_vector") for k in ours), (
        f"expected keys ending '.lora_magnitude_vector' (no .weight), found {ours}"
    )
    assert config["use_dora"] is True, f"expected use_dora true, found {config['use_dora']}"


@claim(L14, "The formula")
def test_peft_dora_treats_the_row_norm_as_a_constant():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = _dora_peft(build_tiny_opt(0), ["fc1"])
    _random_adapters(model)
    fc1 = model.base_model.model.model.decoder.layers[0].fc1
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    fc1(x).sum().backward()
    w0, bias = fc1.base_layer.weight.detach(), fc1.base_layer.bias.detach()
    grads = {}
    for detach in (True, False):
        A = fc1.lora_A["default"].weight.detach().clone().requires_grad_(True)
        B = fc1.lora_B["default"].weight.detach().clone().requires_grad_(True)
        m = fc1.lora_magnitude_vector["default"].weight.detach()
        v = w0 + fc1.scaling["default"] * (B @ A)
        n = v.norm(dim=1).detach() if detach else v.norm(dim=1)
        ((m / n) * (x @ v.T) + bias).sum().backward()
        grads[detach] = B.grad
    peft_grad = fc1.lora_B["default"].weight.grad
    assert peft_grad.allclose(grads[True], atol=1e-5), "expected the gradient with n detached"
    assert not peft_grad.allclose(grads[False], atol=1e-5), (
        "expected it to differ from the gradient through n"
    )


@claim(L14, "The cost")
def test_peft_recommends_merging_dora_and_a_merged_dora_model_is_the_plain_model():
    import dataclasses

    import torch
    from peft import LoraConfig

    from lora_kata.models.tiny import build_tiny_opt

    help_text = {f.name: f for f in dataclasses.fields(LoraConfig)}["use_dora"].metadata["help"]
    assert "overhead" in help_text and "merge weights for inference" in help_text, help_text
    model = _dora_peft(build_tiny_opt(0), ["q_proj", "v_proj"])
    _random_adapters(model)
    ids = torch.randint(4, 512, (2, 7), generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        after = merged(input_ids=ids).logits
    q_proj = merged.model.decoder.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear, f"expected a plain Linear, found {type(q_proj)}"
    assert after.allclose(before, atol=1e-5), (
        f"expected the same logits merged, off by {(after - before).abs().max():.3g}"
    )


@claim(L14, "When to use it")
def test_peft_dora_runs_on_an_8bit_base_with_m_from_the_dequantized_weight():
    import torch

    model = _dora_peft(_eight_bit_model(), ["q_proj"])
    q_proj = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
    weight = q_proj.base_layer.weight
    scales = weight.SCB if getattr(weight, "SCB", None) is not None else q_proj.base_layer.state.SCB
    dequantized = weight.data.float() * scales.float()[:, None] / 127
    magnitude = q_proj.lora_magnitude_vector["default"].weight.detach()
    assert magnitude.allclose(dequantized.norm(dim=1), rtol=1e-3), (
        "expected m to start as the row norms of the dequantized int8 weight"
    )
    ids = torch.randint(4, 512, (1, 5), generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(model(input_ids=ids).logits).all(), "expected finite logits"


def _mixed_peft_model(directory_for, **options):
    """A PeftModel with adapters "a" and "b" (q_proj and v_proj, ranks 2 and 4)."""

    from peft import PeftModel

    from lora_kata.models.tiny import build_tiny_opt

    for name, r in (("a", 2), ("b", 4)):
        model = _peft(build_tiny_opt(0), ["q_proj", "v_proj"], r=r, lora_alpha=2 * r, **options)
        _random_adapters(model, seed=r)
        model.save_pretrained(directory_for(name))
    with _quiet():
        mixed = PeftModel.from_pretrained(build_tiny_opt(0), directory_for("a"), adapter_name="a")
        mixed.load_adapter(directory_for("b"), adapter_name="b")
    return mixed.eval()


@claim(L15, "peft's mixed batches", (L15, "What you implement"))
def test_peft_mixed_batches_take_adapter_names_with___base___and_group_rows_by_adapter(tmp_path):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from lora_kata.models.tiny import build_tiny_opt

    model = _mixed_peft_model(lambda name: tmp_path / name)
    ids = torch.randint(4, 512, (3, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        mixed = model(input_ids=ids, adapter_names=["a", "__base__", "b"]).logits
        base = build_tiny_opt(0).eval()(input_ids=ids).logits
        with model.disable_adapter():
            disabled = model(input_ids=ids).logits
    assert mixed[1].allclose(base[1], atol=1e-6) and disabled.allclose(base, atol=1e-6), (
        "expected the '__base__' row to be the base model's"
    )
    assert not mixed[0].allclose(base[0], atol=1e-3), "expected adapter a to change row 0"
    calls = {}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("mm", "addmm", "bmm", "matmul"):
                self.calls += 1
            return func(*args, **(kwargs or {}))

    q_proj = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
    for rows in (4, 40):
        names = [("a", "b")[i % 2] for i in range(rows)]
        x = torch.randn(rows, 3, 32)
        with torch.no_grad(), Count() as counter:
            counter.calls = 0
            q_proj(x, adapter_names=names)
        calls[rows] = counter.calls
    assert calls[4] == calls[40], f"expected one pass per adapter, not per row: {calls}"


@claim(L15, "Why not merge")
def test_peft_refuses_a_mixed_batch_while_an_adapter_is_merged(tmp_path):
    import torch

    model = _mixed_peft_model(lambda name: tmp_path / name)
    model.base_model.model.model.decoder.layers[0].self_attn.q_proj.merge(adapter_names=["a"])
    ids = torch.randint(4, 512, (2, 5), generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="merged adapters"):
        model(input_ids=ids, adapter_names=["a", "b"])


@claim(L15, "Pitfalls", (L14, "The cost"))
def test_peft_refuses_a_mixed_batch_with_dora_adapters(tmp_path):
    import torch

    model = _mixed_peft_model(lambda name: tmp_path / name, use_dora=True)
    ids = torch.randint(4, 512, (2, 5), generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match="DoRA"):
        model(input_ids=ids, adapter_names=["a", "b"])


@claim(L15, "Pitfalls")
def test_opt_fc1_sees_one_row_per_token_so_peft_refuses_a_mixed_batch_there():
    import torch

    from lora_kata.models.tiny import build_tiny_opt

    model = _peft(build_tiny_opt(0), ["fc1"])
    seen = []
    fc1 = model.base_model.model.model.decoder.layers[0].fc1
    handle = fc1.base_layer.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    ids = torch.randint(4, 512, (2, 5), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    assert seen[0] == (10, 32), f"expected fc1 to get (batch × length, hidden), found {seen[0]}"
    with pytest.raises(ValueError, match="adapter_names"):
        model(input_ids=ids, adapter_names=["default", "__base__"])


# --------------------------------------------------------------------------- the registry


def _cited() -> list[tuple[str, str, str]]:
    return [(c.test, path, section) for c in CLAIMS.values() for path, section in c.sources]


@pytest.mark.parametrize(("test", "path", "section"), _cited(), ids=lambda value: str(value))
def test_every_cited_file_and_section_exists(test, path, section):
    assert (REPO / path).is_file(), f"{test} cites {path}, which does not exist"
    assert section in sections(path), (
        f"{test} cites section '## {section}' of {path}; found sections {sections(path)}: "
        "rename the citation or restore the section"
    )
    assert section_text(path, section).strip(), f"{test} cites an empty section {section!r}"
    counterpart = zh_counterpart(path)
    if counterpart:
        assert (REPO / counterpart).is_file(), (
            f"{test} backs {path}; its Chinese version {counterpart} is missing"
        )


def test_every_claims_test_is_registered():
    tests = [name for name in globals() if name.startswith("test_")]
    own = {
        "test_every_cited_file_and_section_exists",
        "test_every_claims_test_is_registered",
        "test_the_readmes_state_how_many_claims_are_checked",
    }
    unregistered = sorted(set(tests) - set(CLAIMS) - own)
    assert not unregistered, (
        f"expected every claims test to carry @claim(file, section), found without: {unregistered}"
    )


def test_the_readmes_state_how_many_claims_are_checked():
    count = len(CLAIMS)
    english = (REPO / "README.md").read_text(encoding="utf-8")
    chinese = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")
    found_en = re.findall(r"(\d+) claims about libraries", english)
    found_zh = re.findall(r"(\d+) 条关于库的说法", chinese)
    assert found_en == [str(count)], (
        f"expected README.md to say '{count} claims about libraries, each checked by "
        f"tests/test_claims.py', found {found_en}: update the number"
    )
    assert found_zh == [str(count)], (
        f"expected README.zh-CN.md to say '{count} 条关于库的说法', found {found_zh}"
    )
