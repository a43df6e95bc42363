"""Regularized evolution guided by a zero-cost proxy: screen candidates before paying for them.

Zero-cost proxies (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021)
rank architectures at initialisation for the price of one forward/backward pass. Their
paper uses them to *warm up* search: the initial population of regularized evolution is
the top of a large proxy-scored random pool instead of random cells, and (optionally) each
child is the best-scored of several proposals. Only the chosen candidates are trained (or
queried), so a search with the same training budget evaluates better candidates.

:func:`proxy_guided_evolution` wraps :func:`nasjax.strategies.regularized_evolution`:

* ``init`` draws ``pool_size`` random cells, scores them with ``score_fn`` and keeps the
  ``population_size`` best (distinct) as the warm-up population;
* ``ask`` returns those cells, in order of score, while the population fills; afterwards
  it asks REA ``proposals`` times (independent tournaments and mutations) and keeps, per
  row, the proposal the proxy scores highest (``proposals=1`` is plain REA);
* ``tell`` is REA's.

``score_fn(genotypes int32[K, D]) -> float[K]`` must be jittable and is MAXIMISED (NaN
counts as the worst); for the NAS-Bench-201 table it is a look-up of precomputed scores by
dense code. Screening costs nothing here: callers that charge proxy time (simulated or
real) account for ``pool_size + proposals * (evaluations - population_size)`` scorings.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import BestSoFar, Strategy, check_positive_int, sanitize_fitness
from nasjax.strategies.evolution import EvolutionState, regularized_evolution

ScoreFn = Callable[[jax.Array], jax.Array]


@struct.dataclass
class ProxyGuidedState:
    """State of :func:`proxy_guided_evolution`.

    Attributes:
      evolution: the wrapped REA state (population, fitness, ``num_told``, ``best``).
      warm_up: ``int32[P, D]`` the proxy's top ``P`` of the screened pool, best first.
      warm_up_scores: ``float32[P]`` their proxy scores.
    """

    evolution: EvolutionState
    warm_up: jax.Array
    warm_up_scores: jax.Array

    @property
    def best(self) -> BestSoFar:
        """The best genotype told so far (as every strategy state has)."""
        return self.evolution.best


def proxy_guided_evolution(
    space: SearchSpace,
    score_fn: ScoreFn,
    population_size: int = 10,
    sample_size: int = 3,
    pool_size: int = 1000,
    proposals: int = 1,
    batch_size: int = 1,
) -> Strategy:
    """REA whose initial population is the top of a proxy-scored pool (Abdelfattah et al. 2021).

    Args:
      space: the search space.
      score_fn: ``int32[K, D] -> float[K]`` proxy score, maximised, jittable.
      population_size: REA's ``P`` (default 10, as NAS-Bench-201's REA).
      sample_size: REA's tournament size (default 3).
      pool_size: random cells screened for the warm-up population, ``>= P``.
      proposals: REA proposals screened per child (``1``: no screening after warm-up).
      batch_size: candidates per ``ask``.

    Returns:
      A :class:`Strategy` over :class:`ProxyGuidedState`.

    Raises:
      NasjaxError: naming the bad value if a hyper-parameter is out of range.
    """
    rea = regularized_evolution(space, population_size, sample_size, batch_size)
    pool_size = check_positive_int("pool_size", pool_size)
    proposals = check_positive_int("proposals", proposals)
    if pool_size < population_size:
        raise NasjaxError(
            f"pool_size must be >= population_size ({population_size}), got {pool_size}"
        )

    def score(genotypes: jax.Array) -> jax.Array:
        return sanitize_fitness(score_fn(genotypes))

    def init(key: jax.Array) -> ProxyGuidedState:
        key_pool, key_rea = jax.random.split(key)
        pool = space.sample(key_pool, pool_size)
        scores = score(pool)
        # Distinct cells only: a repeated code keeps its first copy's score, the rest -inf.
        codes = space.to_index(pool)
        first = jnp.argmax(codes[:, None] == codes[None, :], axis=1) == jnp.arange(pool_size)
        top_scores, top = jax.lax.top_k(jnp.where(first, scores, -jnp.inf), population_size)
        return ProxyGuidedState(
            evolution=rea.init(key_rea), warm_up=pool[top], warm_up_scores=top_scores
        )

    def ask(key: jax.Array, state: ProxyGuidedState) -> tuple[jax.Array, ProxyGuidedState]:
        keys = jax.random.split(key, proposals)
        candidates = jax.vmap(lambda k: rea.ask(k, state.evolution)[0])(keys)  # [R, B, D]
        flat = candidates.reshape(-1, space.num_decisions)
        scores = score(flat).reshape(proposals, batch_size)
        chosen = candidates[jnp.argmax(scores, axis=0), jnp.arange(batch_size)]
        slot = state.evolution.num_told + jnp.arange(batch_size)
        filling = slot < population_size
        warm = state.warm_up[jnp.minimum(slot, population_size - 1)]
        return jnp.where(filling[:, None], warm, chosen), state

    def tell(
        state: ProxyGuidedState, population: jax.Array, fitness: jax.Array
    ) -> tuple[ProxyGuidedState, dict[str, jax.Array]]:
        evolution, metrics = rea.tell(state.evolution, population, fitness)
        return state.replace(evolution=evolution), metrics

    return Strategy(init=init, ask=ask, tell=tell, batch_size=batch_size)
