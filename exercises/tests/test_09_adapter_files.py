"""Exercise 09: adapter files in peft's format (exercises/adapter.py).

save_adapter writes adapter_config.json and adapter_model.safetensors as peft does, so that
PeftModel.from_pretrained loads them; load_adapter reads ours and peft's, and refuses (with a
clear error) what peft only warns about: missing or unexpected keys, wrong shapes.
Every model here has random, non-zero A and B: with B = 0 every adapter would look alike and
"the logits match" would prove nothing.
"""

import json
import os
import pickle
import stat

import pytest
import torch

from lora_kata.catalog.impl import implementation, load
from lora_kata.messages import msg
from lora_kata.testing.raising import must_raise
from lora_kata.testing.training import (
    UNPICKLED,
    PickleBomb,
    lora_names,
    tiny_lora_opt,
    token_batch,
)

adapter = implementation("adapter")
inject = implementation("inject")

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
# What the failing writers of test_a_failed_save_leaves_the_previous_adapter_intact raise.
DISK_FULL = "simulated: disk full"
OUT_OF_MEMORY = "simulated: out of memory"


def fresh_base(seed=0, **overrides):
    """The same tiny OPT (same seed: same weights) with no LoRA in it."""
    from lora_kata.models.tiny import build_tiny_opt

    return build_tiny_opt(seed, **overrides)


def logits(model, batch=None):
    batch = batch or token_batch(2, 10, seed=42)
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def read_config(directory):
    return json.loads((directory / CONFIG).read_text(encoding="utf-8"))


def read_weights(directory):
    from safetensors.torch import load_file

    return load_file(directory / WEIGHTS)


def write_weights(directory, tensors):
    from safetensors.torch import save_file

    save_file(tensors, directory / WEIGHTS)


def expected_keys(model):
    """peft's key for each LoRA matrix: base_model.model.<module>.lora_A.weight."""
    return {f"{PREFIX}{name}.weight" for name in lora_names(model)}


def test_config_holds_the_settings_peft_needs(tmp_path):
    model, config = tiny_lora_opt(r=4, lora_alpha=16)  # α = 16, not peft's default of 8
    adapter.save_adapter(model, tmp_path, config, base_model_name_or_path="tiny-opt")
    saved = read_config(tmp_path)
    # The keys DESIGN.md names; peft fills any other key with its default when it loads.
    wanted = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "bias": "none",
        "base_model_name_or_path": "tiny-opt",
    }
    # Optional keys: if written, they must say what peft expects of a plain causal-LM LoRA.
    optional = {"task_type": "CAUSAL_LM", "fan_in_fan_out": False, "inference_mode": True}
    for key, value in wanted.items():
        assert key in saved, msg(
            "09.config_lacks_key",
            key=key,
            why=msg("09.lora_alpha_default") if key == "lora_alpha" else "",
            found=sorted(saved),
        )
        assert saved[key] == value, msg("09.config_value", key=key, got=saved[key], want=value)
    for key, value in optional.items():
        if key in saved and key != "inference_mode":  # peft's own LoraConfig writes False
            assert saved[key] == value, msg(
                "09.config_optional_value", key=key, got=saved[key], want=value
            )
    assert isinstance(saved.get("target_modules"), list), msg(
        "09.target_modules_list", got=saved.get("target_modules")
    )
    assert sorted(saved["target_modules"]) == ["q_proj", "v_proj"], msg(
        "09.target_modules_value", got=saved["target_modules"]
    )
    for flag in ("use_rslora", "use_dora"):
        assert not saved.get(flag), msg("09.plain_lora_flag", flag=flag)


def test_base_model_name_defaults_to_where_the_model_came_from(tmp_path):
    model, config = tiny_lora_opt()
    model.config._name_or_path = "facebook/opt-6.7b"  # what from_pretrained records
    adapter.save_adapter(model, tmp_path, config)
    saved = read_config(tmp_path).get("base_model_name_or_path")
    assert saved == "facebook/opt-6.7b", msg("09.base_model_name_default", got=saved)


