"""What rank 0 writes besides the adapter: the loss plot and metrics.json.

Both are written atomically (a temporary file in the same folder, then os.replace), so a reader
never sees half a file, and with the mode the umask allows (0o666 & ~umask), like open().
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> Path:
    """Replace `path` with `data` in one step; the file mode honours the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # os.open applies the umask to 0o666 (tempfile.mkstemp would force 0o600).
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # on disk before it takes the real name
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def write_metrics(metrics: dict, path: Path) -> Path:
    return write_atomically(path, (json.dumps(metrics, indent=2) + "\n").encode("utf-8"))


def running_mean(values: list[float], window: int) -> list[float]:
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def plot_losses(losses: list[float], path: Path, title: str) -> Path:
    """The loss curve as a PNG (matplotlib's Agg canvas: no display, no global pyplot state)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = range(1, len(losses) + 1)
    axes.plot(steps, losses, color="0.6", linewidth=1, label="loss per step")
    window = max(1, min(10, len(losses) // 5))
    axes.plot(
        steps,
        running_mean(losses, window),
        color="C0",
        linewidth=2,
        label=f"running mean ({window} steps)",
    )
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("mean cross-entropy per token")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return write_atomically(Path(path), png.getvalue())
