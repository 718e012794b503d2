"""The progress report printed at the end of `pytest exercises/` (and by `lora-kata report`).

It is drawn from the same dict that is written to the progress file, so both always agree.
"""

from __future__ import annotations

import dataclasses

from lora_kata.catalog import by_id
from lora_kata.messages import label, t, title_of_test
from lora_kata.messages.language import display_width
from lora_kata.runner import fingerprint
from lora_kata.runner.next_step import next_step
from lora_kata.runner.progress import (
    BROKEN_STATUS,
    DONE,
    FAILING,
    NOT_RUN,
    NOT_STARTED,
    OWN_STUB,
    PARTIAL,
    TIMEOUT,
    WAITING_STATUS,
    WRONG,
    ExerciseResult,
    TestRecord,
    effective_status,
)

MARKS = {
    DONE: "✔",
    FAILING: "✘",
    NOT_STARTED: "·",
    BROKEN_STATUS: "!",
    WAITING_STATUS: "⧗",
    PARTIAL: "◐",
}
COLOURS = {
    DONE: "green",
    FAILING: "red",
    BROKEN_STATUS: "red",
    WAITING_STATUS: "yellow",
    PARTIAL: "yellow",
}
BAR_WIDTH = 30


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def refresh(data: dict, lang: str | None = None) -> dict:
    """The last run's progress data, corrected for the code as it is now.

    An exercise whose files changed since that run is shown as not run (changed), its old
    status no longer counts, files that no longer compile are listed, and the next step is
    worked out again: a report printed later (by `lora-kata report`, `hint` or `watch`) is
    never greener than the code."""
    impl = data.get("impl") or "exercises"
    try:
        current = fingerprint.fingerprints(impl)
        unparsable = fingerprint.unparsable(impl)
    except OSError:
        return data
    fields = {f.name for f in dataclasses.fields(ExerciseResult)}
    results = []
    for entry in data.get("exercises", []):
        result = ExerciseResult(**{k: v for k, v in entry.items() if k in fields})
        measured = effective_status(result.status, result.last_status) is not None
        if measured and result.fingerprint != current.get(result.id):
            result = ExerciseResult(result.id, result.title, NOT_RUN, changed=True)
        results.append(result)
    record_fields = {f.name for f in dataclasses.fields(TestRecord)}
    records = [
        TestRecord(**{k: v for k, v in r.items() if k in record_fields})
        for r in data.get("tests", [])
    ]
    fresh = dict(data)
    fresh["exercises"] = [dataclasses.asdict(r) for r in results]
    fresh["passed"] = sum(r.passed for r in results)
    fresh["total"] = sum(r.total for r in results)
    fresh["unparsable"] = unparsable
    fresh["next"] = next_step(results, records, lang or data.get("lang") or "en", unparsable)
    return fresh


# What a failed `assert` or pytest.fail says is the test's own message; anything else was raised
# by the code under test (or a library it called), so the report names the exception.
TEST_ERRORS = ("AssertionError", "Failed", None)


def shown_message(step: dict, lang: str) -> str:
    """The failure's message, with the exception's type when the code under test raised it."""
    message = step.get("message") or ""
    error_type = step.get("error_type")
    if step.get("why") != WRONG or error_type in TEST_ERRORS or message.startswith(error_type):
        return message
    return t("raised", lang, error_type=error_type, message=message)


def failure_heading(step: dict, lang: str) -> list[tuple[str, dict]]:
    """ " ✘ <test>" (where it failed), or under zh the test's Chinese title, then its name."""
    where = f" ({step['where']})" if step.get("where") else ""
    title = title_of_test(step["id"], step["test"], lang)
    if title is None:
        return [(f" ✘ {step['test']}{where}", {"red": True})]
    return [
        (f" ✘ {title}", {"red": True}),
        (f"   {label('test', lang)}{step['test']}{where}", {}),
    ]


def _timeout_words(step: dict, lang: str) -> str:
    seconds = step.get("seconds") or 0
    function = step.get("message") or step["file"]
    if step.get("first_test"):
        return t("timeout again", lang, function=function, seconds=seconds, test=step["first_test"])
    place = step.get("where") or step["file"]
    return t("timeout", lang, seconds=seconds, where=f"{function} ({place})")


def render_report(terminal, data: dict, lang: str) -> None:
    """Print the report with pytest's terminal writer (colours where the terminal has them)."""
    # Under zh pytest's own lines go through a translator (lora_kata.messages.pytest_zh); the report
    # is already in the learner's language and must reach the terminal untouched.
    writers = getattr(terminal, "lora_kata_untranslated", {})
    write_sep = writers.get("write_sep", terminal.write_sep)
    write_line = writers.get("write_line", terminal.write_line)
    write_sep("─", t("title", lang), bold=True)
    for line, markup in report_lines(data, lang):
        write_line(line, **markup)


def _partial_lines(data: dict, lang: str) -> list[tuple[str, dict]]:
    """What this run did not see: Ctrl-C, and exercises run only in part, with the command
    that gives a verdict."""
    out: list[tuple[str, dict]] = []
    partial = [e for e in data["exercises"] if e.get("partial") and e["status"] != DONE]
    if data.get("interrupted"):
        out.append((" " + t("interrupted", lang), {"yellow": True, "bold": True}))
    for e in partial:
        line = t("partial note", lang, id=e["id"], seen=e.get("seen", 0), total=e["total"])
        out.append((" " + line, {"yellow": True}))
    return out


