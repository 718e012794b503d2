"""The capstone's command line (lora_kata/capstone/): model choice, flags, a real run."""

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from lora_kata.capstone.arguments import device_map_from, parse_args
from lora_kata.capstone.models import choose_model
from lora_kata.capstone.outputs import write_atomically
from lora_kata.capstone.pieces import PieceMissing, finetune_options, load_quantized
from lora_kata.capstone.run import main
from tests.kata_harness import REPO, clean_env


def test_an_explicit_model_is_used_as_given(tmp_path):
    choice = choose_model("facebook/opt-6.7b", tmp_path)
    assert (choice.path, choice.name, choice.small) == (
        "facebook/opt-6.7b",
        "facebook/opt-6.7b",
        False,
    )


def test_device_map_accepts_auto_a_device_or_nothing():
    assert device_map_from(None) is None and device_map_from("none") is None
    assert device_map_from("auto") == "auto"
    assert device_map_from("cuda:1") == {"": "cuda:1"}
    assert device_map_from("0") == {"": 0}


def test_a_cached_opt_125m_is_found_offline_and_preferred(tmp_path):
    snapshot = tmp_path / "models--facebook--opt-125m" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (snapshot / name).write_text("{}", encoding="utf-8")
    (tmp_path / "models--facebook--opt-125m" / "refs").mkdir()
    (tmp_path / "models--facebook--opt-125m" / "refs" / "main").write_text("abc123")
    code = (
        "from pathlib import Path; from lora_kata.capstone.models import choose_model;"
        "c = choose_model(None, Path('unused')); print(c.path, c.name, c.small)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
        env=clean_env(OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path)), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(snapshot), "facebook/opt-125m", "False"], done.stdout