def test_weights_are_saved_under_peft_keys(tmp_path):
    model, config = tiny_lora_opt()
    adapter.save_adapter(model, tmp_path, config)
    tensors = read_weights(tmp_path)
    want = expected_keys(model)
    keys = sorted(tensors)
    with_name = [k for k in keys if ".default" in k]
    assert not with_name, msg("09.adapter_name_in_keys", example=with_name[0])
    unprefixed = [k for k in keys if not k.startswith(PREFIX)]
    assert not unprefixed, msg("09.keys_lack_prefix", example=unprefixed[0])
    assert set(keys) == want, msg(
        "09.saved_keys",
        want=sorted(want)[:2],
        got=keys[:2],
        missing=sorted(want - set(keys))[:2],
        unexpected=sorted(set(keys) - want)[:2],
    )
    params = dict(model.named_parameters())
    for key, tensor in tensors.items():
        param = params[key.removeprefix(PREFIX).removesuffix(".weight")]
        assert tensor.dtype == torch.float32 and torch.equal(tensor, param.detach()), msg(
            "09.saved_tensor", key=key, matrix=key.split(".")[-2]
        )


def test_a_regex_target_modules_is_saved_as_that_string(tmp_path):
    pattern = r".*\.(q|v)_proj"
    model, config = tiny_lora_opt(target_modules=pattern)
    adapter.save_adapter(model, tmp_path, config)
    saved = read_config(tmp_path)["target_modules"]
    assert saved == pattern, msg("09.regex_target_modules", pattern=pattern, got=saved)


def test_save_creates_the_directory(tmp_path):
    model, config = tiny_lora_opt()
    directory = tmp_path / "runs" / "quotes-adapter"
    adapter.save_adapter(model, directory, config)
    assert (directory / CONFIG).is_file() and (directory / WEIGHTS).is_file(), msg(
        "09.save_creates_directory",
        directory=directory,
        config=CONFIG,
        weights=WEIGHTS,
        found=sorted(p.name for p in directory.glob("*")),
    )


def test_saved_files_honour_the_umask(tmp_path):
    if os.name == "nt":
        pytest.skip(msg("09.no_umask_on_windows"))
    model, config = tiny_lora_opt()
    for umask in (0o022, 0o077):
        directory = tmp_path / f"umask-{umask:03o}"
        previous = os.umask(umask)
        try:
            adapter.save_adapter(model, directory, config)
        finally:
            os.umask(previous)
        expected = 0o666 & ~umask
        for name in (CONFIG, WEIGHTS):
            mode = stat.S_IMODE((directory / name).stat().st_mode)
            assert mode == expected, msg(
                "09.umask_mode",
                umask=umask,
                name=name,
                expected=expected,
                mode=mode,
                why=msg("09.mkstemp_private_mode") if mode == 0o600 else "",
            )


