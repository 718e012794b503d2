"""What tests/test_glossary.py needs: the glossary's table, and the Chinese prose of every zh text.

lessons/glossary.md fixes one Chinese word per idea. This module reads that table (so a new row
extends the check), and cuts each Chinese text into (line number, prose) pairs with everything
that is not prose removed: fenced code blocks, `code spans`, URLs and link targets, quoted text
(“…” and "…": a library's message, a paper's title), {placeholders}, and identifiers (a word
glued to `_`, `.`, `(`, `-`, `=`, `/` is code, not English prose).

Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.kata_harness import REPO

GLOSSARY = REPO / "lessons" / "glossary.md"


@dataclass(frozen=True)
class Entry:
    """One row of the glossary: its English terms, its Chinese cell, and the Chinese words its
    note rules out (`不用“…”`)."""

    english: str
    chinese: str
    terms: tuple[str, ...]
    forbidden: tuple[str, ...]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _english_terms(cell: str, chinese: str) -> tuple[str, ...]:
    """`fine-tuning / fine-tune` -> ("fine-tuning", "fine-tune"); parentheses, code and symbols
    (`W0`, `ΔW`, `α/r`) dropped; a term the Chinese cell itself keeps (LoRA, token) is no check."""
    cell = re.sub(r"\([^)]*\)|`[^`]*`", " ", cell)
    terms = []
    for part in re.split(r"\s*[/,]\s*", cell):
        words = [w for w in part.split() if re.fullmatch(r"[A-Za-z][A-Za-z\-]*", w)]
        if words and words[0].lower() == "to":  # "to pad a row out": the verb is its own entry
            continue
        term = " ".join(words)
        if len(term) >= 3 and term.lower() not in chinese.lower():
            terms.append(term)
    return tuple(terms)


def _forbidden(note: str) -> tuple[str, ...]:
    """The quoted words after 不用 in a note: `不用“毕业项目”` -> ("毕业项目",)."""
    found = []
    for run in re.findall(r"不用((?:\s*[“\"][^”\"]+[”\"][、，]?)+)", note):
        found += re.findall(r"[“\"]([^”\"]+)[”\"]", run)
    return tuple(found)


@cache
def glossary() -> tuple[Entry, ...]:
    entries = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = _cells(line)
        if len(cells) < 2 or cells[0] == "English":
            continue
        english, chinese = cells[0], cells[1]
        note = cells[2] if len(cells) > 2 else ""
        entries.append(Entry(english, chinese, _english_terms(english, chinese), _forbidden(note)))
    return tuple(entries)


@cache
def allowed_phrases() -> tuple[str, ...]:
    """Latin words the glossary's Chinese column itself uses (`adapter 层`, `虚拟 token`,
    `前缀微调（Prefix Tuning）`): they are the translation, not an untranslated term."""
    phrases = set()
    for entry in glossary():
        for segment in re.split(r" / |、|；", entry.chinese):
            if re.search(r"[A-Za-z]{2}", segment):
                phrases.add(re.sub(r"（[^）]*）", "", segment).strip())
                phrases.update(re.findall(r"（([^）]*[A-Za-z]{2}[^）]*)）", segment))
    return tuple(sorted((p for p in phrases if len(p) >= 3), key=len, reverse=True))


# ------------------------------------------------------------------------- the texts


def zh_markdown_files() -> list[Path]:
    return [
        *sorted((REPO / "lessons" / "zh").glob("*.md")),
        REPO / "lessons" / "README.zh-CN.md",
        REPO / "README.zh-CN.md",
    ]


def zh_toml_files() -> list[Path]:
    return [
        *sorted((REPO / "lora_kata" / "catalog").glob("*.toml")),
        *sorted((REPO / "lora_kata" / "messages" / "zh").glob("*.toml")),
        REPO / "lora_kata" / "experiments" / "texts.toml",
    ]


def _strip_markup(text: str) -> str:
    """Everything on a line that is not prose, replaced by a space."""
    text = re.sub(r"<!--.*?-->", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "] ", text)
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"“[^”]*”|\"[^\"]*\"|「[^」]*」", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    for phrase in allowed_phrases():
        text = text.replace(phrase, " ")
    return text


def _blank_multiline_quotes(text: str) -> str:
    """A “quotation” that runs over a line break, blanked with its line breaks kept."""
    return re.sub(r"“[^”]*\n[^”]*”", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def markdown_prose(path: Path) -> list[tuple[int, str]]:
    lines, fenced = [], False
    text = _blank_multiline_quotes(path.read_text(encoding="utf-8"))
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, _strip_markup(line)))
    return lines


_KEY = re.compile(r'^\s*(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.\-]+)\s*=\s*')


def toml_prose(path: Path) -> list[tuple[int, str]]:
    """The lines of a file's Chinese values: every value in messages/zh/; elsewhere the values
    of `zh = …` keys and of the `[table.zh]` tables (whose keys are English source text)."""
    every_value = path.parent.name == "zh"
    lines, in_zh_table, open_string = [], False, False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if open_string:
            if '"""' in line:
                open_string = False
                line = line.split('"""')[0]
            lines.append((number, _strip_markup(line.replace('\\"', "“"))))
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            in_zh_table = stripped.rstrip("]").endswith(".zh") or stripped == "[titles]"
            continue
        key = _KEY.match(line)
        if not key:
            continue
        name = key.group(0).split("=")[0].strip()
        if not (every_value or in_zh_table or name == "zh"):
            continue
        value = line[key.end() :].strip()
        if value.startswith('"""'):
            value = value[3:]
            if '"""' in value:
                value = value.split('"""')[0]
            else:
                open_string = True
        elif value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        elif value.startswith("'") and value.endswith("'"):
            value = value[1:-1]
        lines.append((number, _strip_markup(value.replace('\\"', "“"))))
    return lines


