"""A whole simulated NAS-Bench-201 search inside one ``jit`` (the protocol of Table 5).

NAS-Bench-201 (Dong & Yang, ICLR 2020) trained all 15,625 cells of its space; a search
over it is a sequence of table look-ups (:mod:`nasjax.evaluation.tabular`) charged a
*simulated* training time:

* the reward of a query is the 12-epoch validation accuracy (``hp=12``),
* each query costs the 12-epoch training time ``c10valid_train_time_s_200ep * 12 / 200``,
* the search stops when the simulated budget (12,000 s) runs out: a query counts only if
  the clock after paying its cost is still ``<= budget``,
* the result is the 200-epoch test accuracy of the best-reward architecture.

One search is a ``lax.scan`` of ``batch_size=1`` ask/tell steps (:func:`simulate`);
:func:`run_seeds` vmaps it over seeds in one compiled call, and :func:`run_datasets` over
seeds and datasets (the datasets are other columns of the same table, so one strategy's
whole row of Table 5 is one program, compiled once). Accuracies are percentages and are
MAXIMISED.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.evaluation.tabular import DATASETS, NB201Table
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies.base import Strategy

DEFAULT_BUDGET_S = 12000.0
CURVE_POINTS = 101
QUERY_BLOCK = 16  # queries per scan block between budget checks
BYTES_PER_QUERY = 40
"""Memory per seed and scanned query of :func:`run_seeds` and :func:`query_table` (measured
on CPU: 35-37 B for REA, random search and REINFORCE at 20,000 and 100,000 seeds)."""


def max_queries_for(budget_s: float, min_cost: float) -> int:
    """Scan length that always outlasts the budget: ``ceil(budget / min_cost) + 1``.

    Every query costs at least ``min_cost > 0``, so after this many queries the clock is
    past the budget; :func:`simulate` counts no query beyond it.
    """
    if not min_cost > 0:
        raise NasjaxError(f"every query must cost > 0 s, got a minimum cost of {min_cost}")
    return max(1, math.ceil(budget_s / min_cost) + 1)


def seed_bytes(budget_s: float, min_cost: float) -> int:
    """Bytes one seed of :func:`run_seeds` holds (its scanned queries, rounded up to whole
    blocks, times :data:`BYTES_PER_QUERY`): check ``seeds * seed_bytes`` fits before a
    huge ``--seeds`` allocates for minutes."""
    queries = -(-max_queries_for(budget_s, min_cost) // QUERY_BLOCK) * QUERY_BLOCK
    return queries * BYTES_PER_QUERY


@partial(jax.jit, static_argnames=("strategy", "max_queries", "num_points"))
def simulate(
    strategy: Strategy,
    reward: jax.Array,
    test: jax.Array,
    cost: jax.Array,
    key: jax.Array,
    budget_s: float = DEFAULT_BUDGET_S,
    *,
    max_queries: int,
    num_points: int = CURVE_POINTS,
) -> dict[str, jax.Array]:
    """One black-box search on the table under a simulated clock (pure, jittable).

    Ask/tell steps of one genotype each run in ``lax.scan`` blocks of ``QUERY_BLOCK``
    inside a ``while_loop`` that stops once the budget has run out (at most
    ``max_queries``, rounded up to whole blocks); a query is counted (told to the strategy)
    only while the clock after paying its cost is still ``<= budget_s``, and the search
    stops for good at the first query that does not fit.
    Choose ``max_queries >= max_queries_for(budget_s, min cost)`` so the budget, not the
    scan, ends the search.

    Args:
      strategy: a ``batch_size=1`` strategy (static); fitness = ``reward``, maximised.
      reward, test, cost: ``float[N]`` rows indexed by ``NB201Space().to_index(g)``.
      key: PRNG key of this search.
      budget_s: simulated budget in seconds.
      max_queries: scan length (static).
      num_points: points of the returned time grid ``linspace(0, budget_s)`` (static).

    Returns:
      ``test_acc`` (200-ep test accuracy of the best-reward counted query; NaN if none),
      ``best_reward``, ``num_queries``, ``time_s`` (clock at the end), ``exhausted``
      (whether the budget, not the scan, stopped the search), ``time_grid`` and
      ``curve`` (best-so-far test accuracy at each grid time; NaN before the first query).
    """
    if strategy.batch_size != 1:
        raise NasjaxError(f"simulate needs a strategy with batch_size=1, got {strategy.batch_size}")
    space = NB201Space()
    key_init, key_run = jax.random.split(key)
    budget_s = jnp.asarray(budget_s, jnp.float32)

    def step(carry: tuple, key_step: jax.Array) -> tuple[tuple, tuple]:
        state, clock, active, best_r, best_t, count = carry
        population, asked = strategy.ask(key_step, state)
        code = space.to_index(population[0])
        r, t, c = reward[code], test[code], cost[code]
        fits = active & (clock + c <= budget_s)
        # Once a query does not fit, the search is over: later states never reach the
        # outputs (all gated by ``fits``), so the told state needs no select.
        state, _ = strategy.tell(asked, population, r[None])
        better = fits & (jnp.where(jnp.isnan(r), -jnp.inf, r) > best_r)
        carry = (
            state,
            jnp.where(fits, clock + c, clock),
            fits,
            jnp.where(better, r, best_r),
            jnp.where(better, t, best_t),
            count + fits.astype(jnp.int32),
        )
        return carry, (carry[1], carry[4])

    init = (
        strategy.init(key_init),
        jnp.zeros((), jnp.float32),
        jnp.array(True),
        jnp.array(-jnp.inf, jnp.float32),
        jnp.array(jnp.nan, jnp.float32),
        jnp.zeros((), jnp.int32),
    )
    # Blocks of scan steps inside a while loop that ends once the budget has run out: about
    # 100 queries fit 12,000 s, while max_queries must cover the cheapest-possible case.
    num_blocks = -(-max_queries // QUERY_BLOCK)
    keys = jax.random.split(key_run, num_blocks * QUERY_BLOCK).reshape(num_blocks, QUERY_BLOCK)
    clocks = jnp.full((num_blocks, QUERY_BLOCK), jnp.inf, jnp.float32)  # inf: never reached
    tests = jnp.full((num_blocks, QUERY_BLOCK), jnp.nan, jnp.float32)

    def more(loop: tuple) -> jax.Array:
        carry, block, _, _ = loop
        return (block < num_blocks) & carry[2]

    def run_block(loop: tuple) -> tuple:
        carry, block, clocks, tests = loop
        carry, (block_clocks, block_tests) = jax.lax.scan(step, carry, keys[block])
        return (
            carry,
            block + 1,
            clocks.at[block].set(block_clocks),
            tests.at[block].set(block_tests),
        )

    (_, clock, active, best_r, best_t, count), _, clocks, tests = jax.lax.while_loop(
        more, run_block, (init, jnp.int32(0), clocks, tests)
    )
    clocks, tests = clocks.reshape(-1), tests.reshape(-1)
    grid = jnp.linspace(0.0, budget_s, num_points)
    last = jnp.searchsorted(clocks, grid, side="right") - 1
    curve = jnp.where(last >= 0, tests[jnp.maximum(last, 0)], jnp.nan)
    return {
        "test_acc": best_t,
        "best_reward": best_r,
        "num_queries": count,
        "time_s": clock,
        "exhausted": ~active,
        "time_grid": grid,
        "curve": curve,
    }


def run_seeds(
    strategy: Strategy,
    table: NB201Table,
    dataset: str,
    keys: jax.Array,
    budget_s: float = DEFAULT_BUDGET_S,
    max_queries: int | None = None,
) -> dict[str, jax.Array]:
    """:func:`simulate` for every key of ``keys`` (``[S]`` keys) in one ``jit(vmap)``.

    Args:
      strategy: a ``batch_size=1`` strategy.
      table: from :func:`nasjax.evaluation.tabular.load_nb201`.
      dataset: one of :data:`nasjax.evaluation.tabular.DATASETS`.
      keys: ``[S]`` PRNG keys, one search each.
      budget_s: simulated budget in seconds (``> 0``).
      max_queries: scan length; default :func:`max_queries_for` of the budget.

    Returns:
      :func:`simulate`'s outputs with a leading seed axis ``S``.
    """
    reward, test, cost = table.arrays(dataset)
    max_queries = _scan_length(table, budget_s, max_queries)
    return _searches(
        strategy, reward, test, cost, keys, budget_s, max_queries=max_queries, one_dataset=True
    )


def run_datasets(
    strategy: Strategy,
    table: NB201Table,
    keys: jax.Array,
    budget_s: float = DEFAULT_BUDGET_S,
    max_queries: int | None = None,
) -> dict[str, jax.Array]:
    """:func:`simulate` for every dataset of ``DATASETS`` and every key, in one ``jit``.

    Args:
      strategy: a ``batch_size=1`` strategy.
      table: from :func:`nasjax.evaluation.tabular.load_nb201`.
      keys: ``[len(DATASETS), S]`` PRNG keys: row ``k`` are the searches on ``DATASETS[k]``.
      budget_s: simulated budget in seconds (``> 0``).
      max_queries: scan length; default :func:`max_queries_for` of the budget.

    Returns:
      :func:`simulate`'s outputs with leading axes ``[len(DATASETS), S]``; row ``k`` equals
      ``run_seeds(strategy, table, DATASETS[k], keys[k])``.
    """
    if jnp.shape(keys)[:1] != (len(DATASETS),):
        raise NasjaxError(
            f"keys must have shape ({len(DATASETS)}, seeds), one row per dataset of "
            f"{', '.join(DATASETS)}; got {jnp.shape(keys)}"
        )
    max_queries = _scan_length(table, budget_s, max_queries)
    return _searches(
        strategy,
        table.reward,
        table.test,
        table.cost,
        keys,
        budget_s,
        max_queries=max_queries,
        one_dataset=False,
    )


def _scan_length(table: NB201Table, budget_s: float, max_queries: int | None) -> int:
    if not budget_s > 0:
        raise NasjaxError(f"budget must be > 0 seconds, got {budget_s}")
    return max_queries_for(budget_s, table.min_cost) if max_queries is None else max_queries


@partial(jax.jit, static_argnames=("strategy", "max_queries", "one_dataset"))
def _searches(
    strategy: Strategy,
    reward: jax.Array,
    test: jax.Array,
    cost: jax.Array,
    keys: jax.Array,
    budget_s: float,
    *,
    max_queries: int,
    one_dataset: bool,
) -> dict[str, jax.Array]:
    """The searches of ``keys [K, S]`` on the rows ``reward, test [K, N]`` (``[S]`` and
    ``[N]`` with ``one_dataset``)."""
    if one_dataset:
        reward, test, keys = reward[None], test[None], keys[None]

    def one(reward_row: jax.Array, test_row: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        return simulate(
            strategy, reward_row, test_row, cost, key, budget_s, max_queries=max_queries
        )

    out = jax.vmap(jax.vmap(one, in_axes=(None, None, 0)))(reward, test, keys)
    return jax.tree.map(lambda x: x[0], out) if one_dataset else out


@partial(jax.jit, static_argnames=("strategy", "num_queries"))
def query_table(
    strategy: Strategy, told: jax.Array, key: jax.Array, *, num_queries: int
) -> jax.Array:
    """Runs ``strategy`` for ``num_queries`` table look-ups; returns the codes it queried.

    A fixed query budget (no simulated clock): ``ceil(num_queries / B)`` ask/tell rounds
    of the strategy's batch ``B`` in one ``lax.scan``; the first ``num_queries`` queries
    count. ``told`` is what the strategy is told per query: ``float[N]`` for a scalar
    (maximised) fitness, or ``float[N, M]`` for a multi-objective strategy such as
    NSGA-II (every column maximised; pass costs negated). Vmap it over keys (seeds) or
    over ``told`` (e.g. scalarisation weights).

    Returns:
      ``int32[num_queries]``: the dense codes (``NB201Space().to_index``) queried, in
      order; index any column of the table with them.
    """
    space = NB201Space()
    rounds = -(-num_queries // strategy.batch_size)
    key_init, key_run = jax.random.split(key)

    def step(state: Any, key_step: jax.Array) -> tuple[Any, jax.Array]:
        population, state = strategy.ask(key_step, state)
        codes = space.to_index(population)
        state, _ = strategy.tell(state, population, told[codes])
        return state, codes

    _, codes = jax.lax.scan(step, strategy.init(key_init), jax.random.split(key_run, rounds))
    return codes.reshape(-1)[:num_queries].astype(jnp.int32)
