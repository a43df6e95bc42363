"""The ask/tell ``Strategy`` interface and the best-so-far record every strategy keeps.

A strategy is a NamedTuple of pure functions over a pytree state, in the style of optax's
``GradientTransformation`` and evosax's ask/tell strategies::

    state = strategy.init(key)
    population, state = strategy.ask(key_ask, state)  # int32[B, D]
    fitness = evaluate(population)                    # float[B], MAXIMISED
    state, metrics = strategy.tell(state, population, fitness)

Every function is jittable and usable inside ``jax.lax.scan`` and ``jax.vmap``; PRNG keys
are explicit first arguments. Fitness is **maximised** (accuracy-like values); a NaN
fitness is treated as the worst value, ``-inf``, so it never becomes the best.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace

State = Any  # a pytree; every strategy's state has a ``best: BestSoFar`` field


class Strategy(NamedTuple):
    """An ask/tell search strategy: pure functions over a pytree state.

    Fitness is MAXIMISED (accuracy-like); NaN fitness counts as ``-inf`` (the worst).
    Every state has a ``best`` field holding a :class:`BestSoFar`.

    Attributes:
      init: ``init(key) -> state``.
      ask: ``ask(key, state) -> (population int32[B, D], state)``.
      tell: ``tell(state, population int32[B, D], fitness float[B]) -> (state, metrics)``;
        ``metrics`` holds at least ``best_fitness``, ``mean_fitness`` (NaN-safe mean of
        the told batch) and ``num_evaluated`` (scalars).
      batch_size: ``B``, the number of candidates returned by one ``ask``.
    """

    init: Callable[[jax.Array], State]
    ask: Callable[[jax.Array, State], tuple[jax.Array, State]]
    tell: Callable[[State, jax.Array, jax.Array], tuple[State, dict[str, jax.Array]]]
    batch_size: int


def sanitize_fitness(fitness: jax.Array) -> jax.Array:
    """Returns ``fitness`` as ``float32`` with NaN replaced by ``-inf`` (the worst value).

    Fitness is maximised, so ``-inf`` never wins a comparison against a real value.
    """
    fitness = jnp.asarray(fitness, jnp.float32)
    return jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)


@struct.dataclass
class BestSoFar:
    """The fittest genotype told so far (fitness MAXIMISED; NaN counts as ``-inf``).

    Attributes:
      genotype: ``int32[D]``; all ``-1`` (an invalid genotype) until a told member has a
        fitness above ``-inf``.
      fitness: ``float32[]``; ``-inf`` until then.
      num_evaluated: ``int32[]``, the number of genotypes told, NaN ones included.
    """

    genotype: jax.Array
    fitness: jax.Array
    num_evaluated: jax.Array

    @classmethod
    def create(cls, space: SearchSpace) -> BestSoFar:
        """An empty record for genotypes of ``space``."""
        return cls(
            genotype=jnp.full((space.num_decisions,), -1, jnp.int32),
            fitness=jnp.array(-jnp.inf, jnp.float32),
            num_evaluated=jnp.array(0, jnp.int32),
        )

    def update(self, population: jax.Array, fitness: jax.Array) -> BestSoFar:
        """Folds in a told batch ``int32[B, D]`` with fitness ``float[B]`` (maximised).

        The record changes only on a strictly better fitness, so ties keep the earlier
        genotype and NaN (treated as ``-inf``) never becomes the best.
        """
        fitness = sanitize_fitness(fitness)
        i = jnp.argmax(fitness)
        better = fitness[i] > self.fitness
        return BestSoFar(
            genotype=jnp.where(better, jnp.asarray(population, jnp.int32)[i], self.genotype),
            fitness=jnp.where(better, fitness[i], self.fitness),
            num_evaluated=self.num_evaluated + fitness.shape[0],
        )


def tell_metrics(best: BestSoFar, fitness: jax.Array) -> dict[str, jax.Array]:
    """The metrics every ``tell`` returns, after ``best`` has absorbed the batch.

    Returns:
      ``best_fitness`` (best so far, maximised), ``mean_fitness`` (mean of the batch's
      non-NaN values; NaN if all are NaN), ``batch_best_fitness`` (max of the batch, NaN
      counted as ``-inf``), ``num_nan`` (NaN entries in the batch) and ``num_evaluated``.
    """
    raw = jnp.asarray(fitness, jnp.float32)
    return {
        "best_fitness": best.fitness,
        "mean_fitness": jnp.nanmean(raw),
        "batch_best_fitness": jnp.max(sanitize_fitness(raw)),
        "num_nan": jnp.sum(jnp.isnan(raw)).astype(jnp.int32),
        "num_evaluated": best.num_evaluated,
    }


def check_told(space: SearchSpace, population: jax.Array, fitness: jax.Array) -> None:
    """Trace-time check that a told batch is ``int32[B, D]``, ``B >= 1``, with fitness ``float[B]``.

    Raises:
      NasjaxError: naming the shapes given and the shapes expected.
    """
    pop_shape, fit_shape = jnp.shape(population), jnp.shape(fitness)
    d = space.num_decisions
    ok = len(pop_shape) == 2 and pop_shape[0] >= 1 and pop_shape[1] == d
    if not ok or fit_shape != pop_shape[:1]:
        raise NasjaxError(
            f"tell expects population of shape (B, {d}) with B >= 1 and fitness of shape (B,); "
            f"got population {pop_shape} and fitness {fit_shape}"
        )


def check_positive_int(what: str, value: object) -> int:
    """Factory-time check that a hyper-parameter is an integer ``>= 1``.

    Raises:
      NasjaxError: naming the parameter and the bad value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NasjaxError(f"{what} must be an integer >= 1, got {value!r}")
    return value