def test_round_trip_restores_the_weights_and_the_logits(tmp_path):
    model, config = tiny_lora_opt(seed=0, r=4, lora_alpha=16)
    adapter.save_adapter(model, tmp_path, config)
    loaded = adapter.load_adapter(fresh_base(seed=0), tmp_path)
    assert loaded is not None, msg("09.load_returns_model")
    assert set(lora_names(loaded)) == set(lora_names(model)), msg(
        "09.loaded_lora_where_config_says",
        want=sorted(lora_names(model))[:2],
        got=sorted(lora_names(loaded))[:2],
    )
    mine, theirs = dict(model.named_parameters()), dict(loaded.named_parameters())
    for name in lora_names(model):
        assert torch.equal(mine[name], theirs[name]), msg("09.tensor_survives", name=name)
    expected, got = logits(model), logits(loaded)
    # The same weights through the same code: bit-identical.
    assert torch.equal(got, expected), msg(
        "09.round_trip_logits", diff=(got - expected).abs().max().item()
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_peft_loads_our_adapter_with_identical_logits(tmp_path):
    from peft import PeftModel

    model, config = tiny_lora_opt(seed=0, r=4, lora_alpha=16)
    adapter.save_adapter(model, tmp_path, config)
    peft_model = PeftModel.from_pretrained(fresh_base(seed=0), str(tmp_path))
    expected, got = logits(model), logits(peft_model)
    plain = logits(fresh_base(seed=0))
    assert not torch.allclose(expected, plain, atol=1e-3), msg("09.adapter_changes_logits")
    # peft computes the same base(x) + (α/r)·B·A·x; measured bit-identical, but a different
    # (equally valid) operation order in exercise 02's forward may move the last bits: 1e-5
    # absolute on logits of order 1; the adapter itself moves them by > 1e-3 (checked above).
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), msg(
        "09.peft_loads_ours",
        diff=(got - expected).abs().max().item(),
        plain=(plain - expected).abs().max().item(),
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_load_adapter_reads_a_peft_saved_adapter_with_identical_logits(tmp_path):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        fresh_base(seed=0),
        LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj"],
            lora_dropout=0.05,
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    randomise_lora_in_peft(peft_model)
    peft_model.save_pretrained(str(tmp_path))
    expected = logits(peft_model)
    loaded = adapter.load_adapter(fresh_base(seed=0), tmp_path)
    got = logits(loaded)
    assert not torch.allclose(expected, logits(fresh_base(seed=0)), atol=1e-3), msg(
        "09.peft_adapter_changes_logits"
    )
    # Same maths as above, the other way round.
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), msg(
        "09.loads_peft_files", diff=(got - expected).abs().max().item()
    )


def randomise_lora_in_peft(peft_model, seed=7):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def test_a_missing_key_is_an_error_not_a_warning(tmp_path):
    model, config = tiny_lora_opt()
    adapter.save_adapter(model, tmp_path, config)
    tensors = read_weights(tmp_path)
    dropped = sorted(tensors)[-1]
    del tensors[dropped]
    write_weights(tmp_path, tensors)
    base = fresh_base()
    try:
        adapter.load_adapter(base, tmp_path)
    except ValueError as error:
        assert dropped in str(error), msg("09.missing_key_named", key=dropped, error=error)
    else:
        pytest.fail(msg("09.missing_key_accepted", key=dropped), pytrace=False)


def test_an_unexpected_key_is_an_error(tmp_path):
    model, config = tiny_lora_opt()
    adapter.save_adapter(model, tmp_path, config)
    tensors = read_weights(tmp_path)
    extra = f"{PREFIX}model.decoder.layers.0.self_attn.k_proj.lora_A.weight"
    tensors[extra] = torch.zeros(4, 32)
    write_weights(tmp_path, tensors)
    with must_raise(
        ValueError,
        msg("09.unexpected_key_accepted", key=extra),
        instead=lambda error: msg(
            "09.unexpected_key_raised_instead",
            key=extra,
            error_type=type(error).__name__,
            error=error,
        ),
    ) as raised:
        adapter.load_adapter(fresh_base(), tmp_path)
    assert extra in str(raised.value), msg("09.unexpected_key_named", key=extra, error=raised.value)


def test_a_shape_mismatch_is_an_error_and_leaves_the_model_untouched(tmp_path):
    model, config = tiny_lora_opt()  # hidden size 32
    adapter.save_adapter(model, tmp_path, config)
    other = fresh_base(hidden_size=40, word_embed_proj_dim=40)  # same names, other shapes
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with must_raise(
        ValueError,
        msg("09.shape_mismatch_accepted"),
        instead=lambda error: msg(
            "09.shape_mismatch_raised_instead", error_type=type(error).__name__, error=error
        ),
    ) as raised:
        adapter.load_adapter(other, tmp_path)
    assert "shape" in str(raised.value).lower(), msg("09.shapes_named", error=raised.value)
    assert not lora_names(other) and set(other.state_dict()) == set(before), msg(
        "09.failed_load_leaves_model"
    )