def prose(path: Path) -> list[tuple[int, str]]:
    return toml_prose(path) if path.suffix == ".toml" else markdown_prose(path)


def term_pattern(term: str) -> re.Pattern:
    body = r"[\s\-]+".join(re.escape(word) for word in term.split())
    return re.compile(rf"(?<![A-Za-z0-9_./\-=]){body}(?:s|es)?(?![A-Za-z0-9_(./\-=])", re.I)


@cache
def _patterns() -> tuple[tuple[re.Pattern, str, str], ...]:
    return tuple(
        (term_pattern(term), term, entry.chinese) for entry in glossary() for term in entry.terms
    )


_CODE_NEIGHBOURS = set("()[]{}/=+*,;<>|^")


def _in_formula(text: str, match: re.Match) -> bool:
    """A word inside a formula or a signature (`loss / n`, `(batch, n, h)`, `s / warmup`) is a
    variable, not prose."""
    before = text[: match.start()].rstrip()[-1:]
    after = text[match.end() :].lstrip()[:1]
    return bool({before, after} & _CODE_NEIGHBOURS)


def untranslated(path: Path) -> list[str]:
    """`file:line: 'term' (glossary: 中文)` for each glossary term left in English in zh prose."""
    hits = []
    for number, text in prose(path):
        for pattern, term, chinese in _patterns():
            for match in pattern.finditer(text):
                if _in_formula(text, match):
                    continue
                hits.append(
                    f"{path.relative_to(REPO)}:{number}: {match.group(0)!r} "
                    f"(glossary: {term} → {chinese})"
                )
    return hits


def off_glossary_words(path: Path) -> list[str]:
    """`file:line: 'word' (glossary: …)` for each Chinese word a glossary note rules out."""
    hits = []
    for number, text in prose(path):
        for entry in glossary():
            for word in entry.forbidden:
                if word in text:
                    hits.append(
                        f"{path.relative_to(REPO)}:{number}: {word!r} "
                        f"(glossary: {entry.english} → {entry.chinese})"
                    )
    return hits
