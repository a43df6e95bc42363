"""Tests for nasjax.strategies: ask/tell shapes, determinism, jit, NaN handling, REA aging."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import (
    STRATEGIES,
    BestSoFar,
    Strategy,
    bananas,
    local_search,
    make_strategy,
    nsga2,
    random_search,
    regularized_evolution,
    reinforce,
)

SPACE = SearchSpace((5,) * 6)  # the NAS-Bench-201 shape
TARGET = jnp.array([1, 4, 0, 2, 3, 1], jnp.int32)
# Scalar-fitness strategies; NSGA-II (multi-objective, fitness [B, M]) is tested in test_nsga2.py.
NAMES = sorted(name for name in STRATEGIES if name != "nsga2")


def onemax(population, target=TARGET):
    """Synthetic unimodal fitness (maximised): decisions equal to a hidden target."""
    return jnp.sum(population == target, axis=-1).astype(jnp.float32)


@functools.cache
def cached(name, **kwargs):
    """One strategy per configuration, so tests share its compiled functions."""
    strategy = make_strategy(name, SPACE, **kwargs)
    return strategy, jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)


@functools.cache
def vmapped_ask(name, **kwargs):
    """``ask`` vmapped over keys (same state), jitted once per configuration."""
    return jax.jit(jax.vmap(cached(name, **kwargs)[0].ask, in_axes=(0, None)))


def run_rounds(name, key, rounds, jit=True, **kwargs):
    """Python loop of ask/tell on onemax; returns the asks, final state and last metrics."""
    strategy, init, ask, tell = cached(name, **kwargs)
    if not jit:
        init, ask, tell = strategy.init, strategy.ask, strategy.tell
    key_init, key = jax.random.split(key)
    state = init(key_init)
    asks, metrics = [], None
    for k in jax.random.split(key, rounds):
        population, state = ask(k, state)
        state, metrics = tell(state, population, onemax(population))
        asks.append(population)
    return jnp.stack(asks), state, metrics


def hamming(a, b):
    return jnp.sum(a != b, axis=-1)


def constant(value):
    return jnp.full((6,), value, jnp.int32)


# ------------------------------------------------------------------ every strategy


def test_registry_and_factories():
    assert STRATEGIES == {
        "random": random_search,
        "rea": regularized_evolution,
        "reinforce": reinforce,
        "nsga2": nsga2,
        "bananas": bananas,
        "local_search": local_search,
    }
    for name in NAMES:
        strategy = make_strategy(name, SPACE)
        assert isinstance(strategy, Strategy)
        assert strategy.batch_size == 1


@pytest.mark.parametrize("name", NAMES)
def test_ask_shapes_dtypes_validity(name):
    asks, state, metrics = run_rounds(name, jax.random.key(0), rounds=6, batch_size=4)
    chex.assert_shape(asks, (6, 4, SPACE.num_decisions))
    chex.assert_type(asks, jnp.int32)
    assert bool(jnp.all(SPACE.is_valid(asks)))
    assert {"best_fitness", "mean_fitness", "num_evaluated"} <= set(metrics)
    assert int(metrics["num_evaluated"]) == 24 == int(state.best.num_evaluated)
    assert float(metrics["best_fitness"]) == float(jnp.max(onemax(asks)))
    assert float(metrics["mean_fitness"]) == pytest.approx(float(jnp.mean(onemax(asks[-1]))))
    chex.assert_trees_all_equal(onemax(state.best.genotype), state.best.fitness)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_result(name):
    first = run_rounds(name, jax.random.key(7), rounds=6, batch_size=4)
    again = run_rounds(name, jax.random.key(7), rounds=6, batch_size=4)
    other = run_rounds(name, jax.random.key(8), rounds=6, batch_size=4)
    chex.assert_trees_all_equal(first, again)
    assert not bool(jnp.array_equal(first[0], other[0]))


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name):
    jitted = run_rounds(name, jax.random.key(3), rounds=4, batch_size=4)
    eager = run_rounds(name, jax.random.key(3), rounds=4, jit=False, batch_size=4)
    # Genotypes and counters exactly; float leaves (REINFORCE's Adam logits) to 1 ulp-ish.
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_nan_fitness_never_best(name):
    _, init, ask, tell = cached(name, batch_size=4)
    state = init(jax.random.key(0))
    population, state = ask(jax.random.key(1), state)
    nan = jnp.full((4,), jnp.nan)

    state, metrics = tell(state, population, nan)
    assert float(metrics["best_fitness"]) == -np.inf
    assert bool(jnp.isnan(metrics["mean_fitness"]))
    assert int(metrics["num_evaluated"]) == 4
    assert int(metrics["num_nan"]) == 4
    chex.assert_trees_all_equal(state.best.genotype, jnp.full((6,), -1, jnp.int32))

    fitness = jnp.array([jnp.nan, 0.25, jnp.nan, 0.75])
    state, metrics = tell(state, population, fitness)
    assert float(metrics["best_fitness"]) == 0.75
    assert float(metrics["mean_fitness"]) == 0.5
    assert int(metrics["num_evaluated"]) == 8
    chex.assert_trees_all_equal(state.best.genotype, population[3])

    state, metrics = tell(state, population[::-1], nan)
    assert float(metrics["best_fitness"]) == 0.75
    chex.assert_trees_all_equal(state.best.genotype, population[3])


@pytest.mark.parametrize("name", NAMES)
def test_tell_rejects_bad_shapes(name):
    strategy = cached(name, batch_size=4)[0]
    state = strategy.init(jax.random.key(0))
    with pytest.raises(NasjaxError, match=r"\(B, 6\).*\(2, 5\)"):
        strategy.tell(state, jnp.zeros((2, 5), jnp.int32), jnp.zeros((2,)))
    with pytest.raises(NasjaxError, match=r"fitness \(3,\)"):
        strategy.tell(state, jnp.zeros((2, 6), jnp.int32), jnp.zeros((3,)))


def test_best_so_far_keeps_earlier_on_ties():
    best = BestSoFar.create(SPACE)
    population = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 5
    best = best.update(population, jnp.array([1.0, 1.0]))
    chex.assert_trees_all_equal(best.genotype, population[0])
    best = best.update(population[::-1], jnp.array([1.0, 1.0]))
    chex.assert_trees_all_equal(best.genotype, population[0])


# ------------------------------------------------------------------ regularized evolution

BIG_TOURNAMENT = {"population_size": 5, "sample_size": 64}  # misses a member w.p. 0.8**64


def parents_of(children):
    """Which constant(v) each child came from: a mutant keeps five entries equal to v."""
    return jnp.argmax(jax.vmap(lambda c: jnp.bincount(c, length=5))(children), axis=1)


def test_rea_ring_buffer_ages_out_oldest():
    _, init, _, tell = cached("rea", **BIG_TOURNAMENT)
    state = init(jax.random.key(0))
    for value, fit in [(0, 10.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]:
        state, _ = tell(state, constant(value)[None], jnp.array([fit]))
    chex.assert_trees_all_equal(state.population, jnp.stack([constant(v) for v in range(5)]))
    # The fittest member is also the oldest: a new member pushes it out anyway.
    newcomer = jnp.array([0, 1, 0, 1, 0, 1], jnp.int32)
    state, metrics = tell(state, newcomer[None], jnp.array([0.0]))
    expected = jnp.stack([newcomer] + [constant(v) for v in range(1, 5)])
    chex.assert_trees_all_equal(state.population, expected)
    chex.assert_trees_all_equal(state.fitness, jnp.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert int(state.num_told) == 6
    assert float(metrics["best_fitness"]) == 10.0  # best-so-far still remembers it
    chex.assert_trees_all_equal(state.best.genotype, constant(0))
    # Tournaments now see only the survivors; the fittest (constant 4) wins them all.
    keys = jax.random.split(jax.random.key(1), 64)
    children, _ = vmapped_ask("rea", **BIG_TOURNAMENT)(keys, state)
    assert bool(jnp.all(hamming(children[:, 0], constant(4)) == 1))


def test_rea_ring_buffer_wraps_with_batches():
    strategy = regularized_evolution(SPACE, population_size=3, batch_size=2)
    state = strategy.init(jax.random.key(0))
    for values in [(0, 1), (2, 3), (4, 0)]:
        batch = jnp.stack([constant(v) for v in values])
        state, _ = strategy.tell(state, batch, jnp.zeros(2))
    # told order 0 1 2 3 4 0 -> slots hold the last three; the oldest is in slot 6 % 3 = 0
    chex.assert_trees_all_equal(state.population, jnp.stack([constant(v) for v in (3, 4, 0)]))
    with pytest.raises(NasjaxError, match="4 genotypes.*population_size \\(3\\)"):
        strategy.tell(state, jnp.zeros((4, 6), jnp.int32), jnp.zeros(4))


def test_rea_tournament_selects_fittest_of_sample():
    members = jnp.stack([constant(v) for v in range(5)])
    fitness = jnp.array([0.0, jnp.nan, 100.0, 3.0, 4.0])
    keys = jax.random.split(jax.random.key(4), 256)
    for kwargs in (BIG_TOURNAMENT, {"population_size": 5, "sample_size": 1}):
        strategy = cached("rea", **kwargs)[0]
        state, _ = strategy.tell(strategy.init(keys[0]), members, fitness)
        children, _ = vmapped_ask("rea", **kwargs)(keys, state)
        parents = parents_of(children[:, 0])
        if kwargs["sample_size"] > 1:  # the fittest is in every big tournament and wins
            assert bool(jnp.all(parents == 2))
        else:  # one contender: uniform parents, the NaN member included
            assert np.bincount(np.asarray(parents), minlength=5).min() > 25


def test_rea_random_rows_while_filling():
    _, init, ask, tell = cached("rea", batch_size=4)  # population_size 10
    keys = jax.random.split(jax.random.key(2), 16)
    state = init(jax.random.key(0))
    first = jnp.stack([ask(k, state)[0] for k in keys])
    assert float(jnp.mean(jnp.sum(first != 0, axis=-1))) > 3.5  # uniform: 4.8 expected
    # Eight identical members told; slots 8 and 9 are still empty (-1).
    state, _ = tell(state, jnp.zeros((4, 6), jnp.int32), jnp.zeros(4))
    state, _ = tell(state, jnp.zeros((4, 6), jnp.int32), jnp.zeros(4))
    rows = jnp.stack([ask(k, state)[0] for k in keys])
    assert bool(jnp.all(SPACE.is_valid(rows)))
    # rows 0, 1: 8 + i < 10, random; rows 2, 3: mutants of told members (never of -1 slots)
    assert float(jnp.mean(jnp.sum(rows[:, :2] != 0, axis=-1))) > 3.5
    assert bool(jnp.all(jnp.sum(rows[:, 2:] != 0, axis=-1) == 1))


def test_rea_children_one_decision_from_population():
    _, init, ask, tell = cached("rea", batch_size=4)  # population_size 10, sample_size 3
    state = init(jax.random.key(0))
    for key in jax.random.split(jax.random.key(5), 20):
        children, new_state = ask(key, state)
        chex.assert_trees_all_equal(new_state, state)  # ask leaves REA's state alone
        bred = int(state.num_told) + jnp.arange(4) >= 10  # rows past the random phase
        distance = hamming(children[:, None, :], state.population[None, :, :])
        assert bool(jnp.all(jnp.any(distance == 1, axis=1) | ~bred))
        state, _ = tell(state, children, onemax(children))
    assert int(state.num_told) == 80


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"population_size": 0}, "population_size must be an integer >= 1, got 0"),
        ({"population_size": 2.5}, "population_size must be an integer >= 1, got 2.5"),
        ({"sample_size": 0}, "sample_size must be an integer >= 1, got 0"),
        ({"batch_size": -1}, "batch_size must be an integer >= 1, got -1"),
        ({"batch_size": 11}, r"batch_size must be <= population_size \(10\), got 11"),
        ({"mutation": "node_edge"}, "unknown mutation 'node_edge'; valid choices: uniform$"),
    ],
)
def test_rea_bad_hyper_parameters(kwargs, message):
    with pytest.raises(NasjaxError, match=message):
        make_strategy("rea", SPACE, **kwargs)


def test_node_edge_mutation_picks_a_node_then_one_of_its_incoming_edges():
    """NAS-Bench-201's reference rule: node 1, 2 or 3 uniformly, then an incoming edge, so
    edge 0->1 (node 1's only edge) is mutated 1/3 of the time, each of node 3's 1/9."""
    space = NB201Space()
    weights = space.mutation_weights("node_edge")
    np.testing.assert_allclose(weights, [1 / 3, 1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9])
    np.testing.assert_allclose(space.mutation_weights("uniform"), np.full(6, 1 / 6))
    parents = jnp.zeros((30_000, 6), jnp.int32)
    children = np.asarray(
        jax.jit(space.mutate, static_argnums=2)(jax.random.key(0), parents, "node_edge")
    )
    changed = children != 0
    assert np.all(changed.sum(axis=1) == 1)  # exactly one edge, to a different op
    # 4 standard errors of a binomial frequency at n = 30,000 are below 0.011
    np.testing.assert_allclose(changed.mean(axis=0), weights, atol=0.011)
    rea = make_strategy("rea", space, mutation="node_edge")
    state = rea.init(jax.random.key(1))
    for _ in range(10):  # a full population of the all-zero cell: every child is bred
        state, _ = rea.tell(state, jnp.zeros((1, 6), jnp.int32), jnp.ones(1))
    for key in jax.random.split(jax.random.key(2), 10):
        child, _ = rea.ask(key, state)
        assert int(jnp.sum(child != 0)) == 1


def test_random_search_bad_batch_size():
    with pytest.raises(NasjaxError, match="batch_size must be an integer >= 1, got 0"):
        random_search(SPACE, batch_size=0)


# ------------------------------------------------------------------ registry errors


def test_unknown_strategy_name():
    with pytest.raises(NasjaxError, match="unknown strategy 'bogus'; valid choices: random, rea"):
        make_strategy("bogus", SPACE)


def test_unknown_hyper_parameter():
    with pytest.raises(NasjaxError, match="population_size.*'random'.*batch_size"):
        make_strategy("random", SPACE, population_size=3)


# ------------------------------------------------------------------ whole search under scan


def search(strategy, key, num_evaluations):
    """A whole search of a hidden-target onemax landscape inside one lax.scan."""
    key_target, key_init, key_steps = jax.random.split(key, 3)
    target = SPACE.sample(key_target, 1)[0]

    def step(state, k):
        population, state = strategy.ask(k, state)
        state, metrics = strategy.tell(state, population, onemax(population, target))
        return state, metrics["best_fitness"]

    steps = jax.random.split(key_steps, num_evaluations // strategy.batch_size)
    state, trace = jax.lax.scan(step, strategy.init(key_init), steps)
    return state.best.fitness, trace


def test_search_under_scan_rea_beats_random_and_finds_optimum():
    keys = jax.random.split(jax.random.key(42), 16)  # 16 seeds, each its own target

    def search_seeds(strategy, num_evaluations):
        return jax.jit(jax.vmap(lambda k: search(strategy, k, num_evaluations)))(keys)

    random_best, _ = search_seeds(make_strategy("random", SPACE), 300)
    # onemax is tie-heavy (integer fitness 0..6); a larger population and tournament than
    # NB201's 10/3 keep plateau members alive long enough to find the optimum reliably.
    rea = make_strategy("rea", SPACE, population_size=20, sample_size=5, batch_size=2)
    rea_best, rea_trace = search_seeds(rea, 400)
    chex.assert_shape(rea_trace, (16, 200))
    assert bool(jnp.all(jnp.diff(rea_trace, axis=1) >= 0))  # best-so-far never decreases
    assert int(jnp.sum(rea_best == 6)) >= 15, rea_best  # of 16 seeds, within 400 evaluations
    # random search averages ~4.4 of 6 after 300 of the 15,625 genotypes
    rea_best_at_300 = rea_trace[:, 300 // 2 - 1]
    assert float(rea_best_at_300.mean()) >= float(random_best.mean()) + 0.75
