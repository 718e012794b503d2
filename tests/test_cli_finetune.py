"""The capstone's command line (lora_kata/cli_finetune.py): model choice, flags, a real run."""

import json
import subprocess
import sys

from lora_kata.cli_finetune import choose_model, device_map_from
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
        "from pathlib import Path; from lora_kata.cli_finetune import choose_model;"
        "c = choose_model(None, Path('unused')); print(c.path, c.name, c.small)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
        env=clean_env(OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path)), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(snapshot), "facebook/opt-125m", "False"], done.stdout


def test_the_reference_cli_runs_offline_and_writes_adapter_plot_and_generation(tmp_path):
    """`python -m solutions.finetune` from the repository, with an empty Hugging Face cache."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "solutions.finetune", "--max-steps", "3", "--out", str(out),
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=clean_env(OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path / "empty-cache")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout
    assert "the built-in small OPT" in said and "not in the local Hugging Face cache" in said
    assert "trainable params: " in said and " || all params: " in said
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 16 and config["lora_alpha"] == 32
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert any(line.startswith("Two things are infinite: ") for line in said.splitlines()), said
