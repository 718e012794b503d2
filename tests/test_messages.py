"""The exercise tests speak the learner's language: every message is a keyed template.

Checked statically (nothing imported or run): the English and Chinese catalogues hold the same
keys with the same placeholders; every `msg("...")` call in the exercise tests (and the helpers
they use) names a key that exists and passes exactly the template's values; no assert, fail or
skip message is written as a literal; no English prose hides in a string literal of a test; the
Chinese templates and titles hold no English sentence; every test has a Chinese title.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lora_kata import messages
from lora_kata.messages import LANGUAGES, TITLES, catalogue, keys, placeholders
from tests.english_support import english_sentences

ROOT = Path(__file__).resolve().parent.parent
EXERCISE_TESTS = sorted((ROOT / "exercises" / "tests").glob("test_*.py"))
# The helpers the exercise tests call; their messages reach the report too.
HELPERS = sorted((ROOT / "lora_kata").glob("testing*.py"))
MESSAGE_FILES = EXERCISE_TESTS + HELPERS
PARTS = sorted({p.stem for lang in LANGUAGES for p in (messages.HERE / lang).glob("*.toml")})


def test_the_english_detector_finds_prose_and_lets_code_through():
    found = english_sentences("lora_A should be zero now")
    assert found == ["should be zero now"], f"expected the English run, found {found}"
    found = english_sentences("lora_A 的形状应为 (r, in_features)，得到 {got}：nn.Linear(k, d)")
    assert found == [], f"code and placeholders are not prose, found {found}"
    found = english_sentences("it raised KeyError 而不是 ValueError")
    assert found == ["it raised KeyError"], f"expected the English run, found {found}"


def msg_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "msg"
    ]


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def literal_message_problems(tree: ast.AST) -> list[tuple[int, str]]:
    """Messages written as literals: assert messages, pytest.fail/skip/xfail reasons,
    AssertionError(...) and must_raise(...)'s message."""
    problems = []

    def check(node: ast.AST | None, where: int, what: str) -> None:
        if node is None:
            return
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name):
                if inner.func.id == "msg":
                    return
            if isinstance(inner, ast.JoinedStr) or (
                isinstance(inner, ast.Constant) and isinstance(inner.value, str)
            ):
                problems.append((where, what))
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            check(node.msg, node.lineno, "assert message")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("pytest.fail", "pytest.skip", "pytest.xfail", "AssertionError"):
                check(node.args[0] if node.args else None, node.lineno, f"{func}(...)")
            elif func == "must_raise" and len(node.args) > 1:
                check(node.args[1], node.lineno, "must_raise message")
            elif func == "pytest.raises":
                problems.append((node.lineno, "pytest.raises (use must_raise with a msg)"))
    return sorted(problems)


def prose_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals holding English prose, outside docstrings, msg keys, and module-level
    UPPER_CASE constants (test data such as quotes or a prompt)."""
    skip = docstring_nodes(tree)
    for call in msg_calls(tree):
        if call.args:
            skip.add(id(call.args[0]))
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
                skip.update(id(inner) for inner in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if english_sentences(node.value):
                found.append((node.lineno, node.value[:60]))
    return sorted(found)


@pytest.mark.parametrize("part", PARTS)
def test_both_languages_hold_the_same_keys_with_the_same_placeholders(part):
    en, zh = catalogue("en", part), catalogue("zh", part)
    en_keys = {k for k, v in en.items() if isinstance(v, str)}
    zh_keys = {k for k, v in zh.items() if isinstance(v, str)}
    assert en_keys == zh_keys, (
        f"{part}.toml: keys only in en: {sorted(en_keys - zh_keys)}, "
        f"only in zh: {sorted(zh_keys - en_keys)}"
    )
    differ = {
        k: (sorted(placeholders(en[k])), sorted(placeholders(zh[k])))
        for k in en_keys
        if placeholders(en[k]) != placeholders(zh[k])
    }
    assert not differ, f"{part}.toml: placeholders differ between en and zh: {differ}"


@pytest.mark.parametrize("part", PARTS)
def test_chinese_templates_and_titles_hold_no_english_sentence(part):
    zh = catalogue("zh", part)
    texts = {k: v for k, v in zh.items() if isinstance(v, str)}
    texts.update({f"titles.{k}": v for k, v in zh.get(TITLES, {}).items()})
    english = {k: english_sentences(v) for k, v in texts.items() if english_sentences(v)}
    assert not english, f"zh/{part}.toml: English left in {english}"


def chinese_texts_of_the_catalogue_and_experiments() -> dict[str, str]:
    """Every Chinese text the report, `hint` and `try` show besides the tests' messages."""
    import tomllib

    from lora_kata.catalog import load_catalog

    texts = {}
    for exercise in load_catalog():
        texts[f"{exercise.id} title"] = exercise.title_in("zh")
        for level in range(1, len(exercise.hints) + 1):
            texts[f"{exercise.id} hint {level}"] = exercise.hint(level, "zh")
        for test, hint in exercise.test_hints.items():
            texts[f"{exercise.id} {test}"] = hint["zh"]
    path = ROOT / "lora_kata" / "experiments" / "texts.toml"
    experiments = tomllib.loads(path.read_text(encoding="utf-8"))
    for key, entry in experiments.items():
        if key == "table":
            texts.update({f"table {k}": v for k, v in entry["zh"].items()})
        else:
            texts.update({f"try {key} {part}": entry[part]["zh"] for part in ("title", "look_for")})
    return texts


