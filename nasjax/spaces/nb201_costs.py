"""Exact params, MACs and FLOPs of every NAS-Bench-201 cell (Dong & Yang, ICLR 2020).

Each count of :func:`nasjax.objectives.network_cost` is exactly additive over a cell's
edges, so a table over all 15,625 cells is the all-``none`` network's count plus, per
edge, the extra count of its op, found once by counting one-edge probe networks. With the
benchmark's network (C=16, N=5) the tables equal the benchmark's own columns.
"""

from __future__ import annotations

import functools

import numpy as np

from nasjax.errors import check_choice, check_positive
from nasjax.objectives import COST_METRICS, network_cost
from nasjax.spaces.nb201 import NB201Space
from nasjax.tasks import get_task


@functools.cache
def _nb201_probe(
    dataset: str, channels: int, cells_per_stage: int, genotype: tuple[int, ...]
) -> np.ndarray:
    """``int64[3]``: params, MACs, FLOPs of one decoded NB201 network."""
    net = NB201Space().decode(genotype, dataset, channels=channels, cells_per_stage=cells_per_stage)
    cost = network_cost(net, get_task(dataset).input_shape)
    counts = np.array([cost[m] for m in COST_METRICS], np.int64)
    counts.flags.writeable = False
    return counts


@functools.cache
def _nb201_op_costs(dataset: str, channels: int) -> np.ndarray:
    """``int64[3, 5]``: extra params, MACs, FLOPs of op ``o`` on one edge of one cell per stage.

    Probed with one-cell-per-stage networks: the all-``none`` cell, then each op alone on
    edge 0. Every edge of an NB201 cell maps the cell's input shape to itself (nodes keep
    the shape; node sums are additions, which are not counted), so an op costs the same on
    all six edges; and every cell of a stage sees the same shape, so with ``N`` cells per
    stage an edge's op costs ``N`` times this.
    """
    base = _nb201_probe(dataset, channels, 1, (0,) * 6)
    costs = np.zeros((len(COST_METRICS), 5), np.int64)
    for op in range(1, 5):
        costs[:, op] = _nb201_probe(dataset, channels, 1, (op,) + (0,) * 5) - base
    return costs


@functools.cache
def _nb201_table(metric: str, dataset: str, channels: int, cells_per_stage: int) -> np.ndarray:
    m = COST_METRICS.index(metric)
    base = _nb201_probe(dataset, channels, cells_per_stage, (0,) * 6)[m]
    per_op = cells_per_stage * _nb201_op_costs(dataset, channels)[m]
    genotypes = np.asarray(NB201Space().from_index(np.arange(15_625)))
    table = base + per_op[genotypes].sum(axis=-1)
    table.flags.writeable = False
    return table


def nb201_cost_table(
    metric: str, dataset: str, channels: int = 16, cells_per_stage: int = 5
) -> np.ndarray:
    """Params, MACs or FLOPs of every NAS-Bench-201 cell, exact and vectorised.

    Each count is exactly additive over the six edges: the all-``none`` network's count plus,
    for every edge, ``cells_per_stage`` times the extra count of its op in one cell of each
    stage (``none``, ``skip_connect`` and ``avg_pool_3x3`` add zero under these conventions;
    the convolutions add their kernels and products). The per-op costs come from five
    probe networks counted once per ``(dataset, channels)`` (the all-``none`` cell and each
    op alone on one edge; every edge of a cell has the same shape); tables are cached.

    Args:
      metric: one of ``"params"``, ``"macs"``, ``"flops"`` (conventions in the module doc).
      dataset: a name of ``nasjax.tasks.TASKS``.
      channels: ``C`` of the first stage (16 in the benchmark).
      cells_per_stage: ``N`` (5 in the benchmark).

    Returns:
      Read-only ``int64[15625]``; row ``i`` is the cell ``NB201Space().from_index(i)``.
    """
    check_choice("metric", metric, COST_METRICS)
    get_task(dataset)
    check_positive(channels=channels, cells_per_stage=cells_per_stage)
    return _nb201_table(metric, dataset, int(channels), int(cells_per_stage))


def nb201_edge_costs(
    metric: str, dataset: str, channels: int = 16, cells_per_stage: int = 5
) -> np.ndarray:
    """``float64[6, 5]``: what op ``o`` on edge ``e`` adds to an NB201 network's count.

    The additive decomposition behind :func:`nb201_cost_table` (every edge of every cell
    costs the same per op), as the per-edge, per-op cost matrix a relaxed cell needs for
    :func:`nasjax.objectives.expected_cost`. For latency, the same matrix measured on a
    device is :meth:`nasjax.spaces.nb201_latency.LatencyTable.edge_ms`.
    """
    check_choice("metric", metric, COST_METRICS)
    get_task(dataset)
    check_positive(channels=channels, cells_per_stage=cells_per_stage)
    per_op = cells_per_stage * _nb201_op_costs(dataset, int(channels))[COST_METRICS.index(metric)]
    return np.tile(per_op.astype(np.float64), (6, 1))
