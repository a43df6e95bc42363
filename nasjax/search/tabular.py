"""A whole simulated NAS-Bench-201 search inside one ``jit`` (the protocol of Table 5).

NAS-Bench-201 (Dong & Yang, ICLR 2020) trained all 15,625 cells of its space; a search
over it is a sequence of table look-ups (:mod:`nasjax.evaluation.tabular`) charged a
*simulated* training time:

* the reward of a query is the 12-epoch validation accuracy (``hp=12``),
* each query costs the 12-epoch training time ``c10valid_train_time_s_200ep * 12 / 200``,
* the search stops when the simulated budget (12,000 s) runs out: a query counts only if
  the clock after paying its cost is still ``<= budget``,
* the result is the 200-epoch test accuracy of the best-reward architecture.

One search is a ``while_loop`` of ``batch_size=1`` ask/tell steps (:func:`simulate`);
:func:`run_seeds` runs many side by side in one compiled call (one loop over time, every
seed a lane of each step), and :func:`run_datasets` over seeds and datasets (the datasets
are other columns of the same table, so one strategy's whole row of Table 5 is one
program, compiled once). Accuracies are percentages and are
MAXIMISED.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError, check_choice
from nasjax.evaluation.tabular import DATASETS, NB201Table
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies.base import Strategy

DEFAULT_BUDGET_S = 12000.0
CURVE_POINTS = 101
BYTES_PER_QUERY = 40
"""Memory per seed and possible query of :func:`run_seeds` and :func:`query_table` (XLA's
memory analysis on CPU: 28.5-30.1 B for REA, random search and REINFORCE at 20,000 and
100,000 seeds)."""
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
"""XLA:CPU's loop emitters instead of its fusion emitters for the programs of
:func:`run_seeds` and :func:`run_datasets`: ~90 small kernels, each its own LLVM module,
compile ~40 % faster (REA over 500 seeds: 0.69 s -> 0.45 s of XLA on the 2-core CPU;
random search 0.61 -> 0.37 s) and run as fast (REA, random search) or ~20 % slower
(REINFORCE). Other backends ignore the option. JAX takes compiler options only on an
outermost ``jit``, so those two are top-level calls; :func:`simulate` and
:func:`query_table`, which users nest in their own programs, do without."""


def max_queries_for(budget_s: float, min_cost: float) -> int:
    """A step limit that always outlasts the budget: ``ceil(budget / min_cost) + 1``.

    Every query costs at least ``min_cost > 0``, so after this many queries the clock is
    past the budget; :func:`simulate` counts no query beyond it.
    """
    if not min_cost > 0:
        raise NasjaxError(f"every query must cost > 0 s, got a minimum cost of {min_cost}")
    return max(1, math.ceil(budget_s / min_cost) + 1)


def seed_bytes(budget_s: float, min_cost: float) -> int:
    """Bytes one seed of :func:`run_seeds` holds (its possible queries times
    :data:`BYTES_PER_QUERY`): check ``seeds * seed_bytes`` fits before a huge ``--seeds``
    allocates for minutes."""
    return max_queries_for(budget_s, min_cost) * BYTES_PER_QUERY


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

    Ask/tell steps of one genotype each run in a ``while_loop`` that stops once the budget
    has run out (at most ``max_queries`` steps); a query is counted (told to the strategy)
    only while the clock after paying its cost is still ``<= budget_s``, and the search
    stops for good at the first query that does not fit.
    Choose ``max_queries >= max_queries_for(budget_s, min cost)`` so the budget, not the
    step limit, ends the search.

    Args:
      strategy: a ``batch_size=1`` strategy (static); fitness = ``reward``, maximised.
      reward, test, cost: ``float[N]`` rows indexed by ``NB201Space().to_index(g)``.
      key: PRNG key of this search.
      budget_s: simulated budget in seconds.
      max_queries: most steps (static).
      num_points: points of the returned time grid ``linspace(0, budget_s)`` (static).

    Returns:
      ``test_acc`` (200-ep test accuracy of the best-reward counted query; NaN if none),
      ``best_reward``, ``num_queries``, ``time_s`` (clock at the end), ``exhausted``
      (whether the budget, not the step limit, stopped the search), ``time_grid`` and
      ``curve`` (best-so-far test accuracy at each grid time; NaN before the first query).
    """
    out = _search_lanes(
        strategy,
        jnp.asarray(reward)[None],
        jnp.asarray(test)[None],
        cost,
        jnp.asarray(key)[None],
        jnp.zeros((1,), jnp.int32),
        budget_s,
        max_queries=max_queries,
        num_points=num_points,
    )
    return jax.tree.map(lambda x: x[0], out)


