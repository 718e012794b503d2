"""Common mistakes (mutants of the solutions) are caught, and the report names them."""

import pytest

from tests.kata_harness import exercise_test_path, load_mutants, normalise, run_kata

MUTANTS = load_mutants()


def test_the_catalogue_of_mistakes_is_not_empty_and_ids_are_unique():
    ids = [m.id for m in MUTANTS]
    assert ids and len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.exercise}-{m.id}")
def test_mutant_is_caught_and_the_report_names_the_mistake(mutant, tmp_path):
    impl = mutant.apply(tmp_path)
    run = run_kata(impl, exercise_test_path(mutant.exercise), "--run-waiting", "-x")
    failed = [t for t in run.tests(mutant.exercise) if t["outcome"] == "failed"]
    assert failed, f"mutant {mutant.id} passed every test of {mutant.exercise}\n{run.explain()}"
    assert normalise(mutant.expect) in normalise(run.output), (
        f"mutant {mutant.id} is caught by {failed[0]['name']}, but the report does not say "
        f"{mutant.expect!r}:\n{run.explain()}"
    )
