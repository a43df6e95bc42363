"""Hard cost constraints for single-objective search: a penalised fitness any strategy can use.

Constrained search, e.g. "the most accurate cell with latency <= 2 ms and <= 1 M
parameters", keeps the strategy unchanged and tells it :func:`constrained_fitness` instead
of the raw objective. Feasible candidates keep their objective; infeasible ones score below
every feasible one, ordered by their total relative violation, so that a tournament (as in
regularized evolution) prefers the smaller violation and the search is pulled toward the
feasible region -- the "feasibility first" comparison of Deb, "An efficient constraint
handling method for genetic algorithms", Comput. Methods Appl. Mech. Eng. 186, 2000,
written as one scalar. ``BestSoFar`` then holds an infeasible genotype only if no feasible
one was ever told; check it with :func:`is_feasible`.

Fitness is MAXIMISED; costs are *minimised* quantities (latency, parameters, FLOPs) given as
they are, not negated, with bounds ``> 0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError

INFEASIBLE_SCALE = 1e6
"""Infeasible candidates score ``-INFEASIBLE_SCALE * (1 + violation) <= -1e6``."""


def _check_costs(costs: jax.Array, bounds: jax.Array) -> None:
    c_shape, b_shape = jnp.shape(costs), jnp.shape(bounds)
    if len(b_shape) != 1 or len(c_shape) != 2 or c_shape[1] != b_shape[0]:
        raise NasjaxError(
            f"costs must have shape (B, K) and bounds shape (K,) with the same K; "
            f"got costs {c_shape} and bounds {b_shape}"
        )
    try:
        values = np.asarray(bounds, np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced bounds: only their shape can be checked here
    bad = [f"bounds[{k}] = {v}" for k, v in enumerate(values.tolist()) if not v > 0]
    if bad:
        raise NasjaxError(f"every bound must be > 0 (a cost limit), got {', '.join(bad)}")


def violation(costs: jax.Array, bounds: jax.Array) -> jax.Array:
    """Total relative violation ``sum_k max(0, costs[:, k] / bounds[k] - 1)``, ``float32[B]``.

    Zero exactly for feasible rows; NaN where a cost is NaN.

    Raises:
      NasjaxError: for mismatched shapes or a bound that is not ``> 0``.
    """
    _check_costs(costs, bounds)
    c = jnp.asarray(costs, jnp.float32)
    b = jnp.asarray(bounds, jnp.float32)
    return jnp.sum(jnp.maximum(c / b - 1.0, 0.0), axis=1)


def is_feasible(costs: jax.Array, bounds: jax.Array) -> jax.Array:
    """``bool[...]``: every cost ``<= `` its bound (a NaN cost is infeasible).

    Args:
      costs: ``float[B, K]``, or ``float[K]`` for one candidate.
      bounds: ``float[K]``, each ``> 0``.

    Raises:
      NasjaxError: for mismatched shapes or a bound that is not ``> 0``.
    """
    c = jnp.asarray(costs, jnp.float32)
    _check_costs(jnp.reshape(c, (-1, c.shape[-1])) if c.ndim == 1 else c, bounds)
    return jnp.all(c <= jnp.asarray(bounds, jnp.float32), axis=-1)


def constrained_fitness(objective: jax.Array, costs: jax.Array, bounds: jax.Array) -> jax.Array:
    """The objective where every cost is within its bound, else a penalty ``<= -1e6``.

    Exactly::

        v = sum_k max(0, costs[:, k] / bounds[k] - 1)   # total relative violation
        fitness = objective                     if all(costs <= bounds)
                  -1e6 * (1 + v)                otherwise

    Every feasible candidate whose objective is ``> -1e6`` (any accuracy) outscores every
    infeasible one, and infeasible ones are ordered by ``v`` (smaller is better). The
    penalty is multiplicative so float32 keeps the relative resolution of ``v``; it stays
    finite for finite costs, so tournaments still distinguish infeasible members. A NaN
    objective or cost gives NaN (a failed evaluation, the worst value). Jittable.

    Args:
      objective: ``float[B]``, MAXIMISED (e.g. accuracy), ``> -1e6`` where finite.
      costs: ``float[B, K]``, minimised costs (latency, parameters...), not negated.
      bounds: ``float[K]``, each ``> 0`` (checked when concrete; ``inf`` = no limit).

    Returns:
      ``float32[B]``.

    Raises:
      NasjaxError: for mismatched shapes or a bound that is not ``> 0``.
    """
    _check_costs(costs, bounds)
    o_shape, c_shape = jnp.shape(objective), jnp.shape(costs)
    if len(o_shape) != 1 or o_shape[0] != c_shape[0]:
        raise NasjaxError(
            f"objective must have shape (B,) matching costs (B, K); got objective {o_shape} "
            f"and costs {jnp.shape(costs)}"
        )
    v = violation(costs, bounds)
    c = jnp.asarray(costs, jnp.float32)
    feasible = jnp.all(c <= jnp.asarray(bounds, jnp.float32), axis=1)
    penalty = -INFEASIBLE_SCALE * (1.0 + v)
    fitness = jnp.where(feasible, jnp.asarray(objective, jnp.float32), penalty)
    unknown = jnp.isnan(objective) | jnp.any(jnp.isnan(c), axis=1)
    return jnp.where(unknown, jnp.nan, fitness)


def check_bound_satisfiable(
    min_costs: Sequence[float] | np.ndarray,
    bounds: Sequence[float] | np.ndarray,
    names: Sequence[str],
) -> None:
    """Host-side check that no bound is below the cheapest architecture's cost.

    Experiment scripts call this before a search with ``min_costs[k]``, the cheapest
    achievable value of cost ``k`` over the space. Each bound is checked on its own; a
    joint constraint can still be unsatisfiable when the cheapest architectures differ.

    Args:
      min_costs: ``K`` cheapest achievable costs.
      bounds: ``K`` bounds, each ``> 0``.
      names: ``K`` cost names used in the message, e.g. ``"latency_ms"``.

    Raises:
      NasjaxError: e.g. ``bound latency_ms <= 0.5 is below the cheapest architecture in
        the space (1.23); choose a bound >= 1.23``; also for lengths that differ or a bound
        that is not ``> 0``.
    """
    lo = np.asarray(min_costs, np.float64).reshape(-1)
    hi = np.asarray(bounds, np.float64).reshape(-1)
    names = list(names)
    if not len(lo) == len(hi) == len(names):
        raise NasjaxError(
            f"min_costs, bounds and names must have the same length; got {len(lo)}, "
            f"{len(hi)} and {len(names)}"
        )
    problems = []
    for name, cheapest, bound in zip(names, lo.tolist(), hi.tolist()):
        if not bound > 0:
            problems.append(f"bound {name} <= {bound:g} must be > 0")
        elif bound < cheapest:
            problems.append(
                f"bound {name} <= {bound:g} is below the cheapest architecture in the space "
                f"({cheapest:g}); choose a bound >= {cheapest:g}"
            )
    if problems:
        raise NasjaxError("; ".join(problems))
