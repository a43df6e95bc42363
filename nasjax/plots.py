"""PNG figures of a search, drawn with matplotlib's Agg backend (no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def plot_search_curve(
    records: Sequence[dict],
    path: str | os.PathLike,
    title: str = "search",
    ylabel: str = "fitness (validation accuracy, maximised)",
) -> Path:
    """Fitness of every evaluated architecture and the best so far, against evaluations.

    Args:
      records: the search's ``results.jsonl`` records, in order (``fitness`` maximised).
      path: where the PNG goes (written to a temporary name, then renamed).
      title: the figure title.
      ylabel: what the fitness is.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitness = np.array([r["fitness"] for r in records], dtype=float)
    fitness[~np.isfinite(fitness)] = np.nan
    best = np.fmax.accumulate(np.where(np.isnan(fitness), -np.inf, fitness))
    steps = np.arange(1, len(fitness) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter(steps, fitness, s=10, alpha=0.5, label="evaluated")
    ax.step(steps, best, where="post", color="C3", label="best so far")
    return finish_figure(fig, ax, path, "architectures evaluated", ylabel, title, "lower right")


def finish_figure(
    fig: Any,
    ax: Any,
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    legend: str | None = None,
    *,
    xscale: str | None = None,
    legend_size: float | None = None,
) -> Path:
    """Labels ``ax`` the way every nasjax figure is labelled (a light grid; a legend at
    ``legend``, e.g. ``"lower right"``, if given), then :func:`save_figure`."""
    if xscale is not None:
        ax.set_xscale(xscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend is not None:
        ax.legend(loc=legend, fontsize=legend_size)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Writes a matplotlib figure as a PNG atomically (a temporary name, then a rename)
    and closes it; a reader never sees a half-written image."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
