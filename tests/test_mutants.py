"""Common mistakes (mutants of the solutions) are caught, each by the tests that blame it.

Each mutant in tests/mutants/NN.toml lists in `fails` the tests of its exercise it is expected
to fail. A test outside that list failing means a test blames the wrong thing (say, a dropout
test failing when the scaling is missing): fix that test (compute its expectation from the
learner's own other pieces), not the list. The runs are without -x, so every test speaks.
"""

import ast

import pytest

from lora_kata.catalog import by_id
from tests.kata_harness import (
    exercise_test_path,
    load_mutants,
    normalise,
    run_kata_warm,
    stop_warm,
)
from tests.kata_harness import (
    test_function_name as function_of_test,
)

MUTANTS = load_mutants()


@pytest.fixture(scope="module", autouse=True)
def _warm_runs():
    yield
    stop_warm()


def exercise_test_names(exercise_id: str) -> set[str]:
    tree = ast.parse(by_id(exercise_id).test_file.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_the_catalogue_of_mistakes_is_not_empty_and_ids_are_unique():
    ids = [m.id for m in MUTANTS]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert ids and not duplicates, f"mutant ids must be unique and present; repeated: {duplicates}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.exercise}-{m.id}")
def test_every_mutant_lists_existing_tests_of_its_exercise(mutant):
    known = exercise_test_names(mutant.exercise)
    unknown = sorted(set(mutant.fails) - known)
    assert mutant.fails and not unknown, (
        f"mutant {mutant.id} must list in `fails` the tests of exercise {mutant.exercise} it "
        f"fails (function names); "
        + (f"these are not tests there: {unknown}" if unknown else "the list is empty")
    )


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.exercise}-{m.id}")
def test_mutant_is_caught_by_its_own_tests_and_the_report_names_the_mistake(mutant, tmp_path):
    impl = mutant.apply(tmp_path)
    run = run_kata_warm(impl, exercise_test_path(mutant.exercise), "--run-waiting")
    failed = [t for t in run.tests(mutant.exercise) if t["outcome"] == "failed"]
    assert failed, f"mutant {mutant.id} passed every test of {mutant.exercise}\n{run.explain()}"
    # A timeout blames nothing (a busy machine can cause it), so it is not counted here.
    outside = [
        t
        for t in failed
        if function_of_test(t["name"]) not in mutant.fails and t.get("why") != "timeout"
    ]
    listing = "\n".join(f"  {t['name']}: {t['message'][:400]}" for t in outside)
    assert not outside, (
        f"mutant {mutant.id} also fails tests outside its `fails` list {list(mutant.fails)}; "
        "each blames another mistake (make the test compute its expectation from the "
        f"learner's other pieces, so that it fails only for its own property):\n{listing}"
    )
    assert normalise(mutant.expect) in normalise(run.output), (
        f"mutant {mutant.id} is caught by {failed[0]['name']}, but the report does not say "
        f"{mutant.expect!r}:\n{run.explain()}"
    )
