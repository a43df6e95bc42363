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


def plot_front(
    series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[bool]]],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
) -> Path:
    """Every evaluated point of each named series (faint) and its non-dominated points
    joined as a step line (both axes maximised, e.g. accuracy against minus latency).

    Args:
      series: per name, ``(x, y, on_front)`` of every evaluated architecture.
      path: where the PNG goes (written to a temporary name, then renamed).
      xlabel: what ``x`` is.
      ylabel: what ``y`` is.
      title: the figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (name, (x, y, front)) in enumerate(series.items()):
        x, y, front = np.asarray(x, float), np.asarray(y, float), np.asarray(front, bool)
        ax.scatter(x, y, s=10, alpha=0.35, c=f"C{i}")
        order = np.argsort(x[front])
        fx, fy = x[front][order], y[front][order]
        ax.step(fx, fy, where="post", marker="o", c=f"C{i}", label=f"{name} front")
    return finish_figure(fig, ax, path, xlabel, ylabel, title, "lower left")


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


def plot_cell(
    cells: dict[str, tuple[Sequence[str], Sequence[tuple[int, int, str]]]],
    path: str | os.PathLike,
    title: str | None = None,
    *,
    absent: str = "none",
) -> Path:
    """Draws cells as graphs: numbered nodes left to right, one arrow per edge labelled
    with its op (an edge whose op is ``absent`` is dashed and grey: no connection).

    Args:
      cells: per panel title (e.g. ``"normal"``, ``"reduce"``, or one ``"cell"``), the
        node labels in drawing order and the edges as ``(source, target, op)`` indices
        into those labels.
      path: where the PNG goes (written to a temporary name, then renamed).
      title: the figure title.
      absent: the op name that means "no edge" (NAS-Bench-201's ``none``).

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widest = max(len(nodes) for nodes, _ in cells.values())
    tall = max(np.ptp(_extent(edges)) for _, edges in cells.values()) + 2 * _MARGIN
    width = max(
        6.0, 1.6 * widest, 0.09 * len(title or "")
    )  # height: the arcs' extent at the same scale, and a title
    height = 0.85 * width * tall / widest + 0.5
    fig, axes = plt.subplots(
        len(cells), 1, figsize=(width, height * len(cells)), dpi=120, squeeze=False
    )
    ops = sorted({op for _, edges in cells.values() for _, _, op in edges if op != absent})
    colours = {op: f"C{i % 10}" for i, op in enumerate(ops)}
    for ax, (name, (nodes, edges)) in zip(axes[:, 0], cells.items()):
        _draw_cell(ax, nodes, edges, colours, absent)
        ax.set_title(name if len(cells) > 1 or title is None else title, fontsize=10)
    if title is not None and len(cells) > 1:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


_ARC = 0.42  # arc3 curvature of non-adjacent edges: their height is _ARC * span / 2
_MARGIN = 0.3  # room around the nodes and arcs, in node spacings


def _lifts(edges: Sequence[tuple[int, int, str]]) -> list[float]:
    """Each edge's arc3 curvature (positive: above): neighbours straight, longer edges
    alternating above and below, shortest first, so that they do not overlap."""
    sign, lift = 1.0, [0.0] * len(edges)
    for e in sorted(range(len(edges)), key=lambda e: (edges[e][1] - edges[e][0], edges[e][0])):
        if abs(edges[e][1] - edges[e][0]) > 1:
            lift[e], sign = sign * _ARC, -sign
    return lift


def _extent(edges: Sequence[tuple[int, int, str]]) -> tuple[float, float]:
    """The lowest and highest points of the arcs (0 for straight edges)."""
    heights = [lift * abs(d - s) / 2 for lift, (s, d, _) in zip(_lifts(edges), edges)]
    return min([0.0, *heights]), max([0.0, *heights])


def _draw_cell(
    ax: Any,
    nodes: Sequence[str],
    edges: Sequence[tuple[int, int, str]],
    colours: dict[str, str],
    absent: str,
) -> None:
    """One cell on ``ax``: nodes on a line, edges straight or arcs (:func:`_lifts`)."""
    from matplotlib.patches import FancyArrowPatch

    lift = _lifts(edges)
    for e, (src, dst, op) in enumerate(edges):
        faint = op == absent
        colour = "0.7" if faint else colours[op]
        arrow = FancyArrowPatch(
            (src, 0.0),
            (dst, 0.0),
            connectionstyle=f"arc3,rad={-lift[e]}",
            arrowstyle="-|>",
            mutation_scale=12,
            shrinkA=14,
            shrinkB=14,
            color=colour,
            linestyle="--" if faint else "-",
            linewidth=1.0 if faint else 1.8,
        )
        ax.add_patch(arrow)
        # midpoint of arc3's quadratic Bezier: control point offset lift * length upward
        x, y = (src + dst) / 2, lift[e] * abs(dst - src) / 2
        ax.text(
            x,
            y,
            op,
            ha="center",
            va="center",
            fontsize=8,
            color="0.45" if faint else colour,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.9},
        )
    for i, label in enumerate(nodes):
        ax.scatter([i], [0.0], s=620, c="white", edgecolors="0.2", linewidths=1.5, zorder=3)
        ax.text(i, 0.0, label, ha="center", va="center", fontsize=9, zorder=4)
    low, high = _extent(edges)
    ax.set_xlim(-0.5, len(nodes) - 0.5)
    ax.set_ylim(low - _MARGIN, high + _MARGIN)
    ax.set_aspect("equal")
    ax.axis("off")
