"""An exercise's old result counts only while the files it depends on are unchanged."""

from lora_kata.catalog import load_catalog
from lora_kata.runner import fingerprint
from tests.kata_harness import copy_solutions


def test_an_edit_changes_the_fingerprints_of_exactly_the_exercises_that_use_the_file(tmp_path):
    impl = copy_solutions(tmp_path)
    before = fingerprint.fingerprints(str(impl))
    with open(impl / "counting.py", "a", encoding="utf-8") as handle:
        handle.write("\n# an edit\n")
    after = fingerprint.fingerprints(str(impl))
    changed = {e for e in before if before[e] != after[e]}
    expected = set(fingerprint.affected_by({"counting"}, str(impl)))
    assert "03" in changed, "editing counting.py must invalidate exercise 03's old result"
    assert changed == expected, (
        f"an edit of counting.py changed the fingerprints of {sorted(changed)}; the exercises "
        f"that can be affected are {sorted(expected)}"
    )
    assert "01" not in changed, "01 (lora.py only) cannot be affected by counting.py"


def test_affected_follows_functions_imports_and_requires(tmp_path):
    impl = str(copy_solutions(tmp_path))
    affected = fingerprint.affected_by({"lora"}, impl)
    owners = [e.id for e in load_catalog() if "lora" in e.modules]
    assert set(owners) <= set(affected), f"lora.py's own exercises {owners} not in {affected}"
    for exercise in load_catalog():
        if set(exercise.requires) & set(affected):
            assert exercise.id in affected, (
                f"{exercise.id} requires {exercise.requires}, some of which lora.py affects, "
                f"so it must be rerun too; affected: {affected}"
            )
    importers = [
        m for m, uses in fingerprint.import_graph(tmp_path / "impl").items() if "lora" in uses
    ]
    for exercise in load_catalog():
        if set(exercise.modules) & set(importers):
            assert exercise.id in affected, f"{exercise.id} uses a module importing lora.py"


def test_a_file_no_exercise_knows_reruns_everything_only_when_deleted(tmp_path):
    impl = copy_solutions(tmp_path)
    (impl / "helpers.py").write_text("X = 1\n", encoding="utf-8")
    assert fingerprint.affected_by({"helpers"}, str(impl)) == [], "nothing imports helpers.py"
    every = [e.id for e in load_catalog()]
    assert fingerprint.affected_by({"gone"}, str(impl)) == every, (
        "a module that vanished may have been used by anything: rerun every exercise"
    )


def test_a_file_that_does_not_compile_is_listed_with_its_line(tmp_path):
    impl = copy_solutions(tmp_path)
    assert fingerprint.unparsable(str(impl)) == [], "the solutions compile"
    (impl / "helpers.py").write_text("x = 1\ndef oops(:\n", encoding="utf-8")
    problems = fingerprint.unparsable(str(impl))
    assert [(p["file"].rsplit("/", 1)[-1], p["line"]) for p in problems] == [("helpers.py", 2)], (
        f"expected helpers.py line 2 to be reported, found {problems}"
    )
    assert "SyntaxError" in problems[0]["message"], problems
