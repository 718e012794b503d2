"""The report's "Next" block: which exercise to work on, where to edit, and the failure to read
first, with its hint. "All done" needs every exercise done on the current code and every file
compiling."""

from __future__ import annotations

from lora_kata import REPO_ROOT
from lora_kata.catalog import by_id
from lora_kata.runner.progress import (
    DEFERRED,
    FAILED,
    NOT_RUN,
    OWN_STUB,
    ExerciseResult,
    TestRecord,
    effective_status,
    next_exercise,
)


def _relative_lesson(exercise_id: str, lang: str) -> str:
    exercise = by_id(exercise_id)
    return f"lessons/{lang}/{exercise.id}-{exercise.slug}.md"


def leading_first(failures: list[TestRecord], lead: tuple[str, ...]) -> list[TestRecord]:
    """The failures in run order, except that a test the catalogue names in `lead` (one that
    names a root cause, where one mistake fails several tests) comes first, in `lead`'s order."""
    rank = {name: i for i, name in enumerate(lead)}

    def key(record: TestRecord) -> int:
        return rank.get(record.name.split("[", 1)[0], len(rank))

    return sorted(failures, key=key)


def next_step(
    results: list[ExerciseResult],
    records: list[TestRecord],
    lang: str,
    unparsable: list[dict] | None = None,
) -> dict | None:
    """The next exercise, where to edit, and the first failure with its hint.

    "All done" needs every exercise done on the current code and every file compiling."""
    target = next_exercise(results)
    if target is None and unparsable:
        first = unparsable[0]
        where = f"{first['file']}:{first['line']}" if first.get("line") else first["file"]
        return {"unparsable": where, "message": first["message"]}
    if target is None:
        return {"all_done": True} if results else None
    exercise = by_id(target.id)
    module, _, function = exercise.functions[0].partition(".")
    if len(exercise.modules) == 1 and len(exercise.functions) > 1:
        function = ", ".join(f.partition(".")[2] for f in exercise.functions)
    step: dict = {
        "id": exercise.id,
        "title": exercise.title_in(lang),
        "status": effective_status(target.status, target.last_status),
        "file": f"exercises/{module}.py",
        "function": function,
        "lesson": _relative_lesson(exercise.id, lang),
        "more": f"lora-kata hint {exercise.id} --level 2",
    }
    if target.status == NOT_RUN and target.changed:
        step["changed"] = True  # its code changed since its last run: run it, then judge
    failures = leading_first(
        [r for r in records if r.exercise == exercise.id and r.outcome == FAILED], exercise.lead
    )
    if not failures:
        step["hint"] = exercise.hint(1, lang)
        return step
    first = failures[0]
    if first.why == OWN_STUB and first.stub_function:
        # The stubs name their functions; the catalogue knows their modules. Every function of
        # this exercise still a stub in the first one's module is listed, in catalogue order.
        stubs = {r.stub_function for r in failures if r.why == OWN_STUB}
        for qualified in exercise.functions:
            mod, _, name = qualified.partition(".")
            if name == first.stub_function:
                names = [
                    f.partition(".")[2]
                    for f in exercise.functions
                    if f.partition(".")[0] == mod and f.partition(".")[2] in stubs
                ]
                step["file"], step["function"] = f"exercises/{mod}.py", ", ".join(names)
                break
    elif first.where and "/tests/" not in first.where:
        # The failure happened inside the learner's code: point at that function.
        enclosing = _enclosing_definition(first.where)
        if enclosing:
            step["file"], step["function"] = enclosing
    step["test"] = first.name
    step["where"] = first.where
    step["why"] = first.why
    step["message"] = first.message
    step["error_type"] = first.error_type
    step["example"] = first.example
    step["failing"] = len(failures)
    step["seconds"], step["first_test"] = first.seconds, first.first_test
    step["deferred"] = sum(1 for r in records if r.exercise == exercise.id and r.why == DEFERRED)
    if first.why == OWN_STUB:
        step["example"] = None  # any input fails a stub: the example says nothing
        step["hint"] = exercise.hint(1, lang)
    else:
        step["hint"] = exercise.hint_for_test(first.name, lang) or exercise.hint(1, lang)
    return step


def _enclosing_definition(where: str) -> tuple[str, str] | None:
    """(exercises/<module>.py, qualified name) of the def around `path:line`, if any."""
    from lora_kata.runner.splice import definition_at

    path, _, line = where.rpartition(":")
    try:
        source = (
            (REPO_ROOT / path).read_text(encoding="utf-8")
            if not path.startswith("/")
            else open(path, encoding="utf-8").read()
        )
    except OSError:
        return None
    name = definition_at(source, int(line)) if line.isdigit() else None
    if name is None:
        return None
    return f"exercises/{path.rsplit('/', 1)[-1]}", name