def _search_lanes(
    strategy: Strategy,
    reward: jax.Array,
    test: jax.Array,
    cost: jax.Array,
    keys: jax.Array,
    rows: jax.Array,
    budget_s: float,
    *,
    max_queries: int,
    num_points: int = CURVE_POINTS,
) -> dict[str, jax.Array]:
    """:func:`simulate` for ``L`` searches side by side: lane ``i`` searches row
    ``rows[i]`` of ``reward, test [K, N]`` with key ``keys[i]``.

    The loop runs over time with every lane inside one step (``vmap`` of the step, not of
    the loop): the ``while_loop`` ends when no lane has budget left, and a lane whose
    search has ended keeps stepping without counting (every output is gated by its
    ``fits``), so each lane computes exactly its own search. Vmapping the loop instead
    makes JAX select every lane's whole carry at every step (and trace the loop once per
    vmap level): a larger program, slower to trace, compile and run.
    """
    if strategy.batch_size != 1:
        raise NasjaxError(f"simulate needs a strategy with batch_size=1, got {strategy.batch_size}")
    space = NB201Space()
    lanes = keys.shape[0]

    def lane_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        key_init, key_run = jax.random.split(key)
        return key_init, jax.random.split(key_run, max_queries)

    key_init, step_keys = jax.vmap(lane_keys)(keys)
    step_keys = step_keys.T  # [max_queries, lanes]
    budget_s = jnp.asarray(budget_s, jnp.float32)

    def lane_step(carry: tuple, key: jax.Array, row: jax.Array) -> tuple:
        state, clock, active, best_r, best_t, count = carry
        population, asked = strategy.ask(key, state)
        code = space.to_index(population[0])
        r, t, c = reward[row, code], test[row, code], cost[code]
        fits = active & (clock + c <= budget_s)
        # Once a query does not fit, the search is over: later states never reach the
        # outputs (all gated by ``fits``), so the told state needs no select.
        state, _ = strategy.tell(asked, population, r[None])
        better = fits & (jnp.where(jnp.isnan(r), -jnp.inf, r) > best_r)
        return (
            state,
            jnp.where(fits, clock + c, clock),
            fits,
            jnp.where(better, r, best_r),
            jnp.where(better, t, best_t),
            count + fits.astype(jnp.int32),
        )

    # ~100 queries fit 12,000 s while max_queries covers the cheapest-possible case: the
    # loop stops once no lane has budget left.
    def more(loop: tuple) -> jax.Array:
        carry, step, _, _ = loop
        return (step < max_queries) & jnp.any(carry[2])

    def one_step(loop: tuple) -> tuple:
        carry, step, clocks, tests = loop
        carry = jax.vmap(lane_step)(carry, step_keys[step], rows)
        return carry, step + 1, clocks.at[step].set(carry[1]), tests.at[step].set(carry[4])

    init = (
        jax.vmap(strategy.init)(key_init),
        jnp.zeros((lanes,), jnp.float32),
        jnp.ones((lanes,), bool),
        jnp.full((lanes,), -jnp.inf, jnp.float32),
        jnp.full((lanes,), jnp.nan, jnp.float32),
        jnp.zeros((lanes,), jnp.int32),
    )
    clocks = jnp.full((max_queries, lanes), jnp.inf, jnp.float32)  # inf: never reached
    tests = jnp.full((max_queries, lanes), jnp.nan, jnp.float32)
    (_, clock, active, best_r, best_t, count), _, clocks, tests = jax.lax.while_loop(
        more, one_step, (init, jnp.int32(0), clocks, tests)
    )
    clocks, tests = clocks.T, tests.T
    grid = jnp.linspace(0.0, budget_s, num_points)
    last = jax.vmap(partial(jnp.searchsorted, side="right"), in_axes=(0, None))(clocks, grid) - 1
    curve = jnp.where(last >= 0, jnp.take_along_axis(tests, jnp.maximum(last, 0), axis=1), jnp.nan)
    return {
        "test_acc": best_t,
        "best_reward": best_r,
        "num_queries": count,
        "time_s": clock,
        "exhausted": ~active,
        "time_grid": jnp.broadcast_to(grid, (lanes, num_points)),
        "curve": curve,
    }


def run_seeds(
    strategy: Strategy,
    table: NB201Table,
    dataset: str,
    keys: jax.Array,
    budget_s: float = DEFAULT_BUDGET_S,
    max_queries: int | None = None,
    num_seeds: int | None = None,
) -> dict[str, jax.Array]:
    """:func:`simulate` for every key of ``keys`` (``[S]`` keys) in one compiled program (a
    top-level call: not inside ``jit``, see :data:`COMPILER_OPTIONS`).

    Args:
      strategy: a ``batch_size=1`` strategy.
      table: from :func:`nasjax.evaluation.tabular.load_nb201`.
      dataset: one of :data:`nasjax.evaluation.tabular.DATASETS`.
      keys: ``[S]`` PRNG keys, one search each; or, with ``num_seeds``, one key.
      budget_s: simulated budget in seconds (``> 0``).
      max_queries: most steps; default :func:`max_queries_for` of the budget.
      num_seeds: split the one key of ``keys`` into this many inside the compiled program:
        the searches of ``jax.random.split(keys, num_seeds)``, without compiling the split
        as a program of its own (~0.1 s of a first call on a CPU).

    Returns:
      :func:`simulate`'s outputs with a leading seed axis ``S``.
    """
    check_choice("dataset", dataset, DATASETS)
    return _run(strategy, table, keys, budget_s, max_queries, num_seeds, DATASETS.index(dataset))


