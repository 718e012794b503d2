"""The catalogue room: what the kata is. The exercises' metadata and hints (`NN_*.toml` beside
this module, read by the functions below) and the implementation switch (impl.py: which package
the tests import, exercises/, solutions/ or a path). Imports only `lora_kata` and messages/.

The exercise catalogue: one TOML file per exercise in `lora_kata/catalog/`.

Each file declares the exercise's order (`id`), title, the functions the learner edits
(`functions`, qualified by module: "lora.LoRALinear.forward"), its prerequisites (`requires`),
the per-test timeout, three tiers of hints (a nudge, the concept, the steps and API names) and
optional hints for specific tests (`[tests.<test name>]`), all in English and 简体中文.
The lesson and the test file are found by convention from `id` and `slug`.
`validate()` is what the quality suite runs over it. A course file (course.py) chooses
which exercises a class does, in which order, and overrides hints: `load_catalog()` is the
course, `all_exercises()` every catalogued exercise.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog.course import CatalogueError, Course, line_of, read_course, toml_error

CATALOG_DIR = Path(__file__).resolve().parent  # the NN_*.toml files beside this module
LANGS = ("en", "zh")
HINT_TIERS = 3


@dataclass(frozen=True)
class Exercise:
    id: str
    slug: str
    title: dict[str, str]
    functions: tuple[str, ...]
    requires: tuple[str, ...] = ()
    timeout: float = 60.0
    hints: tuple[dict[str, str], ...] = ()
    test_hints: dict[str, dict[str, str]] = field(default_factory=dict)
    # Tests that name a root cause: when one mistake fails several tests, the report leads
    # with the first of these that failed (e.g. "first fit" before "positions restart").
    lead: tuple[str, ...] = ()

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules the learner edits for this exercise, in the order first named."""
        return tuple(dict.fromkeys(f.split(".", 1)[0] for f in self.functions))

    @property
    def test_file(self) -> Path:
        return (
            REPO_ROOT / "exercises" / "tests" / f"test_{self.id}_{self.slug.replace('-', '_')}.py"
        )

    def lesson(self, lang: str = "en") -> Path:
        return REPO_ROOT / "lessons" / lang / f"{self.id}-{self.slug}.md"

    def title_in(self, lang: str) -> str:
        return self.title.get(lang) or self.title["en"]

    def hint(self, level: int, lang: str) -> str:
        tier = self.hints[max(1, min(level, len(self.hints))) - 1]
        return tier.get(lang) or tier["en"]

    def hint_for_test(self, test_name: str, lang: str) -> str | None:
        base = test_name.split("[", 1)[0]
        entry = self.test_hints.get(base)
        if entry is None:
            return None
        return entry.get(lang) or entry["en"]


def _parse(path: Path) -> Exercise:
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise toml_error(path, error, text) from None
    try:
        return _exercise(data)
    except (KeyError, TypeError, ValueError) as error:
        raise CatalogueError(f"{path}: missing or malformed field: {error}") from None


def _exercise(data: dict) -> Exercise:
    return Exercise(
        id=str(data["id"]),
        slug=str(data["slug"]),
        title=dict(data["title"]),
        functions=tuple(data["functions"]),
        requires=tuple(data.get("requires", ())),
        timeout=float(data.get("timeout", 60)),
        hints=tuple(dict(h) for h in data.get("hints", ())),
        test_hints={k: dict(v) for k, v in data.get("tests", {}).items()},
        lead=tuple(data.get("lead", ())),
    )


@cache
def all_exercises() -> tuple[Exercise, ...]:
    """Every catalogued exercise (NN_*.toml), in id order, whatever the course."""
    return tuple(sorted((_parse(p) for p in CATALOG_DIR.glob("*.toml")), key=lambda e: e.id))


@cache
def load_catalog() -> tuple[Exercise, ...]:
    """The course's exercises, in the course's order, with its hints (course.py); every
    catalogued exercise in id order when there is no course file."""
    return _apply(read_course(), all_exercises())