def test_chinese_hints_titles_and_experiment_texts_hold_no_english_sentence():
    english = {
        k: english_sentences(v)
        for k, v in chinese_texts_of_the_catalogue_and_experiments().items()
        if english_sentences(v)
    }
    assert not english, f"English in the Chinese hints, titles or experiment texts: {english}"


@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda p: p.name)
def test_every_message_key_exists_with_the_values_its_template_needs(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for call in msg_calls(tree):
        if not call.args or not isinstance(call.args[0], ast.Constant):
            problems.append(f"{path.name}:{call.lineno}: the key must be a literal string")
            continue
        key = call.args[0].value
        for lang in LANGUAGES:
            try:
                needed = placeholders(messages.template(key, lang))
            except KeyError as error:
                problems.append(f"{path.name}:{call.lineno}: {error.args[0]}")
                continue
            if any(k.arg is None for k in call.keywords):
                continue  # **values: checked when it runs
            given = {k.arg for k in call.keywords}
            if given != needed:
                problems.append(
                    f"{path.name}:{call.lineno}: {key} ({lang}) needs {sorted(needed)}, "
                    f"given {sorted(given)}"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda p: p.name)
def test_no_message_is_a_literal_and_no_english_prose_hides_in_a_literal(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    literal = literal_message_problems(tree)
    prose = prose_literals(tree)
    listing = [f"  {path.name}:{line}: {what}" for line, what in literal]
    listing += [f"  {path.name}:{line}: English prose {text!r}" for line, text in prose]
    assert not listing, (
        "write messages as msg('NN.key', ...) with the text in lora_kata/messages/{en,zh}/; "
        "English test data belongs in a module-level UPPER_CASE constant:\n" + "\n".join(listing)
    )


def test_the_checks_catch_a_literal_message_and_accept_a_keyed_one():
    source = (
        "def test_x():\n"
        "    assert 1, 'the value should be one'\n"
        "    assert 2, msg('01.key', v=2)\n"
        "    pytest.fail(f'raised {3}')\n"
        "    with pytest.raises(ValueError):\n"
        "        pass\n"
    )
    found = [line for line, _ in literal_message_problems(ast.parse(source))]
    assert found == [2, 4, 5], f"expected lines 2, 4 and 5 flagged, found {found}"


@pytest.mark.parametrize("path", EXERCISE_TESTS, ids=lambda p: p.name)
def test_every_exercise_test_has_a_chinese_title(path):
    exercise_id = path.name.split("_")[1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tests = {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }
    titles = catalogue("zh", exercise_id).get(TITLES, {})
    assert tests <= set(titles) and set(titles) <= tests, (
        f"zh/{exercise_id}.toml [titles]: missing {sorted(tests - set(titles))}, "
        f"stale {sorted(set(titles) - tests)}"
    )


def test_message_keys_exist_in_every_language():
    en, zh = keys("en"), keys("zh")
    assert en == zh, f"only in en: {sorted(en - zh)}; only in zh: {sorted(zh - en)}"
