"""Random search: every candidate is drawn uniformly from the space.

Bergstra & Bengio, "Random Search for Hyper-Parameter Optimization", JMLR 13, 2012. In
NAS it is the baseline every method must beat (Li & Talwalkar, UAI 2019; NAS-Bench-201).
"""

from __future__ import annotations

import jax
from flax import struct

from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import (
    BestSoFar,
    Strategy,
    check_positive_int,
    check_told,
    tell_metrics,
)


@struct.dataclass
class RandomSearchState:
    """State of :func:`random_search`: only the best-so-far record (fitness maximised)."""

    best: BestSoFar


def random_search(space: SearchSpace, batch_size: int = 1) -> Strategy:
    """Uniform random sampling of ``space`` (Bergstra & Bengio, 2012).

    Fitness is MAXIMISED (accuracy-like); NaN fitness is treated as ``-inf`` (the worst)
    and never becomes the best.

    Args:
      space: the search space.
      batch_size: number of candidates per ``ask`` (``>= 1``).

    Returns:
      A :class:`Strategy` whose ``ask`` returns ``int32[batch_size, D]`` uniform samples.

    Raises:
      NasjaxError: if ``batch_size`` is not an integer ``>= 1``.
    """
    batch_size = check_positive_int("batch_size", batch_size)

    def init(key: jax.Array) -> RandomSearchState:
        del key  # nothing random to initialise; kept for a uniform interface
        return RandomSearchState(best=BestSoFar.create(space))

    def ask(key: jax.Array, state: RandomSearchState) -> tuple[jax.Array, RandomSearchState]:
        return space.sample(key, batch_size), state

    def tell(
        state: RandomSearchState, population: jax.Array, fitness: jax.Array
    ) -> tuple[RandomSearchState, dict[str, jax.Array]]:
        check_told(space, population, fitness)
        best = state.best.update(population, fitness)
        return RandomSearchState(best=best), tell_metrics(best, fitness)

    return Strategy(init=init, ask=ask, tell=tell, batch_size=batch_size)
