"""Local search: hill climbing over one-decision neighbourhoods, restarted at local optima.

White, Nolen, Savani & Neiswanger, "Exploring the Loss Landscape in Neural Architecture
Search" (UAI 2021; arXiv 2020 as "Local Search is State of the Art for Neural Architecture
Search Benchmarks"). Start from a uniform random genotype; evaluate the neighbours of the
incumbent (``SearchSpace.neighbours``: every genotype one decision away) in a random
order; move to a better one; at a local optimum (no neighbour better) restart from a new
random genotype. Two move rules:

* ``move="first"`` (default): move to the *first* neighbour found better than the
  incumbent, as the NAS-benchmark experiments of White et al. run it (NASLib's local
  search; with an expensive evaluation it spends fewer queries per step);
* ``move="best"``: evaluate the whole neighbourhood, then move to its best member if that
  beats the incumbent (Algorithm 1 of the paper).

Fixed-shape state (the incumbent, a permutation of its ``K`` neighbours and a position in
it), so ``ask`` and ``tell`` jit and run under ``lax.scan`` + ``vmap``. With ``batch_size
B > 1`` an ``ask`` returns the next ``B`` neighbours (wrapping round to the first ones at
the end of a neighbourhood), and ``move="first"`` takes the first better one in batch
order. Fitness is MAXIMISED; NaN fitness is treated as ``-inf`` (never better).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from nasjax.errors import check_choice
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import (
    BestSoFar,
    Strategy,
    check_positive_int,
    check_told,
    sanitize_fitness,
    tell_metrics,
)

MOVES = ("first", "best")


@struct.dataclass
class LocalSearchState:
    """State of :func:`local_search` (fitness maximised).

    Attributes:
      incumbent: ``int32[D]`` the current point (all ``-1`` before the first start).
      incumbent_fitness: ``float32[]`` its fitness (``-inf`` before the first start).
      restart: ``bool[]`` whether the next ``ask`` draws a new random start.
      order: ``int32[K]`` the order in which the incumbent's neighbours are asked.
      position: ``int32[]`` neighbours of the incumbent asked so far.
      candidate, candidate_fitness: best neighbour seen in this neighbourhood
        (``move="best"``).
      num_restarts: ``int32[]`` random starts so far (the first one included).
      best: the best genotype told so far.
    """

    incumbent: jax.Array
    incumbent_fitness: jax.Array
    restart: jax.Array
    order: jax.Array
    position: jax.Array
    candidate: jax.Array
    candidate_fitness: jax.Array
    num_restarts: jax.Array
    best: BestSoFar


def local_search(space: SearchSpace, move: str = "first", batch_size: int = 1) -> Strategy:
    """Local search with random restarts (White et al., 2020/UAI 2021).

    Fitness is MAXIMISED (accuracy-like); NaN fitness is treated as ``-inf``.

    Args:
      space: the search space (its ``neighbours`` define the neighbourhood).
      move: ``"first"`` (first better neighbour, random order) or ``"best"`` (best of
        the whole neighbourhood, if better than the incumbent).
      batch_size: genotypes per ``ask`` (``>= 1``); a restart asks ``batch_size`` random
        genotypes and starts from the fittest.

    Returns:
      A :class:`Strategy` over :class:`LocalSearchState`.

    Raises:
      NasjaxError: one line naming a bad ``move`` or ``batch_size``.
    """
    check_choice("move", move, MOVES)
    batch_size = check_positive_int("batch_size", batch_size)
    d = space.num_decisions
    k = int(space.neighbours(jnp.zeros((d,), jnp.int32)).shape[0])

    def init(key: jax.Array) -> LocalSearchState:
        del key  # the start is drawn by ``ask``; kept for a uniform interface
        return LocalSearchState(
            incumbent=jnp.full((d,), -1, jnp.int32),
            incumbent_fitness=jnp.array(-jnp.inf, jnp.float32),
            restart=jnp.array(True),
            order=jnp.arange(k, dtype=jnp.int32),
            position=jnp.array(0, jnp.int32),
            candidate=jnp.full((d,), -1, jnp.int32),
            candidate_fitness=jnp.array(-jnp.inf, jnp.float32),
            num_restarts=jnp.array(0, jnp.int32),
            best=BestSoFar.create(space),
        )

    def ask(key: jax.Array, state: LocalSearchState) -> tuple[jax.Array, LocalSearchState]:
        key_start, key_order = jax.random.split(key)
        # A new neighbourhood (position 0) gets a new random order.
        order = jnp.where(
            state.position == 0,
            jax.random.permutation(key_order, k).astype(jnp.int32),
            state.order,
        )
        nbrs = space.neighbours(jnp.maximum(state.incumbent, 0))
        rows = nbrs[order[(state.position + jnp.arange(batch_size)) % k]]
        population = jnp.where(state.restart, space.sample(key_start, batch_size), rows)
        return population, state.replace(order=order)

    def tell(
        state: LocalSearchState, population: jax.Array, fitness: jax.Array
    ) -> tuple[LocalSearchState, dict[str, jax.Array]]:
        check_told(space, population, fitness)
        population = jnp.asarray(population, jnp.int32)
        fit = sanitize_fitness(fitness)
        told = fit.shape[0]
        best = state.best.update(population, fitness)
        top = jnp.argmax(fit)
        # A restart: the fittest of the batch is the new incumbent (unless all are NaN).
        started = state.restart & (fit[top] > -jnp.inf)
        # A neighbourhood step.
        better = fit > state.incumbent_fitness
        position = state.position + told
        done = position >= k
        if move == "first":
            first = jnp.argmax(better)
            moved = jnp.any(better)
            new_inc, new_fit = population[first], fit[first]
            cand, cand_fit = state.candidate, state.candidate_fitness
            stuck = ~moved & done
        else:
            gain = fit[top] > state.candidate_fitness
            cand = jnp.where(gain, population[top], state.candidate)
            cand_fit = jnp.where(gain, fit[top], state.candidate_fitness)
            moved = done & (cand_fit > state.incumbent_fitness)
            new_inc, new_fit = cand, cand_fit
            stuck = done & ~moved
        step_inc = jnp.where(moved, new_inc, state.incumbent)
        step_fit = jnp.where(moved, new_fit, state.incumbent_fitness)
        reset = moved | done  # a new neighbourhood starts
        restart = jnp.where(state.restart, ~started, stuck)
        new_state = state.replace(
            incumbent=jnp.where(state.restart, jnp.where(started, population[top], -1), step_inc),
            incumbent_fitness=jnp.where(
                state.restart, jnp.where(started, fit[top], -jnp.inf), step_fit
            ),
            restart=restart,
            position=jnp.where(state.restart | reset, 0, position).astype(jnp.int32),
            candidate=jnp.where(state.restart | reset, -1, cand),
            candidate_fitness=jnp.where(state.restart | reset, -jnp.inf, cand_fit),
            num_restarts=state.num_restarts + state.restart.astype(jnp.int32),
            best=best,
        )
        return new_state, tell_metrics(best, fitness)

    return Strategy(init=init, ask=ask, tell=tell, batch_size=batch_size)
