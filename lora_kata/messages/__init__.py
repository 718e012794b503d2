"""The languages room: every word the kata writes, in English and 简体中文. The exercise tests'
messages (this module's `msg`), the runner's words (language.py's `t`, from runner.toml), the
choice of language (language.py) and pytest's own lines in Chinese (pytest_zh.py). It imports
no other room.

What the exercise tests say to the learner, as keyed templates, one catalogue per language.

A test never writes its assertion message as an English f-string; it asks for it by key:

    assert got == want, msg("02.scaling_alpha_over_r", alpha=alpha, r=r, want=want, got=got)

`msg` fills the template of the current language with the values (format specs and all:
`{got:.4g}` reads the same in both languages). The catalogue of a language is the folder
`lora_kata/messages/<lang>/`: `common.toml` for words several exercises share, `NN.toml` for
exercise NN (split by exercise so that two people can work on two exercises at once), and
`runner.toml` for the runner's own words (the report, the CLI; `t` below reads them). A
key `"NN.name"` is the entry `name` of `NN.toml`; `"common.name"` of `common.toml`, and so on.

Each `zh/NN.toml` also holds `[titles]`: the Chinese name of every test of exercise NN, which
the report shows in place of the test's (English) function name. English needs none.

The language is the run's: `--lang`, then LORA_KATA_LANG, then the locale (the plugin calls
`use_language` once it has read them). tests/test_messages.py checks that every key a test
asks for exists in both languages, with the same placeholders.
"""

from __future__ import annotations

import functools
import string
import tomllib
from pathlib import Path

from lora_kata.messages.language import colon, language

LANGUAGES = ("en", "zh")
HERE = Path(__file__).resolve().parent
TITLES = "titles"

_current: list[str] = []


def use_language(lang: str) -> None:
    """Messages from now on are in `lang` ("en" or "zh")."""
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {lang!r}")
    _current[:] = [lang]


def current_language() -> str:
    return _current[0] if _current else language()


@functools.cache
def catalogue(lang: str, part: str) -> dict:
    """The parsed `<lang>/<part>.toml` ({} when the file does not exist)."""
    path = HERE / lang / f"{part}.toml"
    if not path.is_file():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8"))


def template(key: str, lang: str) -> str:
    part, dot, name = key.partition(".")
    if not dot or not name:
        raise KeyError(f"message key {key!r} should be 'part.name' (part: NN, common, runner)")
    entry = catalogue(lang, part).get(name)
    if not isinstance(entry, str):
        raise KeyError(
            f"no message {key!r} in lora_kata/messages/{lang}/{part}.toml: add it there "
            "(and to the other languages' catalogues)"
        )
    return entry


def msg(key: str, /, **values: object) -> str:
    """The message `key` in the run's language, its placeholders filled from `values`."""
    return template(key, current_language()).format(**values)


def placeholders(text: str) -> set[str]:
    """The field names a template uses ("{got:.3g} of {want}" -> {"got", "want"})."""
    names = set()
    for _literal, field, _spec, _conversion in string.Formatter().parse(text):
        if field is not None:
            names.add(field.split(".")[0].split("[")[0])
    return names


def keys(lang: str) -> set[str]:
    """Every message key the catalogue of `lang` defines (titles excluded)."""
    found = set()
    for path in sorted((HERE / lang).glob("*.toml")):
        for name, value in catalogue(lang, path.stem).items():
            if isinstance(value, str):
                found.add(f"{path.stem}.{name}")
    return found


def title_of_test(exercise_id: str, test_name: str, lang: str) -> str | None:
    """The test's name in `lang` (None in English, or where the catalogue has none)."""
    if lang == "en":
        return None
    function = test_name.split("[", 1)[0]
    titles = catalogue(lang, exercise_id).get(TITLES, {})
    return titles.get(function) if isinstance(titles, dict) else None


def t(key: str, lang: str, **fields: object) -> str:
    """The runner's text `key` in `lang` (runner.toml), its placeholders filled from `fields`."""
    return template(f"runner.{key}", lang).format(**fields)


def label(key: str, lang: str) -> str:
    """A label and its colon: "Next: " in English, "下一步：" in Chinese."""
    return t(key, lang) + colon(lang)
