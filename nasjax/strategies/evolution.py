"""Regularized (aging) evolution.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture
Search", AAAI 2019. The population is a queue of the last ``population_size`` evaluated
architectures: each new member pushes out the *oldest* one, not the worst. A parent is
the fittest of ``sample_size`` members drawn uniformly with replacement (tournament
selection, as in the NAS-Bench-201 reference code), and its child changes exactly one
decision (``SearchSpace.mutate``; ``mutation="node_edge"`` picks it as NAS-Bench-201's
script does). The defaults ``population_size=10, sample_size=3`` are
the REA settings of NAS-Bench-201 (Dong & Yang, ICLR 2020; its reference script runs
``--ea_population 10 --ea_sample_size 3``).

Here the queue is a fixed-shape ring buffer, so ``ask`` and ``tell`` jit and run inside
``lax.scan``. With ``batch_size=1`` this is exactly the sequential algorithm; with a
larger batch all children of one ``ask`` are bred from the same population, as parallel
workers would be.

Constrained mode (e.g. the most accurate cell under a latency or parameter bound): tell
``constrained_fitness(accuracy, costs, bounds)`` from ``nasjax.strategies.constraints``
instead of the accuracy. Feasible members keep their accuracy, infeasible ones score below
all of them ordered by total relative violation, so tournaments pull the population into
the feasible region, and ``state.best`` is feasible as soon as any feasible member was told
(check with ``is_feasible``). Nothing else in the algorithm changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import (
    BestSoFar,
    Strategy,
    check_positive_int,
    check_told,
    sanitize_fitness,
    tell_metrics,
)


@struct.dataclass
class EvolutionState:
    """State of :func:`regularized_evolution` (fitness maximised).

    Attributes:
      population: ``int32[P, D]`` ring buffer of the last ``P`` told genotypes; unfilled
        slots hold ``-1``. The next told genotype goes to slot ``num_told % P``, which,
        once the buffer is full, holds the oldest member.
      fitness: ``float32[P]`` their fitness, NaN stored as ``-inf``; ``-inf`` when unfilled.
      num_told: ``int32[]`` total number of genotypes told.
      best: the best genotype told so far (it may have aged out of the population).
    """

    population: jax.Array
    fitness: jax.Array
    num_told: jax.Array
    best: BestSoFar


def regularized_evolution(
    space: SearchSpace,
    population_size: int = 10,
    sample_size: int = 3,
    batch_size: int = 1,
    mutation: str = "uniform",
) -> Strategy:
    """Regularized evolution (REA; Real et al., AAAI 2019) with an aging population.

    Fitness is MAXIMISED (accuracy-like); NaN fitness is treated as ``-inf`` (the worst):
    it never becomes the best and loses every tournament it is not alone in.

    Row ``i`` of an ``ask`` is a uniform random sample while the population is still
    filling (``num_told + i < population_size``); otherwise it is a one-decision mutation
    of a tournament winner: the fittest of ``sample_size`` members drawn uniformly with
    replacement from the members told so far (the last ``population_size``).

    Args:
      space: the search space.
      population_size: ``P``, members kept alive; each told genotype replaces the oldest
        once ``P`` are held. Default 10, as in NAS-Bench-201.
      sample_size: tournament size ``S >= 1``. Default 3, as in NAS-Bench-201.
      batch_size: ``B`` candidates per ``ask``, ``1 <= B <= P``.
      mutation: which decision a child changes, one of ``space.mutation_rules``:
        ``"uniform"`` (default) or a space's reference rule, e.g. NAS-Bench-201's
        ``"node_edge"`` (a node, then one of its incoming edges, as the paper's script).

    Returns:
      A :class:`Strategy` over :class:`EvolutionState`.

    Raises:
      NasjaxError: naming the bad value if a hyper-parameter is out of range.
    """
    pop_size = check_positive_int("population_size", population_size)
    sample_size = check_positive_int("sample_size", sample_size)
    batch_size = check_positive_int("batch_size", batch_size)
    space.mutation_weights(mutation)  # an unknown rule is one error naming the valid ones
    if batch_size > pop_size:
        raise NasjaxError(f"batch_size must be <= population_size ({pop_size}), got {batch_size}")

    def init(key: jax.Array) -> EvolutionState:
        del key  # the first population is drawn by ``ask``; kept for a uniform interface
        return EvolutionState(
            population=jnp.full((pop_size, space.num_decisions), -1, jnp.int32),
            fitness=jnp.full((pop_size,), -jnp.inf, jnp.float32),
            num_told=jnp.array(0, jnp.int32),
            best=BestSoFar.create(space),
        )

    def ask(key: jax.Array, state: EvolutionState) -> tuple[jax.Array, EvolutionState]:
        # One PRNG call per ask: the fresh sample, the tournament and the mutation.
        d = space.num_decisions
        u = jax.random.uniform(key, (batch_size, d + sample_size + 2))
        fresh = space.sample_from_uniform(u[:, :d])
        # Slots 0..n-1 hold the members told so far (all P once the buffer is full).
        num_members = jnp.clip(state.num_told, 1, pop_size)
        draws = u[:, d : d + sample_size]
        contenders = jnp.minimum(jnp.floor(draws * num_members).astype(jnp.int32), num_members - 1)
        winner = jnp.argmax(state.fitness[contenders], axis=1)
        parents = jnp.take_along_axis(contenders, winner[:, None], axis=1)[:, 0]
        children = space.mutate_from_uniform(
            u[:, d + sample_size :], state.population[parents], mutation
        )
        is_random = state.num_told + jnp.arange(batch_size) < pop_size
        return jnp.where(is_random[:, None], fresh, children), state

    def tell(
        state: EvolutionState, population: jax.Array, fitness: jax.Array
    ) -> tuple[EvolutionState, dict[str, jax.Array]]:
        check_told(space, population, fitness)
        told = jnp.shape(population)[0]
        if told > pop_size:
            raise NasjaxError(f"tell got {told} genotypes, more than population_size ({pop_size})")
        slots = (state.num_told + jnp.arange(told)) % pop_size
        best = state.best.update(population, fitness)
        new_state = EvolutionState(
            population=state.population.at[slots].set(jnp.asarray(population, jnp.int32)),
            fitness=state.fitness.at[slots].set(sanitize_fitness(fitness)),
            num_told=state.num_told + told,
            best=best,
        )
        return new_state, tell_metrics(best, fitness)

    return Strategy(init=init, ask=ask, tell=tell, batch_size=batch_size)