def run_datasets(
    strategy: Strategy,
    table: NB201Table,
    keys: jax.Array,
    budget_s: float = DEFAULT_BUDGET_S,
    max_queries: int | None = None,
    num_seeds: int | None = None,
) -> dict[str, jax.Array]:
    """:func:`simulate` for every dataset of ``DATASETS`` and every key, in one compiled
    program (a top-level call, as :func:`run_seeds`).

    Args:
      strategy: a ``batch_size=1`` strategy.
      table: from :func:`nasjax.evaluation.tabular.load_nb201`.
      keys: ``[len(DATASETS), S]`` PRNG keys: row ``k`` are the searches on ``DATASETS[k]``;
        or, with ``num_seeds``, ``[len(DATASETS)]`` keys, one per dataset.
      budget_s: simulated budget in seconds (``> 0``).
      max_queries: most steps; default :func:`max_queries_for` of the budget.
      num_seeds: split each dataset's key into this many inside the compiled program, as
        :func:`run_seeds` does.

    Returns:
      :func:`simulate`'s outputs with leading axes ``[len(DATASETS), S]``; row ``k`` equals
      ``run_seeds(strategy, table, DATASETS[k], keys[k], num_seeds=num_seeds)``.
    """
    return _run(strategy, table, keys, budget_s, max_queries, num_seeds, None)


def _run(
    strategy: Strategy,
    table: NB201Table,
    keys: jax.Array,
    budget_s: float,
    max_queries: int | None,
    num_seeds: int | None,
    dataset: int | None,
) -> dict[str, jax.Array]:
    """Checks the keys (``[S]``, or ``[len(DATASETS), S]`` when ``dataset`` is ``None``;
    without the seed axis with ``num_seeds``) and runs the searches."""
    if dataset is None:
        batch, what = (len(DATASETS),), f"one key per dataset of {', '.join(DATASETS)}"
    else:
        batch, what = (), "one key"
    shape = tuple(jnp.shape(keys))
    if num_seeds is not None:
        if not (isinstance(num_seeds, int) and num_seeds > 0):
            raise NasjaxError(f"num_seeds must be a positive int, got {num_seeds!r}")
        if shape != batch:
            raise NasjaxError(f"with num_seeds, keys must be {what} (shape {batch}); got {shape}")
    elif len(shape) != len(batch) + 1 or shape[:-1] != batch:
        shown = "(" + ", ".join([*map(str, batch), "seeds"]) + ")"
        raise NasjaxError(f"keys must have shape {shown}; got {shape}")
    return _searches(
        strategy,
        table.reward,
        table.test,
        table.cost,
        keys,
        budget_s,
        max_queries=_step_limit(table, budget_s, max_queries),
        dataset=dataset,
        num_seeds=num_seeds,
    )


def _step_limit(table: NB201Table, budget_s: float, max_queries: int | None) -> int:
    if not budget_s > 0:
        raise NasjaxError(f"budget must be > 0 seconds, got {budget_s}")
    return max_queries_for(budget_s, table.min_cost) if max_queries is None else max_queries


@partial(
    jax.jit,
    static_argnames=("strategy", "max_queries", "dataset", "num_seeds"),
    compiler_options=COMPILER_OPTIONS,
)
def _searches(
    strategy: Strategy,
    reward: jax.Array,
    test: jax.Array,
    cost: jax.Array,
    keys: jax.Array,
    budget_s: float,
    *,
    max_queries: int,
    dataset: int | None,
    num_seeds: int | None,
) -> dict[str, jax.Array]:
    """The searches of ``keys`` on the table's rows ``reward, test [K, N]``: ``[K, S]``
    keys on every row, or ``[S]`` keys on row ``dataset``; with ``num_seeds``, the keys
    without their seed axis, each split into ``num_seeds`` here."""
    if num_seeds is not None:
        split = partial(jax.random.split, num=num_seeds)
        keys = split(keys) if dataset is not None else jax.vmap(split)(keys)
    # Every search is a lane of one batch; lane i reads table row rows[i].
    batch, seeds = keys.shape[:-1], keys.shape[-1]
    if dataset is None:
        rows = jnp.repeat(jnp.arange(reward.shape[0], dtype=jnp.int32), seeds)
    else:
        rows = jnp.full((seeds,), dataset, jnp.int32)
    keys = keys.reshape(-1)
    out = _search_lanes(strategy, reward, test, cost, keys, rows, budget_s, max_queries=max_queries)
    return jax.tree.map(lambda x: x.reshape(batch + (seeds,) + x.shape[1:]), out)


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
