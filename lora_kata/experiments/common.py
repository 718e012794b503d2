"""What every experiment shares: the outcome, "finish NN first", the table and the figure."""

from __future__ import annotations

import os
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.catalog.impl import KataModuleBroken, implementation
from lora_kata.messages import label, t
from lora_kata.messages.language import display_width
from lora_kata.runner.progress import STUB_MESSAGE

OUT_DIR = REPO_ROOT / ".lora_kata" / "try"
TABLE_WORDS: dict[str, dict[str, str]] = tomllib.loads(
    (Path(__file__).with_name("texts.toml")).read_text(encoding="utf-8")
).get("table", {})


class FinishFirst(Exception):
    """A piece the experiment needs is still a stub: the learner must finish `exercise` first."""

    def __init__(self, exercise: str, function: str):
        self.exercise = exercise
        self.function = function
        super().__init__(f"finish {exercise} first ({function} is still a stub)")


@dataclass
class Outcome:
    """An experiment's result: a table (headers, rows), the PNG it saved, numbers for tests."""

    title: str
    headers: list[str]
    rows: list[list[object]]
    figure: Path | None = None
    numbers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def pieces(*modules: str):
    """Lazy handles on the implementation's modules (see lora_kata.catalog.impl)."""
    handles = tuple(implementation(m) for m in modules)
    return handles[0] if len(handles) == 1 else handles


def figure_path(name: str, out_dir: Path | None = None) -> Path:
    folder = Path(out_dir) if out_dir else OUT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def new_figure(ncols: int = 1, width: float = 5.5, height: float = 3.6):
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    def right(text: str, width: int) -> str:
        return " " * max(0, width - display_width(text)) + text

    text = [[cell(v) for v in row] for row in rows]
    widths = [
        max(display_width(h), *(display_width(r[i]) for r in text)) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(right(h, w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("─" * w for w in widths))
    lines += ["  ".join(right(c, w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


def _pattern(template: str) -> re.Pattern:
    """ "loss after {steps}" -> a regex that matches "loss after 40" and captures steps."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts)
    )
    return re.compile(regex + "$")


def translate_cell(text: str, lang: str) -> str | None:
    """A table header or text cell in `lang` (texts.toml's [table]); None if it has none."""
    if lang == "en":
        return text
    words = TABLE_WORDS.get(lang, {})
    if text in words:
        return words[text]
    for english, chinese in words.items():
        if "{" in english:
            match = _pattern(english).match(text)
            if match:
                return chinese.format(**match.groupdict())
    return None


def translate_table(
    headers: list[str], rows: list[list[object]], lang: str
) -> tuple[list[str], list[list[object]]]:
    """Headers and text cells in `lang` (numbers as they are; unknown text stays English)."""

    def one(value: object) -> object:
        if not isinstance(value, str) or not value:
            return value
        return translate_cell(value, lang) or value

    return [one(h) for h in headers], [[one(v) for v in row] for row in rows]


def run(experiment, out_dir: Path | None = None) -> Outcome:
    """Run one experiment on the selected implementation; FinishFirst if a piece is a stub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    # One thread: the experiments' matrices are small (hidden 32 to 1024), threads gain little
    # on them, and on a busy CPU OpenMP's waiting threads made `try 01` take 36 s instead of
    # 6 s (2 cores, load 2-4). The learner's own setting is put back afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        outcome = experiment.run(out_dir)
    except NotImplementedError as error:
        match = STUB_MESSAGE.match(str(error))
        if match:
            raise FinishFirst(match.group(1), match.group(2).strip()) from error
        raise
    finally:
        torch.set_num_threads(threads)
    outcome.seconds = time.perf_counter() - started
    return outcome


def run_and_print(
    experiment, lang: str = "en", out_dir: Path | None = None, echo: Callable = print
) -> int:
    """The CLI's `try NN`: run, print the table, where the picture is and what to look for."""
    echo(f"{experiment.id} — {experiment.title_in(lang)}\n")
    try:
        outcome = run(experiment, out_dir)
    except FinishFirst as missing:
        echo(t("try finish first", lang, id=missing.exercise, function=missing.function))
        echo(f"  pytest exercises/ -k test_{missing.exercise}")
        return 1
    except KataModuleBroken as broken:
        echo(str(broken))
        return 1
    echo(format_table(*translate_table(outcome.headers, outcome.rows, lang)))
    if outcome.figure is not None:
        try:
            shown = outcome.figure.relative_to(REPO_ROOT)
        except ValueError:
            shown = outcome.figure
        echo(f"\n{label('picture', lang)}{shown}")
    echo("\n" + experiment.look_for_in(lang))
    echo(t("took", lang, seconds=outcome.seconds))
    return 0
