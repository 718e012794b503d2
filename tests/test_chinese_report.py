"""Under LORA_KATA_LANG=zh the learner reads no English sentence: the report, the failing
test's title and message, and pytest's own header and closing line.

The issue's own check is the first test: the whole kata (`pytest exercises/`) with a wrong
forward. Then every catalogued mistake (tests/mutants/NN.toml) under zh. Quoted words are not
ours and are left out of the check: a line where the code under test raised
("抛出了 RuntimeError：..."), a library's warning, text in “…” or '...' (an exception's text
inside a Chinese message).
"""

from __future__ import annotations

import re

import pytest

from lora_kata.runner.report import TEST_ERRORS
from tests.english_support import english_sentences
from tests.kata_harness import exercise_test_path, load_mutants, run_kata_warm, stop_warm

MUTANTS = load_mutants()
WRONG_FORWARD = next(m for m in MUTANTS if m.id == "scaling_missing_in_forward")
# pytest's version header: names and versions, no sentence to translate.
HEADER = re.compile(r"^(platform |rootdir: |configfile: |plugins: |cachedir: )")
QUOTED_LIBRARY_ERROR = "抛出了 "
LIBRARY_WARNING = re.compile(r"\b\w*Warning: ")
CJK = re.compile(r"[\u4e00-\u9fff]")
# What a learner's own run shows: the report, no tracebacks (the runner's default for
# exercises/; a run on another folder, as here, would otherwise show pytest's short summary).
AS_A_LEARNER = ("--tb=no", "-rN")


@pytest.fixture(scope="module", autouse=True)
def _warm_runs():
    yield
    stop_warm()


def english_lines(output: str) -> list[str]:
    """The output's lines holding an English sentence (pytest's version header excepted)."""
    found = []
    for line in output.splitlines():
        text = line.strip()
        if HEADER.match(text) or text.startswith(QUOTED_LIBRARY_ERROR):
            continue
        if "PytestAssertRewriteWarning" in text:  # the harness's warm forkserver, not the kata
            continue
        if LIBRARY_WARNING.search(text):  # a library's warning, quoted by pytest's summary
            continue
        if english_sentences(text):
            found.append(text)
    return found


def test_the_line_check_ignores_the_version_header_and_finds_a_sentence():
    output = (
        "platform linux -- Python 3.11.7, pytest-9.0.3\n"
        "   forward 应为 base(x) + self.scaling · x Aᵀ Bᵀ\n"
        "   the update is added unscaled\n"
    )
    assert english_lines(output) == ["the update is added unscaled"], (
        f"expected only the English sentence, found {english_lines(output)}"
    )


def test_pytests_own_lines_are_translated_and_other_text_is_left_alone():
    from lora_kata.messages.pytest_zh import translate

    cases = {
        "test session starts": "开始测试",
        "collected 254 items / 200 deselected / 54 selected": (
            "收集到 254 个测试 / 200 个未选中 / 54 个已选中"
        ),
        "2 failed, 113 passed, 139 skipped in 9.59s": (
            "2 个未通过, 113 个通过, 139 个跳过，用时 9.59s"
        ),
        "exercises/tests/test_01_lora_layer.py ....  [  8%]": (
            "exercises/tests/test_01_lora_layer.py ....  [  8%]"
        ),
    }
    wrong = {k: translate(k) for k, v in cases.items() if translate(k) != v}
    assert not wrong, f"translated differently: {wrong}"


def test_a_wrong_forward_shows_no_english_sentence_under_zh(tmp_path):
    impl = WRONG_FORWARD.apply(tmp_path)
    run = run_kata_warm(impl, *AS_A_LEARNER, lang="zh")
    failed = [t for t in run.tests("02") if t["outcome"] == "failed"]
    assert failed, f"the wrong forward should fail exercise 02's tests\n{run.explain()}"
    english = english_lines(run.output)
    assert not english, "English under LORA_KATA_LANG=zh:\n" + "\n".join(english)
    message = failed[0]["message"]
    assert CJK.search(message), f"the failure's message should be Chinese, got {message!r}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.exercise}-{m.id}")
def test_every_catalogued_mistake_is_reported_in_chinese(mutant, tmp_path):
    exercise = mutant.exercise
    impl = mutant.apply(tmp_path)
    run = run_kata_warm(
        impl, exercise_test_path(exercise), "--run-waiting", *AS_A_LEARNER, lang="zh"
    )
    failed = [t for t in run.tests(exercise) if t["outcome"] == "failed"]
    assert failed, f"mutant {mutant.id} should fail exercise {exercise}\n{run.explain()}"
    english = english_lines(run.output)
    assert not english, f"mutant {mutant.id} under zh shows English:\n" + "\n".join(english)
    # The tests' own messages (a failed assert or pytest.fail); what the code under test
    # raised is its own words, shown after "抛出了 <type>：".
    shown = [
        t["message"]
        for t in failed
        if t.get("why") == "wrong" and t.get("error_type") in TEST_ERRORS
    ]
    not_chinese = [m for m in shown if not CJK.search(m)]
    assert not not_chinese, (
        f"mutant {mutant.id}: these failures' messages are not Chinese: {not_chinese}"
    )
