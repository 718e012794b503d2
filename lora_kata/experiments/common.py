"""What every experiment shares: the outcome, "finish NN first", the table and the figure."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lora_kata import REPO_ROOT
from lora_kata.impl import KataModuleBroken, implementation
from lora_kata.progress import STUB_MESSAGE

OUT_DIR = REPO_ROOT / ".lora_kata" / "try"


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
    """Lazy handles on the implementation's modules (see lora_kata.impl)."""
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

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("─" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


def run(experiment, out_dir: Path | None = None) -> Outcome:
    """Run one experiment on the selected implementation; FinishFirst if a piece is a stub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    try:
        outcome = experiment.run(out_dir)
    except NotImplementedError as error:
        match = STUB_MESSAGE.match(str(error))
        if match:
            raise FinishFirst(match.group(1), match.group(2).strip()) from error
        raise
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
        if lang == "zh":
            echo(f"请先完成练习 {missing.exercise}：{missing.function} 还是桩代码。")
        else:
            echo(f"finish {missing.exercise} first: {missing.function} is still a stub.")
        echo(f"  pytest exercises/ -k test_{missing.exercise}")
        return 1
    except KataModuleBroken as broken:
        echo(str(broken))
        return 1
    echo(format_table(outcome.headers, outcome.rows))
    if outcome.figure is not None:
        try:
            shown = outcome.figure.relative_to(REPO_ROOT)
        except ValueError:
            shown = outcome.figure
        label = "图" if lang == "zh" else "picture"
        echo(f"\n{label}: {shown}")
    echo("\n" + experiment.look_for_in(lang))
    done = "用时" if lang == "zh" else "took"
    echo(f"({done} {outcome.seconds:.1f} s)")
    return 0
