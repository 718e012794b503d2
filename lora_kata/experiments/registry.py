"""The experiments, one per lesson that has one; their titles and what the learner should look
for live in texts.toml (English and 简体中文)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lora_kata.experiments import dora, memory, merging, padding, rank, spectrum, training

TEXTS = tomllib.loads((Path(__file__).with_name("texts.toml")).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Experiment:
    id: str
    title: dict[str, str]
    run: Callable
    look_for: dict[str, str]

    def title_in(self, lang: str) -> str:
        return self.title.get(lang) or self.title["en"]

    def look_for_in(self, lang: str) -> str:
        return self.look_for.get(lang) or self.look_for["en"]


RUNS: dict[str, Callable] = {
    "01": rank.rank_sweep,
    "02": rank.scaling_at_large_r,
    "03": memory.budget,
    "05": merging.latency,
    "06": padding.padding_waste,
    "08": training.warmup_and_accumulation,
    "10": spectrum.trained_delta,
    "14": dora.lora_against_dora,
}

EXPERIMENTS: dict[str, Experiment] = {
    key: Experiment(key, TEXTS[key]["title"], run, TEXTS[key]["look_for"])
    for key, run in RUNS.items()
}
