"""NSGA-II: elitist multi-objective evolution by non-dominated rank and crowding distance.

Deb, Pratap, Agarwal & Meyarivan, "A Fast and Elitist Multiobjective Genetic Algorithm:
NSGA-II", IEEE Trans. Evol. Comput. 6(2):182-197, 2002. Each generation, ``P`` offspring
are bred from the ``P`` parents by binary tournaments under the crowded-comparison
operator (lower rank wins, then larger crowding distance), uniform crossover and
per-decision random-reset mutation; parents and offspring (``2P``) are then sorted into
non-dominated fronts and the next ``P`` parents are the best fronts, the last one cut by
crowding distance (elitist survival).

Every objective is **maximised** (accuracy-like; costs such as latency or parameters are
told negated). ``tell`` takes ``fitness`` of shape ``[B, M]``; a row with a NaN (or
infinite) objective is invalid, the worst: it ranks behind every valid row. The state's
``best`` is the :class:`BestSoFar` of objective 0 over valid rows, so tooling that reads
``state.best`` and the ``best_fitness`` metric works as for single-objective strategies.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nasjax.errors import NasjaxError
from nasjax.pareto import crowding_distance, non_dominated_rank, valid_rows
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import BestSoFar, Strategy, check_positive_int, tell_metrics


@struct.dataclass
class NSGA2State:
    """State of :func:`nsga2` (every objective maximised).

    Attributes:
      population: ``int32[P, D]`` current parents; unfilled slots (before the first
        ``tell``) hold ``-1``.
      objectives: ``float32[P, M]`` their told objectives (NaN rows are invalid; NaN for
        unfilled slots).
      rank: ``int32[P]`` non-dominated rank of each parent (0 = first front; the same
        among the parents as in the merged set they survived); ``P`` for invalid (NaN)
        members, ``P + 1`` for unfilled slots.
      crowding: ``float32[P]`` crowding distance of each parent within its front of the
        merged set it survived (0 for invalid members and unfilled slots).
      num_told: ``int32[]`` total number of genotypes told.
      best: best genotype by objective 0 told so far (valid rows only).
    """

    population: jax.Array
    objectives: jax.Array
    rank: jax.Array
    crowding: jax.Array
    num_told: jax.Array
    best: BestSoFar


def _check_rate(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise NasjaxError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def _rank_and_crowding(
    objectives: jax.Array, filled: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Ranks with invalid rows at ``N`` and unfilled slots at ``N + 1``; crowding; validity."""
    ok = valid_rows(objectives) & filled
    rank = non_dominated_rank(objectives, ok)
    rank = jnp.where(filled, rank, objectives.shape[0] + 1)
    return rank, crowding_distance(objectives, jnp.where(ok, rank, -1)), ok


