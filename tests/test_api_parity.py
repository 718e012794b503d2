"""exercises/ and solutions/ expose DESIGN.md's API, with the same names and signatures."""

import importlib
import inspect

import pytest

# DESIGN.md's binding API: module -> name -> parameter names (None for a class checked below).
API = {
    "lora": {
        "lora_scaling": ["alpha", "r", "rslora"],
        "LoRALinear": None,
    },
    "counting": {
        "count_parameters": ["model"],
        "trainable_parameters_line": ["model"],
        "lora_parameter_count": ["in_features", "out_features", "r"],
    },
    "inject": {
        "LoRAConfig": None,
        "find_target_modules": ["model", "target_modules"],
        "inject_lora": ["model", "config"],
        "lora_state_dict": ["model"],
        "merge_lora": ["model"],
        "unmerge_lora": ["model"],
    },
    "data": {
        "load_quotes": ["path"],
        "tokenize_quotes": ["dataset", "tokenizer", "max_length"],
        "collate_for_causal_lm": ["features", "pad_token_id"],
    },
    "int8": {
        "load_in_8bit": ["name_or_path", "device_map"],
        "prepare_for_int8_training": ["model", "use_gradient_checkpointing"],
    },
    "train": {
        "linear_warmup_lr": ["step", "base_lr", "warmup_steps", "max_steps"],
        "train_step": [
            "model",
            "micro_batches",
            "optimizer",
            "scheduler",
            "scaler",
            "autocast_dtype",
        ],
    },
    "adapter": {
        "save_adapter": ["model", "directory", "config", "base_model_name_or_path"],
        "load_adapter": ["model", "directory"],
    },
    "finetune": {
        "finetune": [
            "model",
            "tokenizer",
            "dataset",
            "max_steps",
            "batch_size",
            "grad_accum",
            "lr",
            "warmup_steps",
            "seed",
            "progress",
            "packing",
            "max_length",
        ],
        "generate": ["model", "tokenizer", "prompt", "max_new_tokens"],
    },
    "pack": {
        "padding_waste": ["lengths", "batch_size"],
        "pack_quotes": ["features", "max_length", "pad_token_id"],
    },
    "qlora": {
        "nf4_code": [],
        "quantize_nf4": ["weight", "blocksize"],
        "dequantize_nf4": ["codes", "absmax", "shape", "blocksize"],
        "bits_per_parameter": ["blocksize", "double_quant", "dq_blocksize"],
        "load_in_4bit": ["name_or_path", "double_quant", "compute_dtype", "device_map"],
    },
    "prompt": {
        "PromptTuning": None,
        "prompt_tuning_parameter_count": ["num_virtual_tokens", "hidden_size"],
        "prefix_tuning_parameter_count": ["num_virtual_tokens", "num_layers", "hidden_size"],
    },
    "dora": {
        "DoRALinear": None,
        "inject_dora": ["model", "config"],
    },
    "multi": {
        "MultiLoRALinear": None,
        "load_adapters": ["model", "directories"],
        "routed": ["model", "adapter_names"],
    },
}
LORA_LINEAR_METHODS = {
    "__init__": ["self", "base", "r", "alpha", "dropout"],
    "delta_weight": ["self"],
    "forward": ["self", "x"],
    "merge": ["self"],
    "unmerge": ["self"],
}
LORA_CONFIG_FIELDS = {
    "r": 8,
    "lora_alpha": 8.0,
    "target_modules": ("q_proj", "v_proj"),
    "lora_dropout": 0.0,
    "bias": "none",
}


def public(module) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }


@pytest.mark.parametrize("module", sorted(API))
def test_exercises_and_solutions_define_the_same_public_names_and_signatures(module):
    ours = public(importlib.import_module(f"exercises.{module}"))
    ref = public(importlib.import_module(f"solutions.{module}"))
    assert sorted(ours) == sorted(ref), f"{module}.py: public names differ"
    for name in ours:
        if inspect.isclass(ours[name]):
            for method in set(vars(ours[name])) | set(vars(ref[name])):
                a, b = vars(ours[name]).get(method), vars(ref[name]).get(method)
                if inspect.isfunction(a) or inspect.isfunction(b):
                    assert inspect.signature(a) == inspect.signature(b), f"{module}.{name}.{method}"
        else:
            assert inspect.signature(ours[name]) == inspect.signature(ref[name]), f"{module}.{name}"


@pytest.mark.parametrize("package", ["exercises", "solutions"])
@pytest.mark.parametrize("module", sorted(API))
def test_design_api_is_present_with_its_parameters(package, module):
    loaded = importlib.import_module(f"{package}.{module}")
    for name, params in API[module].items():
        assert hasattr(loaded, name), f"{package}/{module}.py lacks {name} (DESIGN.md's API)"
        if params is not None:
            got = list(inspect.signature(getattr(loaded, name)).parameters)
            assert got == params, f"{package}.{module}.{name}{got} != DESIGN.md's {params}"


@pytest.mark.parametrize("package", ["exercises", "solutions"])
def test_lora_linear_and_lora_config_have_the_designed_shape(package):
    lora = importlib.import_module(f"{package}.lora")
    for method, params in LORA_LINEAR_METHODS.items():
        got = list(inspect.signature(getattr(lora.LoRALinear, method)).parameters)
        assert got == params, f"{package}.lora.LoRALinear.{method}{got}"
    inject = importlib.import_module(f"{package}.inject")
    import dataclasses

    fields = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(inject.LoRAConfig)
    }
    for name, default in LORA_CONFIG_FIELDS.items():
        assert name in fields, f"{package}.inject.LoRAConfig lacks the field {name}"
        got = tuple(fields[name]) if name == "target_modules" else fields[name]
        assert got == default, f"{package}.inject.LoRAConfig.{name} defaults to {got!r}"


# DESIGN.md's methods of exercise 14's and 15's classes.
CLASS_METHODS = {
    ("dora", "DoRALinear"): {
        "__init__": ["self", "base", "r", "alpha", "dropout"],
        "forward": ["self", "x"],
        "merge": ["self"],
        "unmerge": ["self"],
    },
    ("multi", "MultiLoRALinear"): {
        "__init__": ["self", "base"],
        "add_adapter": ["self", "name", "lora_A", "lora_B", "scaling"],
        "forward": ["self", "x"],
    },
}


@pytest.mark.parametrize("package", ["exercises", "solutions"])
@pytest.mark.parametrize(("module", "cls"), sorted(CLASS_METHODS))
def test_dora_and_multi_lora_classes_have_the_designed_methods(package, module, cls):
    loaded = getattr(importlib.import_module(f"{package}.{module}"), cls)
    for method, params in CLASS_METHODS[(module, cls)].items():
        got = list(inspect.signature(getattr(loaded, method)).parameters)
        assert got == params, f"{package}.{module}.{cls}.{method}{got} != DESIGN.md's {params}"