def report_lines(data: dict, lang: str) -> list[tuple[str, dict]]:
    """The report as (text, markup) lines, from a progress dict (see lora_kata.runner.progress)."""
    out: list[tuple[str, dict]] = []
    exercises = data["exercises"]
    if data.get("impl", "exercises") != "exercises":
        out.append((" " + t("impl", lang, impl=data["impl"]), {"yellow": True}))
    title_width = max(display_width(by_id(e["id"]).title_in(lang)) for e in exercises) + 2
    for e in exercises:
        exercise = by_id(e["id"])
        status = e["status"]
        mark_status = status
        if status == WAITING_STATUS:
            words = t("waiting", lang, req=", ".join(e["waiting_for"]))
        elif status == NOT_RUN and e.get("last_status"):
            # Not run this time, and its code is unchanged since it was: that verdict holds.
            last = e["last_status"]
            mark_status = last
            words = t("waiting plain" if last == WAITING_STATUS else last, lang)
            words += " (" + t("earlier run", lang) + ")"
        elif status == NOT_RUN:
            words = t("not run", lang)
            if e.get("changed"):
                words += " (" + t("changed since", lang) + ")"
        else:
            words = t(status, lang)
        count = f"{e['passed']}/{e['total']}" if e["total"] else ""
        if status == BROKEN_STATUS and e.get("broken_at"):
            count = e["broken_at"]
        mark = MARKS.get(mark_status, "-")
        text = f" {mark} {e['id']}  {_pad(exercise.title_in(lang), title_width)}"
        text += f"{_pad(words, 24)} {count}"
        colour = COLOURS.get(mark_status)
        out.append((text.rstrip(), {colour: True} if colour else {}))
        for reason in e.get("skipped_here") or []:
            out.append((f"       {label('skipped', lang)}{reason}", {}))
    for problem in data.get("unparsable") or []:
        where = f"{problem['file']}:{problem['line']}" if problem.get("line") else problem["file"]
        out.append((f" ! {t('does not compile', lang, where=where)}", {"red": True}))
        out.append((f"       {problem['message']}", {}))
    passed, total = data["passed"], data["total"]
    done = sum(effective_status(e["status"], e.get("last_status")) == DONE for e in exercises)
    filled = round(BAR_WIDTH * passed / total) if total else 0
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    out.append(("", {}))
    out.append(
        (
            f" [{bar}] {passed}/{total} {t('tests', lang)} · "
            f"{done}/{len(exercises)} {t('exercises done', lang)}",
            {"bold": True},
        )
    )
    out.extend(_partial_lines(data, lang))
    step = data.get("next")
    if not step:
        return out
    out.append(("", {}))
    if step.get("unparsable"):
        out.append((" " + t("fix unparsable", lang, where=step["unparsable"]), {"red": True}))
        out.append(("   " + step["message"], {}))
        return out
    if step.get("all_done"):
        package = (
            data.get("impl") if data.get("impl") in ("exercises", "solutions") else "exercises"
        )
        out.append((" " + t("all done", lang, package=package), {"green": True, "bold": True}))
        return out
    out.append((f" {label('next', lang)}{step['id']} {step['title']}", {"bold": True}))
    out.append((f"   {label('edit', lang)}{step['file']} → {step['function']}", {}))
    out.append((f"   {label('lesson', lang)}{step['lesson']}", {}))
    if step.get("changed"):
        out.append(("", {}))
        out.append((" " + t("changed run", lang, id=step["id"]), {"yellow": True}))
        return out
    if step.get("why") == BROKEN_STATUS or step.get("why") == "broken":
        out.append(("", {}))
        out.append((" " + t("broken detail", lang, where=step.get("where")), {"red": True}))
        out.append(("   " + step["message"], {}))
        return out
    elif step.get("test"):
        out.append(("", {}))
        out.extend(failure_heading(step, lang))
        if step.get("why") == OWN_STUB:
            out.append(("   " + t("start", lang, file=step["file"], id=step["id"]), {}))
        elif step.get("why") == TIMEOUT:
            out.append(("   " + _timeout_words(step, lang), {}))
        else:
            out.extend(("   " + line, {}) for line in shown_message(step, lang).splitlines())
        if step.get("example"):
            out.append((f"   {label('example', lang)}{step['example']}", {}))
        if step.get("failing", 0) > 1:
            out.append(("   " + t("other failures", lang, n=step["failing"] - 1), {}))
        if step.get("deferred"):
            out.append(("   " + t("deferred", lang, n=step["deferred"]), {}))
    out.append(("", {}))
    for i, line in enumerate(step["hint"].strip().splitlines()):
        prefix = f" {label('hint', lang)}" if i == 0 else "   "
        out.append((prefix + line, {"cyan": True} if i == 0 else {}))
    out.append(
        (
            f"   {label('more hints', lang)}{step['more']}  ·  {label('details', lang)}"
            f"pytest exercises/ -k test_{step['id']} --tb=short",
            {},
        )
    )
    return out