def nsga2(
    space: SearchSpace,
    population_size: int = 20,
    num_objectives: int = 2,
    mutation_rate: float | None = None,
    crossover_rate: float = 0.9,
) -> Strategy:
    """NSGA-II (Deb et al., IEEE TEC 6(2), 2002) over the genotypes of ``space``.

    All objectives are MAXIMISED; ``tell(state, population, fitness)`` takes
    ``fitness float[B, M]`` with ``M = num_objectives`` (``float[B]`` is accepted only when
    ``num_objectives == 1``). A row with any NaN/inf objective is invalid (the worst).

    ``ask`` returns one generation, ``int32[P, D]``: a uniform random population before
    the first ``tell``; afterwards each row is bred independently: two binary tournaments
    (contenders uniform with replacement; lower rank wins, then larger crowding, then the
    first drawn) pick parents ``a`` and ``b``; with probability ``crossover_rate`` the child
    takes each decision from ``a`` or ``b`` with probability 1/2 (uniform crossover), else
    it copies ``a``; then each decision (with more than one option) is reset, with
    probability ``mutation_rate``, to a uniformly drawn *different* option. A child may
    equal a parent (no change is forced). A row whose tournament only met unfilled slots
    is a uniform sample instead.

    ``tell`` merges the ``P`` parents with the ``B`` told rows, ranks the ``P + B`` rows by
    non-dominated sorting and keeps the first ``P`` by (rank, larger crowding distance,
    parents before offspring) -- Deb's elitist survival. As in Deb et al. (2002), the next
    tournaments use the rank and crowding distance computed on the merged ``P + B`` rows
    (so a front cut by crowding keeps the distances of the whole front).

    Args:
      space: the search space.
      population_size: ``P >= 1`` parents kept and offspring per ``ask`` (the batch size).
      num_objectives: ``M >= 1``.
      mutation_rate: per-decision reset probability in ``[0, 1]``; default ``1 / D``.
      crossover_rate: probability in ``[0, 1]`` of uniform crossover per child.

    Returns:
      A :class:`Strategy` over :class:`NSGA2State` with ``batch_size = population_size``.
      ``tell``'s metrics are :func:`tell_metrics` of objective 0 (``best_fitness``,
      ``mean_fitness``, ``batch_best_fitness``, ``num_nan`` -- here rows with any NaN/inf
      objective -- and ``num_evaluated``) plus ``front_size``, the number of valid
      rank-0 members of the new population.

    Raises:
      NasjaxError: naming the bad value if a hyper-parameter is out of range; ``tell``
        raises at trace time for a population not ``(B, D)`` or fitness not ``(B, M)``.
    """
    pop_size = check_positive_int("population_size", population_size)
    num_obj = check_positive_int("num_objectives", num_objectives)
    d = space.num_decisions
    if mutation_rate is None:
        mutation_rate = 1.0 / d
    mutation_rate = _check_rate("mutation_rate", mutation_rate)
    crossover_rate = _check_rate("crossover_rate", crossover_rate)
    radix = np.asarray(space.num_choices, np.int32)

    def init(key: jax.Array) -> NSGA2State:
        del key  # the first population is drawn by ``ask``; kept for a uniform interface
        return NSGA2State(
            population=jnp.full((pop_size, d), -1, jnp.int32),
            objectives=jnp.full((pop_size, num_obj), jnp.nan, jnp.float32),
            rank=jnp.full((pop_size,), pop_size + 1, jnp.int32),
            crowding=jnp.zeros((pop_size,), jnp.float32),
            num_told=jnp.array(0, jnp.int32),
            best=BestSoFar.create(space),
        )

    def tournament(state: NSGA2State, u: jax.Array) -> jax.Array:
        """Binary tournaments from uniforms ``u[..., 2]``: winner slot indices."""
        i = jnp.minimum(jnp.floor(u * pop_size).astype(jnp.int32), pop_size - 1)
        r, c = state.rank[i], state.crowding[i]
        second = (r[..., 1] < r[..., 0]) | ((r[..., 1] == r[..., 0]) & (c[..., 1] > c[..., 0]))
        return jnp.where(second, i[..., 1], i[..., 0])

    def ask(key: jax.Array, state: NSGA2State) -> tuple[jax.Array, NSGA2State]:
        # One PRNG call per ask: tournaments (4), crossover (1 + D), mutation (2D), fresh (D).
        u = jax.random.uniform(key, (pop_size, 5 + 4 * d))
        fresh = space.sample_from_uniform(u[:, 5 : 5 + d])
        a, b = tournament(state, u[:, 0:2]), tournament(state, u[:, 2:4])
        filled = state.population[:, 0] >= 0
        b = jnp.where(filled[b], b, a)
        parent_a, parent_b = state.population[a], state.population[b]
        cross = (u[:, 4:5] < crossover_rate) & (u[:, 5 + d : 5 + 2 * d] < 0.5)
        child = jnp.where(cross, parent_b, parent_a)
        n = jnp.asarray(radix)
        reset = (u[:, 5 + 2 * d : 5 + 3 * d] < mutation_rate) & (n > 1)
        offset = 1 + jnp.minimum(
            jnp.floor(u[:, 5 + 3 * d :] * (n - 1)).astype(jnp.int32), jnp.maximum(n - 2, 0)
        )
        child = jnp.where(reset, (child + offset) % n, child)
        use_fresh = (state.num_told == 0) | ~filled[a]
        return jnp.where(use_fresh[:, None], fresh, child), state

    def tell(
        state: NSGA2State, population: jax.Array, fitness: jax.Array
    ) -> tuple[NSGA2State, dict[str, jax.Array]]:
        fitness = _check_told(space, num_obj, population, fitness)
        population = jnp.asarray(population, jnp.int32)
        told = population.shape[0]
        ok_told = valid_rows(fitness)
        objective0 = jnp.where(ok_told, fitness[:, 0], jnp.nan)
        best = state.best.update(population, objective0)

        merged_pop = jnp.concatenate([state.population, population])
        merged_obj = jnp.concatenate([state.objectives, fitness])
        filled = jnp.concatenate([state.population[:, 0] >= 0, jnp.ones((told,), bool)])
        rank, crowding, ok = _rank_and_crowding(merged_obj, filled)
        index = jnp.arange(pop_size + told, dtype=jnp.int32)
        _, _, order = jax.lax.sort((rank, -crowding, index), num_keys=3)
        keep = order[:pop_size]

        # Survivors keep the rank and crowding of the merged set, as in Deb et al. (2002):
        # whole fronts survive, so valid ranks are unchanged; invalid and unfilled rows
        # move to P and P + 1.
        merged_n = pop_size + told
        rank = rank[keep]
        rank = jnp.where(rank == merged_n, pop_size, jnp.where(rank > merged_n, pop_size + 1, rank))
        ok = ok[keep]
        new_state = NSGA2State(
            population=merged_pop[keep],
            objectives=merged_obj[keep],
            rank=rank,
            crowding=crowding[keep],
            num_told=state.num_told + told,
            best=best,
        )
        metrics = tell_metrics(best, objective0)
        metrics["front_size"] = jnp.sum(ok & (rank == 0)).astype(jnp.int32)
        return new_state, metrics

    return Strategy(init=init, ask=ask, tell=tell, batch_size=pop_size)


def _check_told(
    space: SearchSpace, num_objectives: int, population: jax.Array, fitness: jax.Array
) -> jax.Array:
    """Trace-time shape check of a told batch; returns fitness as ``float32[B, M]``."""
    pop_shape, fit_shape = jnp.shape(population), jnp.shape(fitness)
    d, m = space.num_decisions, num_objectives
    if len(fit_shape) == 1 and m == 1:
        fitness, fit_shape = jnp.reshape(fitness, (-1, 1)), fit_shape + (1,)
    elif len(fit_shape) == 1:
        raise NasjaxError(
            f"NSGA-II needs fitness of shape (B, M) with one column per objective "
            f"(num_objectives={m}), got scalar fitness of shape {fit_shape}; tell it "
            f"[B, {m}] objectives, all maximised"
        )
    ok = len(pop_shape) == 2 and pop_shape[0] >= 1 and pop_shape[1] == d
    if not ok or fit_shape != (pop_shape[0], m):
        raise NasjaxError(
            f"tell expects population of shape (B, {d}) with B >= 1 and fitness of shape "
            f"(B, {m}); got population {pop_shape} and fitness {fit_shape}"
        )
    return jnp.asarray(fitness, jnp.float32)