@pytest.mark.differential  # a comparison with peft: runs once the rest pass
def test_an_rslora_adapter_is_refused_or_loaded_as_peft_would(tmp_path):
    """use_rslora=True means the update is scaled by α/√r, not α/r. A loader may refuse such a
    file (ValueError naming use_rslora) or honour it; loading it as plain α/r is wrong."""
    from peft import PeftModel

    model, config = tiny_lora_opt(seed=0, r=4, lora_alpha=16)
    adapter.save_adapter(model, tmp_path, config)
    settings = read_config(tmp_path)
    settings["use_rslora"] = True
    (tmp_path / CONFIG).write_text(json.dumps(settings), encoding="utf-8")
    try:
        loaded = adapter.load_adapter(fresh_base(seed=0), tmp_path)
    except ValueError as error:
        assert "use_rslora" in str(error), msg("09.rslora_refusal_named", error=error)
        return
    expected = logits(PeftModel.from_pretrained(fresh_base(seed=0), str(tmp_path)))
    got = logits(loaded)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), msg(
        "09.rslora_scaling", diff=(got - expected).abs().max().item()
    )


def test_nothing_is_ever_unpickled(tmp_path, monkeypatch):
    model, config = tiny_lora_opt()
    adapter.save_adapter(model, tmp_path, config)

    def refuse(*args, **kwargs):
        raise AssertionError(msg("09.unpickled_something"))

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    loaded = adapter.load_adapter(fresh_base(), tmp_path)
    assert lora_names(loaded), msg("09.injected_lora")


def test_refuses_a_pickle_only_adapter(tmp_path):
    model, config = tiny_lora_opt()
    adapter.save_adapter(model, tmp_path, config)
    (tmp_path / WEIGHTS).unlink()
    (tmp_path / "adapter_model.bin").write_bytes(pickle.dumps(PickleBomb()))
    UNPICKLED.clear()
    with must_raise(Exception, msg("09.pickle_only_accepted")) as raised:
        adapter.load_adapter(fresh_base(), tmp_path)
    assert not UNPICKLED, msg("09.unpickled_bin")
    # Best: a ValueError saying adapter_model.bin is a pickle and only safetensors is read.
    assert str(raised.value), msg("09.error_says_why")


def test_a_failed_save_leaves_the_previous_adapter_intact(tmp_path, monkeypatch):
    first, config = tiny_lora_opt(seed=0)
    adapter.save_adapter(first, tmp_path, config, base_model_name_or_path="first")
    old = {name: (tmp_path / name).read_bytes() for name in (CONFIG, WEIGHTS)}

    second, _ = tiny_lora_opt(seed=1)

    def fail_midway(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")  # a crash or a full disk, halfway through
        raise OSError(DISK_FULL)

    def fail_to_serialise(*args, **kwargs):
        raise OSError(OUT_OF_MEMORY)

    import safetensors.torch

    module = load("adapter")  # also where `from safetensors.torch import save_file` lands
    for name, failure in [("save_file", fail_midway), ("save", fail_to_serialise)]:
        original = getattr(safetensors.torch, name)
        monkeypatch.setattr(safetensors.torch, name, failure)
        if getattr(module, name, None) is original:
            monkeypatch.setattr(module, name, failure)
    with must_raise(OSError, msg("09.failed_save_swallowed")) as raised:
        adapter.save_adapter(second, tmp_path, config, base_model_name_or_path="second")
    assert "simulated" in str(raised.value), msg("09.failed_save_other_error", error=raised.value)
    now = {name: (tmp_path / name).read_bytes() for name in (CONFIG, WEIGHTS)}
    spoilt = [name for name in old if now[name] != old[name]]
    assert not spoilt, msg("09.failed_save_spoilt", spoilt=spoilt)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in old)
    assert not leftovers, msg("09.failed_save_leftovers", leftovers=leftovers)
