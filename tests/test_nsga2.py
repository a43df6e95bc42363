"""Tests for nasjax.strategies.nsga2: breeding, elitist survival, errors, search under scan."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.pareto import front_recovery, pareto_mask
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import STRATEGIES, NSGA2State, make_strategy, nsga2

SPACE = NB201Space()  # ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3


def toy_objectives(population):
    """Two maximised objectives with a known front: capacity vs. parameter count.

    capacity = n3 + n1 / 2 and params = 9 n3 + n1 (n3, n1: number of 3x3 and 1x1 convs);
    the front is 13 points, capacity 0, 0.5, ..., 6 at the fewest parameters.
    """
    n3 = jnp.sum(population == 3, axis=-1)
    n1 = jnp.sum(population == 2, axis=-1)
    return jnp.stack([n3 + 0.5 * n1, -(9.0 * n3 + n1)], axis=-1).astype(jnp.float32)


@functools.cache
def true_front():
    """The toy front by brute force over all 15,625 cells (distinct objective vectors).

    Evaluated eagerly even when first called while tracing ``run`` under ``jit`` (the test
    order varies with the workers that run it)."""
    with jax.ensure_compile_time_eval():
        cells = SPACE.from_index(jnp.arange(SPACE.size))
        values = np.unique(np.asarray(toy_objectives(cells)), axis=0)
        return jnp.asarray(values[np.asarray(pareto_mask(jnp.asarray(values)))])


@functools.cache
def compiled(**kwargs):
    strategy = nsga2(SPACE, **kwargs)
    return strategy, jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)


def run(key, generations, population_size=20):
    """A whole NSGA-II search of the toy problem inside one lax.scan."""
    strategy = nsga2(SPACE, population_size=population_size)
    key_init, key_steps = jax.random.split(key)
    front = true_front()

    def step(state, k):
        population, state = strategy.ask(k, state)
        state, metrics = strategy.tell(state, population, toy_objectives(population))
        recovered = front_recovery(toy_objectives(state.population), front)
        return state, (population, metrics, recovered)

    keys = jax.random.split(key_steps, generations)
    return jax.lax.scan(step, strategy.init(key_init), keys)


@functools.cache
def run_seeds(generations):
    keys = jax.random.split(jax.random.key(0), 8)
    return jax.jit(jax.vmap(lambda k: run(k, generations)))(keys)


def test_true_front_is_the_expected_staircase():
    front = np.asarray(true_front())
    np.testing.assert_array_equal(front[:, 0], np.arange(13) / 2)
    params = [0, 1, 2, 3, 4, 5, 6, 14, 22, 30, 38, 46, 54]
    np.testing.assert_array_equal(front[:, 1], -np.asarray(params, np.float32))


def test_search_under_scan_vmap_recovers_front():
    state, (asks, metrics, recovered) = run_seeds(25)
    chex.assert_shape(asks, (8, 25, 20, 6))
    assert bool(jnp.all(SPACE.is_valid(asks)))
    initial, final = recovered[:, 0], recovered[:, -1]  # after the first (random) generation
    assert bool(jnp.all(final >= initial)), (initial, final)  # elitism never loses a point
    assert bool(jnp.all(jnp.diff(recovered, axis=1) >= 0))
    assert float(final.mean()) >= float(initial.mean()) + 0.4, (initial, final)
    assert float(final.mean()) >= 0.75
    # Metrics: objective 0 best-so-far, counts, and the size of the population's front.
    assert int(metrics["num_evaluated"][0, -1]) == 25 * 20
    best = jnp.max(toy_objectives(asks)[..., 0], axis=(1, 2))
    chex.assert_trees_all_equal(metrics["best_fitness"][:, -1], best)
    chex.assert_trees_all_equal(state.best.fitness, best)
    chex.assert_trees_all_equal(toy_objectives(state.best.genotype)[:, 0], best)
    front_size = jax.vmap(lambda p: jnp.sum(pareto_mask(toy_objectives(p))))(state.population)
    chex.assert_trees_all_equal(metrics["front_size"][:, -1], front_size.astype(jnp.int32))


@functools.cache
def run_small():
    return jax.jit(lambda k: run(k, 3, 8))


def test_same_key_same_result():
    first = run_small()(jax.random.key(5))
    again = run_small()(jax.random.key(5))
    other = run_small()(jax.random.key(6))
    chex.assert_trees_all_equal(first, again)
    assert not bool(jnp.array_equal(first[1][0], other[1][0]))


def test_first_ask_is_uniform_random():
    _, init, ask, _ = compiled(population_size=64)
    population, state = ask(jax.random.key(1), init(jax.random.key(0)))
    chex.assert_shape(population, (64, 6))
    chex.assert_type(population, jnp.int32)
    assert bool(jnp.all(SPACE.is_valid(population)))
    counts = np.bincount(np.asarray(population).ravel(), minlength=5)
    assert counts.min() > 40  # 384 draws over 5 ops: ~77 each
    assert isinstance(state, NSGA2State)


def test_elitist_survival_by_rank_then_crowding():
    _, init, _, tell = compiled(population_size=3)
    state = init(jax.random.key(0))
    genotypes = jnp.arange(18, dtype=jnp.int32).reshape(3, 6) % 5
    objectives = jnp.array([[0.0, 0.0], [1.0, 1.0], [jnp.nan, 5.0]])
    state, metrics = tell(state, genotypes, objectives)
    # All three survive the empty slots, sorted by rank: (1,1), (0,0), then the NaN row.
    chex.assert_trees_all_equal(state.population, genotypes[jnp.array([1, 0, 2])])
    chex.assert_trees_all_equal(state.rank, jnp.array([0, 1, 3], jnp.int32))
    assert int(metrics["num_nan"]) == 1 and int(metrics["front_size"]) == 1
    assert float(metrics["best_fitness"]) == 1.0
    # A staircase of three new points: with (1,1) they form a front of 4 > 3 slots; the
    # boundaries (inf crowding) survive, then the largest crowding distance.
    new = jnp.array([[0.0, 3.0], [2.0, 0.5], [3.0, 0.0]])
    state, metrics = tell(state, (genotypes + 1) % 5, new)
    # merged front 0: (1,1) (0,3) (2,0.5) (3,0); crowding: (1,1) -> 2/3 + 2.5/3, (2,.5) ->
    # 2/3 + 1/3: the survivors are both boundaries and (1,1).
    kept = {tuple(map(float, row)) for row in np.asarray(state.objectives)}
    assert kept == {(0.0, 3.0), (3.0, 0.0), (1.0, 1.0)}
    assert int(metrics["front_size"]) == 3 and int(metrics["num_evaluated"]) == 6
    assert float(metrics["best_fitness"]) == 3.0


def test_nan_rows_never_survive_valid_ones():
    _, init, ask, tell = compiled(population_size=3)
    state = init(jax.random.key(0))
    population, state = ask(jax.random.key(1), state)
    state, _ = tell(state, population, toy_objectives(population))
    before = state
    children, _ = ask(jax.random.key(2), state)
    state, metrics = tell(state, children, jnp.full((3, 2), jnp.nan))
    chex.assert_trees_all_equal(state.population, before.population)
    chex.assert_trees_all_equal(state.best, before.best.replace(num_evaluated=6))
    assert int(metrics["num_nan"]) == 3


@functools.cache
def vmapped_ask(**kwargs):
    return jax.jit(jax.vmap(nsga2(SPACE, population_size=4, **kwargs).ask, (0, None)))


def test_breeding_operators():
    _, init, _, tell = compiled(population_size=4)
    keys = jax.random.split(jax.random.key(3), 200)
    chain = jnp.array([[3.0, 3.0], [2.0, 2.0], [1.0, 1.0], [0.0, 0.0]])  # ranks 0, 1, 2, 3
    members = jnp.stack([jnp.full((6,), v, jnp.int32) for v in range(4)])
    state, _ = tell(init(keys[0]), members, chain)

    # Crossover always, no mutation: each decision from one of two tournament winners,
    # each winner member r with probability 7/16, 5/16, 3/16, 1/16 (two uniform draws).
    mixed = vmapped_ask(crossover_rate=1.0, mutation_rate=0.0)(keys, state)[0].reshape(-1, 6)
    assert bool(jnp.any(mixed != mixed[:, :1]))
    assert bool(jnp.all(jax.vmap(lambda c: jnp.sum(jnp.bincount(c, length=5) > 0))(mixed) <= 2))
    wins = np.bincount(np.asarray(mixed).ravel(), minlength=5) / mixed.size
    np.testing.assert_allclose(wins, np.array([7, 5, 3, 1, 0]) / 16, atol=0.03)

    # No crossover, every decision mutated: every decision leaves the parent's value,
    # uniformly among the four others.
    zeros, _ = tell(init(keys[0]), jnp.zeros((4, 6), jnp.int32), chain)
    mutants = vmapped_ask(crossover_rate=0.0, mutation_rate=1.0)(keys, zeros)[0]
    assert bool(jnp.all(mutants != 0)) and bool(jnp.all(SPACE.is_valid(mutants)))
    assert np.bincount(np.asarray(mutants).ravel(), minlength=5)[1:].min() > 1000

    # Default rate 1/D without crossover: one change expected per child, none forced.
    children = vmapped_ask(crossover_rate=0.0)(keys, zeros)[0].reshape(-1, 6)
    changed = np.asarray(jnp.sum(children != 0, axis=1))
    assert 0.8 < changed.mean() < 1.2
    assert 0.25 < np.mean(changed == 0) < 0.42  # (5/6) ** 6 = 0.33


def test_single_objective_accepts_scalar_fitness():
    _, init, ask, tell = compiled(population_size=3, num_objectives=1)
    population, state = ask(jax.random.key(0), init(jax.random.key(0)))
    state, metrics = tell(state, population, jnp.array([1.0, 3.0, 2.0]))
    assert float(metrics["best_fitness"]) == 3.0
    chex.assert_trees_all_equal(state.objectives[:, 0], jnp.array([3.0, 2.0, 1.0]))
    chex.assert_trees_all_equal(state.rank, jnp.array([0, 1, 2], jnp.int32))


def test_tell_rejects_bad_shapes():
    strategy = nsga2(SPACE, population_size=4)
    state = strategy.init(jax.random.key(0))
    with pytest.raises(NasjaxError, match=r"NSGA-II needs fitness of shape \(B, M\).*\(4,\)"):
        strategy.tell(state, jnp.zeros((4, 6), jnp.int32), jnp.zeros(4))
    with pytest.raises(NasjaxError, match=r"\(B, 6\).*\(B, 2\).*\(4, 5\) and fitness \(4, 2\)"):
        strategy.tell(state, jnp.zeros((4, 5), jnp.int32), jnp.zeros((4, 2)))
    with pytest.raises(NasjaxError, match=r"fitness \(4, 3\)"):
        strategy.tell(state, jnp.zeros((4, 6), jnp.int32), jnp.zeros((4, 3)))
    with pytest.raises(NasjaxError, match=r"fitness \(3, 2\)"):
        strategy.tell(state, jnp.zeros((4, 6), jnp.int32), jnp.zeros((3, 2)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"population_size": 0}, "population_size must be an integer >= 1, got 0"),
        ({"num_objectives": 1.5}, "num_objectives must be an integer >= 1, got 1.5"),
        ({"mutation_rate": 1.5}, r"mutation_rate must be a number in \[0, 1\], got 1.5"),
        ({"crossover_rate": -0.1}, r"crossover_rate must be a number in \[0, 1\], got -0.1"),
        ({"crossover_rate": "high"}, r"crossover_rate must be a number in \[0, 1\], got 'high'"),
    ],
)
def test_bad_hyper_parameters(kwargs, message):
    with pytest.raises(NasjaxError, match=message):
        make_strategy("nsga2", SPACE, **kwargs)


def test_registered():
    assert STRATEGIES["nsga2"] is nsga2
    strategy = make_strategy("nsga2", SPACE, population_size=6)
    assert strategy.batch_size == 6
    with pytest.raises(NasjaxError, match="batch_size.*'nsga2'.*population_size"):
        make_strategy("nsga2", SPACE, batch_size=4)
