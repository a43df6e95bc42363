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
