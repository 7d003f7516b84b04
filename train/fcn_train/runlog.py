"""The run's record: a CSV of training loss and validation scores, and a PNG of the curves.

The CSV is rewritten whole and atomically at every log point (it is small), so a crash never
leaves a torn line; on ``--resume`` the rows past the checkpoint's iteration are dropped, so the
log of a resumed run reads as if it had never stopped.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from fcn_deploy._io import atomic_path, atomic_write_text

__all__ = ["COLUMNS", "RunLog", "plot_curves"]

SCORES = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")
COLUMNS = (
    "iteration",
    "elapsed_s",
    "lr",
    "loss",
    "images_per_s",
    *(f"val_{s}" for s in SCORES),
)


class RunLog:
    """Rows of ``COLUMNS`` kept in memory and mirrored to ``path``."""

    def __init__(self, path: Path, resume_at: int | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, str]] = []
        if resume_at is not None and path.is_file():
            with path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= resume_at]

    def add(self, iteration: int, **values: float) -> None:
        row = {"iteration": str(iteration)}
        row.update({k: f"{v:.6g}" for k, v in values.items()})
        self.rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, COLUMNS, restval="", extrasaction="raise")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def plot_curves(rows: list[dict[str, str]], path: Path, title: str = "") -> None:
    """Training loss (left) and validation scores (right) against iterations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["iteration"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        pts = [(i, v) for i, v in pts if math.isfinite(v)]
        return [i for i, _ in pts], [v for _, v in pts]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(*series("loss"), lw=1)
    left.set(xlabel="iteration", ylabel="training loss", yscale="log", title="loss")
    for score in SCORES:
        x, y = series(f"val_{score}")
        if x:
            right.plot(x, y, marker="o", ms=3, label=score.replace("_", " "))
    right.set(xlabel="iteration", ylabel="score", ylim=(0, 1), title="validation")
    right.grid(alpha=0.3)
    if right.lines:
        right.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
