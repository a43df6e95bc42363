"""Cost bounds on a search through the space contract: ``costs <= bounds`` penalised
(:func:`nasjax.strategies.constrained_fitness`), for any space.

Params, FLOPs and MACs come from the space's exact ``cost_table`` where it has one (one
vectorised lookup), else from ``space.costs`` per genotype; latency from its
``latency_table`` (a per-op model measured on this device; spaces without one are refused
in one line). Where every bound has a table, a bound below the cheapest genotype is
refused before any training.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.evaluation.training import Evaluator
from nasjax.spaces import require, supports
from nasjax.strategies import check_bound_satisfiable, constrained_fitness, is_feasible

LATENCY = "latency_ms"


def check_bounds(space: Any, bounds: dict[str, float], dataset: str, size: dict, hint: str) -> None:
    """Refuses, in one line, a bound the space cannot evaluate (no latency model, or a cost
    its ``costs`` does not count; ``hint`` says what to run instead)."""
    if LATENCY in bounds:
        require(space, "latency_table")
    counted = [m for m in bounds if m != LATENCY]
    if not counted or supports(space, "cost_table"):
        return
    genotype = space.validate(space.sample(jax.random.key(0), 1)[0])
    example = space.costs(genotype, dataset, **size)
    for metric in counted:
        if metric not in example:
            raise NasjaxError(
                f"--max-{metric} bounds the {metric!r} cost, which space {space.name!r} does "
                f"not count (its costs: {', '.join(example)}); run {hint}"
            )


def _cost_fn(space: Any, metric: str, dataset: str, size: dict) -> Callable[[Any], np.ndarray]:
    """``genotypes [B, D] -> float64[B]``: from the exact table where the space has one."""
    if supports(space, "cost_table"):
        table = np.asarray(space.cost_table(metric, dataset, **size), np.float64)
        return lambda g: table[np.asarray(space.to_index(g))]
    return lambda g: np.array(
        [space.costs(x, dataset, **size)[metric] for x in np.asarray(g)], np.float64
    )


def _latency_fn(
    space: Any, dataset: str, size: dict, table_file: Path, resume: bool
) -> Callable[[Any], np.ndarray]:
    """The space's latency model, kept in ``table_file``; a resumed search predicts with the
    one it started with (exact resume)."""
    load = table_file if resume and table_file.exists() else None
    latency = space.latency_table(dataset, load=load, **size)
    if load is None:
        table_file.parent.mkdir(parents=True, exist_ok=True)
        latency.to_json(table_file)
    return lambda g: np.asarray(latency.predict(np.asarray(g)), np.float64)


def bounded_evaluator(
    evaluator: Evaluator,
    space: Any,
    bounds: dict[str, float],
    dataset: str,
    size: dict,
    *,
    latency_file: str | os.PathLike,
    resume: bool = False,
) -> tuple[Evaluator, Callable[[Any], np.ndarray]]:
    """``evaluator`` with ``costs <= bounds`` (``{"params": 1e5, "latency_ms": 2.0}``).

    Returns:
      The wrapped evaluator (its metrics gain each cost and ``feasible``) and
      ``costs(genotypes) -> float[B, K]`` in the order of ``bounds``.
    """
    names = list(bounds)
    fns = {
        m: _latency_fn(space, dataset, size, Path(latency_file), resume)
        if m == LATENCY
        else _cost_fn(space, m, dataset, size)
        for m in names
    }
    limits = np.array([bounds[k] for k in names])
    if supports(space, "cost_table"):  # exact over every genotype: refuse a hopeless bound
        every = np.asarray(space.from_index(np.arange(space.size)))
        check_bound_satisfiable(np.array([fns[k](every).min() for k in names]), limits, names)

    def costs(genotypes: Any) -> np.ndarray:
        return np.stack([fns[k](genotypes) for k in names], axis=1)

    def evaluate(key: jax.Array, population: jax.Array) -> tuple[jax.Array, dict]:
        fitness, metrics = evaluator.evaluate(key, population)
        c = costs(population)
        metrics = {**metrics, **{k: c[:, i] for i, k in enumerate(names)}}
        metrics["feasible"] = np.asarray(is_feasible(c, limits), np.float32)
        return constrained_fitness(fitness, c, limits), metrics

    return Evaluator(evaluate), costs


def bounds_summary(bounds: dict[str, float], costs: Any, genotype: np.ndarray) -> dict:
    """The summary fields of a bounded search's best genotype (empty without bounds)."""
    if not bounds:
        return {}
    found = costs(np.asarray(genotype)[None])[0]
    limits = np.array(list(bounds.values()))
    return {
        "constraints": {f"{k} <=": v for k, v in bounds.items()},
        "constrained_costs": dict(zip(bounds, found.tolist())),
        "feasible": bool(is_feasible(found, limits)),
    }