def test_the_reference_cli_runs_offline_and_writes_adapter_plot_and_generation(tmp_path):
    """`python -m solutions.finetune --small` from the repository, with an empty HF cache."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "solutions.finetune", "--max-steps", "3", "--out", str(out),
         "--no-progress", "--small"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=clean_env(OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path / "empty-cache")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout
    assert "the built-in small OPT with random weights (--small)" in said, said
    assert "trainable params: " in said and " || all params: " in said
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 16 and config["lora_alpha"] == 32
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert any(line.startswith("Two things are infinite: ") for line in said.splitlines()), said


# ------------------------------------------------------------------ flags that reach further


def _tutorial_finetune(model, tokenizer, dataset, *, max_steps=200, batch_size=4, grad_accum=4,
                       lr=2e-4, warmup_steps=100, seed=0, progress=True):  # fmt: skip
    raise AssertionError("not called: the flags are checked before anything is loaded")


def _packing_finetune(model, tokenizer, dataset, *, max_steps=200, batch_size=4, grad_accum=4,
                      lr=2e-4, warmup_steps=100, seed=0, progress=True, packing=False,
                      max_length=None):  # fmt: skip
    raise AssertionError("not called")


def test_packing_and_max_length_reach_finetune_only_when_asked():
    plain = parse_args([])
    assert finetune_options(_tutorial_finetune, plain) == {}, (
        "without --packing / --max-length, finetune must be called as the tutorial's "
        "(exercise 10's finetune has no packing keyword)"
    )
    asked = parse_args(["--packing", "--max-length", "96"])
    assert finetune_options(_packing_finetune, asked) == {"packing": True, "max_length": 96}
    assert finetune_options(_packing_finetune, parse_args(["--max-length", "64"])) == {
        "max_length": 64
    }


@pytest.mark.parametrize("flags", [["--packing"], ["--max-length", "64"]])
def test_packing_flags_with_a_finetune_that_lacks_them_name_exercise_11(flags):
    with pytest.raises(PieceMissing, match="exercise 11") as caught:
        finetune_options(_tutorial_finetune, parse_args(flags))
    assert flags[0] in str(caught.value), f"expected the message to name {flags[0]}: {caught.value}"


def _recorder(calls: list):
    def load(path, **options):
        calls.append((path, options))
        return "model"

    return load


def test_quant_8bit_is_the_tutorials_loader_and_4bit_asks_for_double_quantization():
    import torch

    calls8, calls4 = [], []
    modules = SimpleNamespace(
        int8=SimpleNamespace(load_in_8bit=_recorder(calls8)),
        qlora=SimpleNamespace(load_in_4bit=_recorder(calls4)),
    )
    assert parse_args([]).quant == "8bit", "the default must be the tutorial's 8-bit"
    load_quantized(modules, "m", "8bit", device_map={"": 1})
    assert calls8 == [("m", {"device_map": {"": 1}})], calls8
    load_quantized(modules, "m", "4bit", device_map=None, cuda=False)
    assert calls4 == [
        ("m", {"double_quant": True, "compute_dtype": torch.float32, "device_map": None})
    ], calls4
    load_quantized(modules, "m", "4bit", cuda=True)
    assert calls4[-1][1]["compute_dtype"] == torch.float16, (
        "on CUDA the 4-bit matmuls should run in fp16, like the loop's fp16 autocast"
    )


def test_quant_4bit_without_exercise_12_says_so():
    modules = SimpleNamespace(int8=SimpleNamespace(), name=None)
    with pytest.raises(PieceMissing, match="exercise 12"):
        load_quantized(modules, "m", "4bit")


def test_bad_flag_values_are_refused_by_argparse(capsys):
    for flags in (["--quant", "3bit"], ["--lora-dropout", "1"], ["--max-length", "0"]):
        with pytest.raises(SystemExit) as caught:
            parse_args(flags)
        assert caught.value.code == 2, f"{flags}: expected exit 2 (usage), got {caught.value}"
    assert "3bit" in capsys.readouterr().err


def test_from_the_command_line_a_missing_piece_is_one_sentence_and_exit_2(monkeypatch, capsys):
    fake = SimpleNamespace(name="fake", finetune=SimpleNamespace(finetune=_tutorial_finetune))
    monkeypatch.setattr(sys, "argv", ["finetune", "--packing", "--small", "--out", "unused"])
    assert main(fake) == 2
    err = capsys.readouterr().err
    assert "--packing needs finetune(" in err and "Traceback" not in err, err


def test_outputs_are_written_atomically_with_the_umask_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        path = write_atomically(tmp_path / "metrics.json", b"{}\n")
    finally:
        os.umask(previous)
    mode = path.stat().st_mode & 0o777
    assert mode == 0o640, f"expected 0o666 & ~0o027 = 0o640, found {oct(mode)}"
    assert path.read_bytes() == b"{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"], (
        "a temporary file was left"
    )


def test_offline_without_a_model_the_demo_base_is_fine_tuned_and_shows_before_and_after(
    tmp_path,
):
    """No --model and no cached opt-125m: the demo base (shipped in data/demo-base/), the
    held-out loss and what the model expects of held-out quotes, and the greedy and sampled
    continuations before and after training, each saying whether it stopped at EOS."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "solutions.finetune", "--max-steps", "4", "--out", str(out),
         "--no-progress", "--max-new-tokens", "6"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=clean_env(OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path / "empty-cache")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout
    assert "model: the demo base" in said and "Python's reference documentation" in said, said
    assert "never seen a quote" in said, f"the run should say plainly what the base is:\n{said}"
    held_out = re.search(r"held-out loss \((\d+) quotes never trained on\): ([\d.]+) before → "
                         r"([\d.]+) after", said)  # fmt: skip
    assert held_out, f"the run should print the held-out loss before and after:\n{said}"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["held_out"]["quotes"] == int(held_out.group(1)) > 0, metrics["held_out"]
    assert metrics["held_out"]["loss_before"] == pytest.approx(float(held_out.group(2)), abs=1e-4)
    assert metrics["generation_before"].startswith("Two things are infinite: "), metrics
    assert "before fine-tuning, the base model continues the prompt as:" in said, said
    table = said.split("what the model expects of those ", 1)[-1].splitlines()[1:5]
    assert [line.split("  ")[1].strip() for line in table] == [
        "probability of a quote's first token, after BOS",
        "probability of EOS after a quote's last token",
        "probability per token (geometric mean: exp(-loss))",
        "tokens that are the model's top guess",
    ], said
    before, after = metrics["held_out"]["before"], metrics["held_out"]["after"]
    assert f"{before['first']:6.1%} → {after['first']:6.1%}" in table[0], (table, metrics)
    assert said.count("sampled (temperature 0.8, top-p 0.9, seed ") == 4, said
    endings = re.findall(
        r"(stopped at EOS after \d+ tokens|no EOS: ran to the 6-token limit)", said
    )
    assert len(endings) == 6, f"greedy and two samples, before and after, say how they end:\n{said}"
    samples = metrics["continuations"]["samples"]
    assert [s["seed"] for s in samples] == [0, 1] and all(
        s["text"].startswith("Two things are infinite: ") for s in samples
    ), samples
