"""What runs is what the learner wrote: datasets' `map` cache is never reused across edits.

`map` fingerprints the mapped function by its own code; a module-level helper it calls is
referred to by name, so a fixed helper could be served the old, cached result.
"""

import subprocess
import sys

from tests.kata_harness import REPO, clean_env, copy_kata

HELPER = """

def _text_of(samples):
    return samples["{column}"]
"""

PROBE = '''
"""Tokenizes a file-backed dataset (one with cache files, where map caches)."""
from lora_kata.catalog.impl import implementation
from lora_kata.models.tiny import quotes_tokenizer

data = implementation("data")


def test_tokenize_quotes_tokenizes_the_quote_column(tmp_path_factory):
    dataset = data.load_quotes()
    tokenizer = quotes_tokenizer()
    tokenized = data.tokenize_quotes(dataset, tokenizer)
    expected = tokenizer(dataset[0]["quote"])["input_ids"]  # then the EOS tokenize_quotes adds
    assert tokenized[0]["input_ids"][: len(expected)] == expected, (
        "expected the quote's tokens; found another column's: the helper still reads it"
    )
'''


def _learner_tree(tmp_path, column: str) -> None:
    data = (REPO / "solutions" / "data.py").read_text(encoding="utf-8")
    # The mapped function calls a module-level helper, which map's fingerprint names only.
    call = 'encoded = tokenizer(samples["quote"])'
    assert call in data, "solutions/data.py changed: update this test's rewrite of it"
    data = data.replace(call, "encoded = tokenizer(_text_of(samples))")
    (tmp_path / "exercises" / "data.py").write_text(
        data + HELPER.format(column=column), encoding="utf-8"
    )


def _run(tmp_path, cache) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/tests/test_06_cache_probe.py", "-q"],
        cwd=tmp_path,
        env=clean_env(HF_DATASETS_CACHE=str(cache), LORA_KATA_LANG="en", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_edited_helper_of_tokenize_quotes_takes_effect_on_the_next_run(tmp_path):
    copy_kata(tmp_path)
    for source in (REPO / "solutions").glob("*.py"):
        (tmp_path / "exercises" / source.name).write_text(source.read_text(encoding="utf-8"))
    (tmp_path / "exercises" / "tests" / "test_06_cache_probe.py").write_text(PROBE)
    cache = tmp_path / "hf-datasets-cache"  # shared by both runs, as ~/.cache would be
    _learner_tree(tmp_path, column="author")  # the mistake: the helper reads the wrong column
    first = _run(tmp_path, cache)
    assert first.returncode == 1, f"the wrong helper should fail:\n{first.stdout[-3000:]}"
    _learner_tree(tmp_path, column="quote")  # the fix, in the helper only
    second = _run(tmp_path, cache)
    assert second.returncode == 0, (
        "after fixing the helper the run should pass; it failed, so `map` served the result "
        f"cached by the first run:\n{second.stdout[-3000:]}"
    )
