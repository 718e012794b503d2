"""The exercise catalogue is sound, and it agrees with the stubs."""

import ast
import re

import pytest

from lora_kata.catalog import LANGS, all_exercises, load_catalog, validate
from tests.kata_harness import REPO

STUB = re.compile(r"Exercise (\d\d): (.+)")


def stub_raises() -> dict[str, set[str]]:
    """exercise id -> {"module.name"} for every `raise NotImplementedError("Exercise NN: name")`."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "exercises").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call)
                and getattr(node.exc.func, "id", None) == "NotImplementedError"
                and node.exc.args
                and isinstance(node.exc.args[0], ast.Constant)
            ):
                match = STUB.fullmatch(str(node.exc.args[0].value))
                assert match, (
                    f"{path.name}: stub message {node.exc.args[0].value!r} "
                    "is not 'Exercise NN: name'"
                )
                found.setdefault(match.group(1), set()).add(f"{path.stem}.{match.group(2)}")
    return found


def test_catalogue_is_valid():
    problems = validate()
    assert not problems, "\n".join(problems)


def test_the_exercise_ids_run_from_01_to_the_last_without_gaps():
    # The catalogue's files; a course (course.toml) may choose and order a subset of them.
    ids = [e.id for e in all_exercises()]
    assert ids == [f"{i:02d}" for i in range(1, len(ids) + 1)], ids
    course = [e.id for e in load_catalog()]
    assert course and set(course) <= set(ids) and len(set(course)) == len(course), course


def test_every_stub_is_catalogued_and_every_catalogued_function_is_a_stub():
    raises = stub_raises()
    for exercise in all_exercises():  # every stub here, whichever exercises the course picks
        assert raises.get(exercise.id, set()) == set(exercise.functions), (
            f"exercise {exercise.id}: stubs raise for {sorted(raises.get(exercise.id, set()))}, "
            f"the catalogue lists {sorted(exercise.functions)}"
        )
    unknown = set(raises) - {e.id for e in all_exercises()}
    assert not unknown, f"stubs name exercises that are not catalogued: {sorted(unknown)}"


@pytest.mark.parametrize("exercise", load_catalog(), ids=lambda e: e.id)
def test_each_stub_has_one_todo_per_function(exercise):
    todos = 0
    for module in exercise.modules:
        text = (REPO / "exercises" / f"{module}.py").read_text(encoding="utf-8")
        todos += len(re.findall(rf"# TODO\({exercise.id}\)", text))
    assert todos == len(exercise.functions), (
        f"exercise {exercise.id}: {todos} `# TODO({exercise.id})` lines for "
        f"{len(exercise.functions)} functions to edit (want exactly one each)"
    )


@pytest.mark.parametrize("exercise", load_catalog(), ids=lambda e: e.id)
def test_lessons_have_the_same_sections_in_both_languages(exercise):
    counts = {}
    for lang in LANGS:
        text = exercise.lesson(lang).read_text(encoding="utf-8")
        counts[lang] = len(re.findall(r"^## ", text, flags=re.M))
        assert len(text.strip().splitlines()) >= 20, f"{exercise.lesson(lang)} is too short"
    assert counts["en"] == counts["zh"] > 0, f"lesson {exercise.id}: sections per language {counts}"


@pytest.mark.parametrize("exercise", load_catalog(), ids=lambda e: e.id)
def test_chinese_texts_are_chinese(exercise):
    cjk = re.compile(r"[\u4e00-\u9fff]")
    assert cjk.search(exercise.title["zh"]), f"{exercise.id}: zh title has no Chinese"
    for tier in exercise.hints[:2]:  # tier 3 is nearly code, and may be code only
        assert cjk.search(tier["zh"]), f"{exercise.id}: a zh hint has no Chinese: {tier['zh']!r}"
    for name, texts in exercise.test_hints.items():
        assert cjk.search(texts["zh"]), f"{exercise.id}: zh hint for {name} has no Chinese"
