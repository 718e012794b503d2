"""`lora-kata try NN`: every experiment runs on the reference, saves its picture, and shows
what its lesson says to look for; on the untouched stubs it says which exercise to finish."""

from __future__ import annotations

import re

import pytest

from lora_kata.experiments import EXPERIMENTS, FinishFirst, run
from lora_kata.experiments.common import format_table, translate_cell
from lora_kata.messages.language import display_width

# What each experiment must show on the reference, with the margin it is shown by.
EXPECTED = {
    # r = 4 already fits the fast-decaying ΔW* about 50× better than r = 1 (measured ~60×).
    "01": lambda n: n["r4"] < 0.1 * n["r1"] and n["r64"] < 0.1 * n["r1"],
    # At r = 1024 rsLoRA's α/√r has learned more in 40 steps than α/r (measured ~25×).
    "02": lambda n: n["rs1024"] < 0.5 * n["std1024"],
    # The tutorial's figures: 13 GB in fp16 and about 7 GB in 8-bit; full FT over 100 GB.
    # 6,658,473,984 = the tutorial's "all params" 6,666,862,592 less its 8,388,608 LoRA values.
    "03": lambda n: (
        n["total"] == 6_658_473_984
        and abs(n["fp16_gb"] - 13.317) < 0.001
        and 6.5 < n["int8_gb"] < 7.5
        and n["full_adam_gb"] > 100
        and n["lora"] == 8_388_608
    ),
    # Merging changes the output by float rounding only.
    "05": lambda n: n["max_diff"] < 1e-4,
    # Padding at batch 4 is a real share of the tokens (measured 36 %).
    "06": lambda n: 0.15 < n["waste_batch4"] < 0.7,
    # The first step's loss of 4 × 4 equals one batch of 16 when every row has as many tokens
    # (float rounding, ~1e-7) and not on real quotes of unequal lengths (measured 2e-3).
    "08": lambda n: n["gap_equal_rows"] < 1e-5 and n["gap_real_quotes"] > 1e-4,
    # The trained ΔW keeps most of its energy in 4 singular values out of 16.
    "10": lambda n: n["min_energy_top4"] > 0.5,
    # A teacher with new row lengths: DoRA's magnitude fits them, LoRA at r = 4 cannot
    # (measured: DoRA's final loss ~200× lower); DoRA trains one more value per output row.
    "14": lambda n: n["dora"] < 0.1 * n["lora"] and n["extra"] == 96,
}


def test_every_experiment_has_an_expectation():
    assert set(EXPECTED) == set(EXPERIMENTS), (
        f"experiments {sorted(EXPERIMENTS)} vs expectations {sorted(EXPECTED)}: "
        "give each experiment a check of what its lesson says to look for"
    )


@pytest.mark.parametrize("exercise", sorted(EXPERIMENTS))
def test_experiment_runs_on_the_reference_and_shows_its_point(exercise, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_KATA_IMPL", "solutions")
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    outcome = run(EXPERIMENTS[exercise], tmp_path)
    assert outcome.figure is not None and outcome.figure.is_file(), (
        f"try {exercise} saved no picture (expected a PNG under {tmp_path})"
    )
    assert outcome.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the picture is not a PNG"
    assert outcome.rows, f"try {exercise} printed an empty table"
    assert EXPECTED[exercise](outcome.numbers), (
        f"try {exercise} does not show what its lesson says to look for: {outcome.numbers}"
    )
    words = outcome.headers + [v for row in outcome.rows for v in row if isinstance(v, str) and v]
    untranslated = [w for w in words if has_words(w) and translate_cell(w, "zh") is None]
    assert not untranslated, (
        f"try {exercise} under zh would print these table words in English: {untranslated}; "
        "add them to [table.zh] in lora_kata/experiments/texts.toml"
    )


def has_words(text: str) -> bool:
    """Text with a word in it, not only values ("4096→1024", "7.6 / 8.1", "L0.q_proj")."""
    return re.search(r"[A-Za-z]{2,}", re.sub(r"\S*[_.→]\S*", " ", text)) is not None


def test_a_chinese_table_lines_up_and_keeps_the_values():
    table = format_table(["批大小", "waste"], [[4, 0.35], [16, 0.5]])
    lines = table.splitlines()
    assert len({display_width(line) for line in lines}) == 1, (
        f"every line of the table should be as wide on screen (CJK = 2 columns):\n{table}"
    )
    assert translate_cell("loss after 40", "zh") == "40 步后的损失", (
        f"a templated header keeps its value, got {translate_cell('loss after 40', 'zh')!r}"
    )


def test_on_the_untouched_stubs_it_says_which_exercise_to_finish(tmp_path, monkeypatch):
    from tests.kata_harness import copy_kata

    kata = copy_kata(tmp_path / "kata")
    monkeypatch.setenv("LORA_KATA_IMPL", str(kata / "exercises"))
    with pytest.raises(FinishFirst) as missing:
        run(EXPERIMENTS["01"], tmp_path)
    assert missing.value.exercise in {"01", "02"}, (
        f"try 01 on the stubs should ask to finish 01 or 02, asked for {missing.value.exercise}"
    )