def _apply(course: Course, exercises: tuple[Exercise, ...]) -> tuple[Exercise, ...]:
    known = {e.id: e for e in exercises}
    text = course.path.read_text(encoding="utf-8") if course.path else ""

    def fail(why: str, *needles: str) -> CatalogueError:
        return CatalogueError(f"{course.path}:{line_of(text, *needles)}: {why}")

    chosen: list[Exercise] = []
    for exercise_id in course.exercises or [e.id for e in exercises]:
        if exercise_id not in known:
            raise fail(
                f"exercise {exercise_id} is not catalogued ({', '.join(known)})", "exercises"
            )
        missing = [r for r in known[exercise_id].requires if r not in {e.id for e in chosen}]
        if missing:
            raise fail(
                f"exercise {exercise_id} requires {', '.join(missing)}, which the course must "
                "list before it",
                "exercises",
            )
        chosen.append(known[exercise_id])
    for exercise_id in {*course.hints, *course.test_hints}:
        if exercise_id not in {e.id for e in chosen}:
            raise fail(f"hints for exercise {exercise_id}, which the course leaves out", "hints")
    for index, exercise in enumerate(chosen):
        hints = [dict(tier) for tier in exercise.hints]
        for tier, texts in course.hints.get(exercise.id, {}).items():
            hints[tier - 1] = texts
        test_hints = {**exercise.test_hints}
        for test, texts in course.test_hints.get(exercise.id, {}).items():
            if not exercise.test_file.is_file() or test not in _test_names(exercise.test_file):
                raise fail(f"hints for {test}, which is no test of exercise {exercise.id}", test)
            test_hints[test] = texts
        chosen[index] = replace(exercise, hints=tuple(hints), test_hints=test_hints)
    return tuple(chosen)


def by_id(exercise_id: str) -> Exercise:
    for exercise in load_catalog():
        if exercise.id == exercise_id.zfill(2):
            return exercise
    known = ", ".join(e.id for e in load_catalog())
    raise KeyError(f"no exercise {exercise_id!r} in this course; the exercises are {known}")


def exercise_of_test_file(path: str | Path) -> str | None:
    match = re.match(r"test_(\d\d)_", Path(path).name)
    return match.group(1) if match else None


def _defined_names(source: str) -> set[str]:
    """Qualified names of the top-level functions, classes and methods in `source`."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(f"{node.name}.{item.name}")
    return names


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def validate() -> list[str]:
    """Every problem with the catalogue, as sentences; empty when it is sound."""
    problems: list[str] = []
    exercises = all_exercises()
    try:
        load_catalog()  # the course file (course.py): errors name the file and line
    except CatalogueError as error:
        problems.append(str(error))
    ids = [e.id for e in exercises]
    expected = [f"{i:02d}" for i in range(1, len(ids) + 1)]
    if ids != expected:
        problems.append(f"exercise ids must run 01, 02, ... without gaps; found {ids}")
    for e in exercises:
        where = f"catalog {e.id}-{e.slug}"
        for lang in LANGS:
            if not e.title.get(lang):
                problems.append(f"{where}: no title in {lang}")
            if not e.lesson(lang).is_file():
                problems.append(f"{where}: lesson {e.lesson(lang).relative_to(REPO_ROOT)} missing")
        if len(e.hints) != HINT_TIERS:
            problems.append(f"{where}: needs {HINT_TIERS} hint tiers, has {len(e.hints)}")
        for i, tier in enumerate(e.hints, 1):
            for lang in LANGS:
                if not tier.get(lang, "").strip():
                    problems.append(f"{where}: hint tier {i} has no {lang} text")
        for req in e.requires:
            if req not in ids or req >= e.id:
                problems.append(f"{where}: requires {req!r}, which is not an earlier exercise")
        if not e.functions:
            problems.append(f"{where}: names no functions to edit")
        for qualified in e.functions:
            module, _, name = qualified.partition(".")
            for package in ("exercises", "solutions"):
                path = REPO_ROOT / package / f"{module}.py"
                if not path.is_file():
                    problems.append(f"{where}: {package}/{module}.py does not exist")
                elif name not in _defined_names(path.read_text(encoding="utf-8")):
                    problems.append(f"{where}: {package}/{module}.py defines no {name}")
        if not e.test_file.is_file():
            problems.append(f"{where}: test file {e.test_file.relative_to(REPO_ROOT)} missing")
        else:
            defined = _test_names(e.test_file)
            for test_name, texts in e.test_hints.items():
                if test_name not in defined:
                    problems.append(f"{where}: hint for unknown test {test_name}")
                for lang in LANGS:
                    if not texts.get(lang, "").strip():
                        problems.append(f"{where}: hint for {test_name} has no {lang} text")
            for test_name in e.lead:
                if test_name not in defined:
                    problems.append(f"{where}: lead names unknown test {test_name}")
        if e.timeout <= 0:
            problems.append(f"{where}: timeout must be positive")
    test_files = sorted((REPO_ROOT / "exercises" / "tests").glob("test_*.py"))
    known = {e.test_file for e in exercises}
    for path in test_files:
        if path not in known:
            problems.append(f"{path.relative_to(REPO_ROOT)} belongs to no catalogued exercise")
    return problems
