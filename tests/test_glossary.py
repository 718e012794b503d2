"""The glossary is enforced: one Chinese word per idea, in every Chinese text a learner reads.

lessons/glossary.md is the source. For each of its rows, the English terms must not stand
untranslated in Chinese prose (code, URLs, identifiers, {placeholders} and quoted text are not
prose), and the Chinese words its notes rule out (`不用“…”`) must not appear. A new row extends
both checks. Each failure names the file, the line and the term.

The texts: lessons/zh/*.md, lessons/README.zh-CN.md, README.zh-CN.md, the zh fields of
lora_kata/catalog/*.toml and lora_kata/experiments/texts.toml, and lora_kata/messages/zh/*.toml.
"""

from __future__ import annotations

import pytest

from tests.glossary_support import (
    REPO,
    allowed_phrases,
    glossary,
    markdown_prose,
    off_glossary_words,
    term_pattern,
    toml_prose,
    untranslated,
    zh_markdown_files,
    zh_toml_files,
)

FILES = [*zh_markdown_files(), *zh_toml_files()]
IDS = [str(path.relative_to(REPO)) for path in FILES]


def test_the_glossary_table_reads_as_terms_with_one_chinese_word_each():
    entries = glossary()
    by_english = {entry.english: entry for entry in entries}
    assert len(entries) >= 60, f"expected the glossary's ~70 rows, read {len(entries)}"
    assert by_english["capstone"].chinese == "综合练习", by_english["capstone"]
    assert by_english["capstone"].terms == ("capstone",), by_english["capstone"]
    assert "毕业项目" in by_english["capstone"].forbidden, by_english["capstone"]
    assert by_english["batch / batch size"].terms == ("batch", "batch size")
    assert by_english["lesson"].chinese == "课"
    # a term the Chinese column keeps as it is (LoRA, token, dropout) is not checked
    assert by_english["token"].terms == () and by_english["dropout"].terms == ()
    assert "adapter 层" in allowed_phrases() and "Prompt Tuning" in allowed_phrases()


def test_the_prose_filter_drops_code_quotes_links_and_identifiers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "一个 batch 里\n"
        '`batch` 和 “batch” 和 "batch" 和 [链接](https://x.org/batch) 和 micro-batch_size\n'
        "```\nbatch\n```\n",
        encoding="utf-8",
    )
    lines = dict(markdown_prose(page))
    batch = term_pattern("batch")
    assert batch.search(lines[1]) and not batch.search(lines[2]), lines
    assert 4 not in lines
    table = tmp_path / "zh" / "00.toml"
    table.parent.mkdir()
    table.write_text('key = "在 {batch} 上"\nother = """第一行\n一个 batch"""\n', encoding="utf-8")
    assert [n for n, text in toml_prose(table) if batch.search(text)] == [3]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_glossary_term_is_left_in_english_in_chinese_prose(path):
    hits = untranslated(path)
    assert not hits, (
        "English terms that lessons/glossary.md translates, left untranslated in Chinese prose "
        "(use the glossary's word, or put code in `backticks`):\n  " + "\n  ".join(hits)
    )


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_each_concept_has_the_glossarys_one_chinese_word(path):
    hits = off_glossary_words(path)
    assert not hits, (
        "Chinese words lessons/glossary.md rules out (its notes say 不用“…”):\n  "
        + "\n  ".join(hits)
    )
