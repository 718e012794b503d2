"""What the capstone shows before and after training (lora_kata/capstone/evaluate.py, probe.py)
and the demo base it trains offline (lora_kata/models/demo_base.py, shipped in data/demo-base/).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from lora_kata.capstone import probe
from lora_kata.capstone.evaluate import held_out_loss, held_out_stats
from lora_kata.capstone.pieces import implementation_modules
from lora_kata.models import demo_base
from lora_kata.models.tiny import (
    EOS_ID,
    QUOTES_PATH,
    build_tiny_opt,
    quote_texts,
    quotes_tokenizer,
)

PROMPT = "Two things are infinite: "


@pytest.fixture(scope="module")
def modules():
    return implementation_modules("solutions")


@pytest.fixture(scope="module")
def quotes(modules):
    # Short quotes: no truncation at the tiny OPT's 128 positions in the direct computation.
    data = modules.data.load_quotes(QUOTES_PATH)
    return data.select([i for i, q in enumerate(data["quote"]) if len(q) < 150][:12])


def test_held_out_stats_are_probabilities_and_agree_with_a_direct_computation(modules, quotes):
    model, tokenizer = build_tiny_opt(seed=0), quotes_tokenizer()
    stats = held_out_stats(modules, model, tokenizer, quotes, batch_size=5)
    assert stats["loss"] == pytest.approx(held_out_loss(modules, model, tokenizer, quotes))
    assert stats["per_token"] == pytest.approx(math.exp(-stats["loss"]))
    # By hand, one quote at a time: the first token after BOS, and EOS after the last token.
    first, eos, hits, tokens = [], [], 0, 0
    for quote in quotes["quote"]:
        ids = tokenizer(quote)["input_ids"] + [EOS_ID]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        probs = logits.softmax(-1)
        first.append(probs[0, ids[1]].item())
        eos.append(probs[-1, EOS_ID].item())
        hits += int((logits.argmax(-1) == torch.tensor(ids[1:])).sum())
        tokens += len(ids) - 1
    assert stats["first"] == pytest.approx(sum(first) / len(first), rel=1e-4)
    assert stats["eos"] == pytest.approx(sum(eos) / len(eos), rel=1e-4)
    assert stats["top1"] == pytest.approx(hits / tokens)
    assert held_out_stats(modules, model, tokenizer, quotes.select([])) is None


class EosEverywhere(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, hidden):
        logits = torch.zeros(*hidden.shape[:-1], self.vocab_size, dtype=hidden.dtype)
        logits[..., EOS_ID] = 10.0
        return logits


def test_a_continuation_says_whether_it_stopped_at_eos_and_leaves_the_random_state(modules):
    model, tokenizer = build_tiny_opt(seed=0).train(), quotes_tokenizer()
    greedy = probe.continuation(model, tokenizer, PROMPT, 12)
    assert model.training, "the model's mode is put back"
    assert greedy.text.startswith(PROMPT) and greedy.new_tokens <= 12
    state = torch.random.get_rng_state()
    one = probe.continuation(model, tokenizer, PROMPT, 12, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "sampling must not move torch's RNG"
    assert one == probe.continuation(model, tokenizer, PROMPT, 12, seed=3), "a seed repeats"
    # A model whose every logit favours EOS stops at once. (Not by editing lm_head's weights:
    # the logit of EOS would then be the sum of the hidden state, whose sign is float luck.)
    model.lm_head = EosEverywhere(model.config.vocab_size)
    stops = probe.continuation(model, tokenizer, PROMPT, 12)
    assert (stops.stopped, stops.new_tokens) == (True, 1), stops
    assert stops.ending(12) == "stopped at EOS after 1 tokens"
    assert probe.Continuation("x", 12, False).ending(12) == "no EOS: ran to the 12-token limit"


def test_the_printed_blocks_name_the_ending_only_when_it_is_the_implementations_text():
    found = {
        "greedy": probe.Continuation("a\nb", 5, True),
        "samples": [probe.Continuation("c", 50, False)],
        "seeds": [0],
    }
    block = probe.describe(found, "a\nb", 50)
    assert block.splitlines() == [
        "greedy (finetune.generate, as the tutorial; stopped at EOS after 5 tokens):",
        "a↵b",
        "sampled (temperature 0.8, top-p 0.9, seed 0; no EOS: ran to the 50-token limit):",
        "c",
    ], block
    assert probe.ending(found, "something else", 50) == ""
    before = {"first": 0.001, "eos": 0.0, "per_token": 0.003, "top1": 0.07}
    after = {"first": 0.92, "eos": None, "per_token": 0.012, "top1": 0.14}
    table = probe.expectations_table(before, after, 27).splitlines()
    assert table[0] == "what the model expects of those 27 quotes, before → after:"
    assert len(table) == 4 and "0.1% →  92.0%" in table[1] and "7.0% →  14.0%" in table[3]
    assert probe.expectations_table(None, after, 27) == ""


# --------------------------------------------------------------------------- the demo base


def test_the_shipped_demo_base_is_small_fp16_and_matches_the_kata_settings():
    from safetensors import safe_open

    weights = demo_base.SHIPPED / "model.safetensors"
    assert weights.stat().st_size < 1.5e6, "the shipped demo base should stay about a megabyte"
    with safe_open(weights, "pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes == {"F16"}, dtypes
    config = json.loads((demo_base.SHIPPED / "config.json").read_text(encoding="utf-8"))
    for key, value in demo_base.SETTINGS.items():
        assert config[key] == value, (key, config[key], value)
    shipped = json.loads((demo_base.SHIPPED / "tokenizer.json").read_text(encoding="utf-8"))
    trained = json.loads(quotes_tokenizer().backend_tokenizer.to_str())
    assert shipped["model"]["vocab"] == trained["model"]["vocab"], (
        "the shipped tokenizer differs from the one the kata trains on the quotes: rebuild with "
        "python -m lora_kata.models.demo_base --rebuild"
    )


def test_the_demo_base_loads_in_fp32_and_knows_python_docs_not_quotes(tmp_path, monkeypatch):
    from transformers import AutoTokenizer, OPTForCausalLM

    monkeypatch.setattr(demo_base, "CACHE_ROOT", tmp_path)
    directory = demo_base.demo_base_path()
    assert directory.parent == tmp_path and directory == demo_base.cache_dir()
    model = OPTForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert {p.dtype for p in model.parameters()} == {torch.float32}

    def loss(text: str) -> float:
        ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :128]
        with torch.no_grad():
            return model(input_ids=ids, labels=ids).loss.item()

    docs = demo_base.corpus()[:2000]
    quotes = " ".join(quote_texts()[:20])
    assert loss(docs) < 3.5 < loss(quotes), (loss(docs), loss(quotes), "vs ln 512 = 6.24")
