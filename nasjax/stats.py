"""Rank statistics for comparing a cheap score with the quantity it stands in for
(a proxy with trained accuracy, a latency table with measured latency)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nasjax.errors import NasjaxError


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x``, ties sharing their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two equal-length 1D arrays (ties: mean ranks).

    The Pearson correlation of the ranks; NaN when either array is constant.
    """
    ra, rb = ranks(np.asarray(a).ravel()), ranks(np.asarray(b).ravel())
    if ra.shape != rb.shape or ra.size < 2:
        raise NasjaxError(
            f"spearman needs two arrays of the same length >= 2, got {ra.size}, {rb.size}"
        )
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a: Any, b: Any) -> float:
    """Kendall's tau-b of two equal-length 1D arrays (ties in either counted as SciPy does).

    NaN when either array is constant.
    """
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise NasjaxError(
            f"kendall_tau needs two arrays of the same length >= 2, got {x.size}, {y.size}"
        )
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones(dx.shape, bool), 1)
    pairs = upper.sum()
    tied_x, tied_y = np.sum((dx == 0)[upper]), np.sum((dy == 0)[upper])
    denom = np.sqrt((pairs - tied_x) * (pairs - tied_y))
    return float(np.sum((dx * dy)[upper]) / denom) if denom > 0 else float("nan")
