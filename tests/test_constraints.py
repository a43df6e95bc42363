"""Tests for nasjax.strategies.constraints: penalised fitness, feasibility, bound checks."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import (
    check_bound_satisfiable,
    constrained_fitness,
    is_feasible,
    regularized_evolution,
)
from nasjax.strategies.constraints import violation

SPACE = NB201Space()  # ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
BOUNDS = jnp.array([20.0, 2.0])  # params <= 20, latency <= 2


def toy(population):
    """Objective (maximised) = n3 + n1 / 10; costs = (params 9 n3 + n1, latency n3+n1+np).

    Unconstrained optimum: six 3x3 convs (objective 6). Under BOUNDS: exactly two 3x3 convs
    and no other conv or pool, objective 2.
    """
    n3, n1, n_pool = (jnp.sum(population == op, axis=-1) for op in (3, 2, 4))
    objective = (n3 + 0.1 * n1).astype(jnp.float32)
    costs = jnp.stack([9.0 * n3 + n1, (n3 + n1 + n_pool).astype(jnp.float32)], axis=-1)
    return objective, costs


def test_constrained_fitness_by_hand():
    objective = jnp.array([0.9, 0.8, 0.7, jnp.nan, 0.5, 0.4])
    costs = jnp.array([[1, 1], [3, 1], [2, 4], [1, 1], [2, 2], [1, jnp.nan]], jnp.float32)
    bounds = jnp.array([2.0, 2.0])
    fitness = jax.jit(constrained_fitness)(objective, costs, bounds)
    # row 1: v = 3/2 - 1 = 0.5; row 2: v = 4/2 - 1 = 1; row 4 sits on both bounds (feasible)
    expected = jnp.array([0.9, -1.5e6, -2e6, jnp.nan, 0.5, jnp.nan])
    chex.assert_trees_all_close(fitness, expected)
    chex.assert_trees_all_equal(violation(costs, bounds)[:3], jnp.array([0.0, 0.5, 1.0]))
    chex.assert_trees_all_equal(
        is_feasible(costs, bounds), jnp.array([True, False, False, True, True, False])
    )
    assert bool(is_feasible(jnp.array([2.0, 2.0]), bounds))  # one candidate, shape (K,)


def test_infeasible_below_feasible_and_ordered_by_violation():
    objective = jnp.array([-5.0, 100.0, 100.0, 100.0, 100.0])
    costs = jnp.array([[1.0], [1.001], [1.002], [1.5], [1e30]])
    fitness = constrained_fitness(objective, costs, jnp.array([1.0]))
    assert bool(jnp.all(jnp.isfinite(fitness)))
    assert bool(jnp.all(jnp.diff(fitness) < 0)), fitness  # tiny violations still distinct
    assert float(fitness[1]) < -1e6 < float(fitness[0])


def test_infinite_bound_is_no_limit_and_traced_bounds():
    objective = jnp.array([1.0, 2.0])
    costs = jnp.array([[5.0, 1e9], [50.0, 0.0]])
    fitness = constrained_fitness(objective, costs, jnp.array([10.0, jnp.inf]))
    assert float(fitness[0]) == 1.0 and float(fitness[1]) == pytest.approx(-5e6)
    traced = jax.jit(lambda b: constrained_fitness(objective, costs, b))(jnp.array([100.0, 1.0]))
    assert float(traced[1]) == 2.0 and float(traced[0]) < -1e6


@pytest.mark.parametrize(
    "objective, costs, bounds, message",
    [
        (jnp.zeros(3), jnp.zeros((3, 2)), jnp.zeros(3), r"costs \(3, 2\) and bounds \(3,\)"),
        (jnp.zeros(3), jnp.zeros(3), jnp.ones(1), r"costs \(3,\) and bounds \(1,\)"),
        (jnp.zeros((3, 1)), jnp.zeros((3, 2)), jnp.ones(2), r"objective \(3, 1\)"),
        (jnp.zeros(4), jnp.zeros((3, 2)), jnp.ones(2), r"objective \(4,\) and costs \(3, 2\)"),
        (jnp.zeros(3), jnp.zeros((3, 2)), jnp.array([1.0, 0.0]), r"> 0.*bounds\[1\] = 0.0"),
        (jnp.zeros(3), jnp.zeros((3, 2)), jnp.array([-1.0, jnp.nan]), r"-1.0, bounds\[1\] = nan"),
    ],
)
def test_bad_input(objective, costs, bounds, message):
    with pytest.raises(NasjaxError, match=message):
        constrained_fitness(objective, costs, bounds)


def test_is_feasible_bad_bounds():
    with pytest.raises(NasjaxError, match=r"bounds\[0\] = -2.0"):
        is_feasible(jnp.zeros((2, 1)), jnp.array([-2.0]))


def test_check_bound_satisfiable():
    check_bound_satisfiable([1.23, 0.1], [1.23, 5.0], ["latency_ms", "params_m"])  # equal ok
    with pytest.raises(NasjaxError) as info:
        check_bound_satisfiable(np.array([1.23, 0.1]), [0.5, 5.0], ("latency_ms", "params_m"))
    assert str(info.value) == (
        "bound latency_ms <= 0.5 is below the cheapest architecture in the space (1.23); "
        "choose a bound >= 1.23"
    )
    with pytest.raises(NasjaxError, match="bound params_m <= 0 must be > 0"):
        check_bound_satisfiable([1.0, 0.1], [2.0, 0.0], ["latency_ms", "params_m"])
    with pytest.raises(NasjaxError, match="same length; got 2, 1 and 2"):
        check_bound_satisfiable([1.0, 0.1], [2.0], ["latency_ms", "params_m"])


def test_constrained_regularized_evolution_finds_feasible_optimum():
    strategy = regularized_evolution(SPACE, population_size=20, sample_size=5, batch_size=2)

    def search(key):
        key_init, key_steps = jax.random.split(key)

        def step(state, k):
            population, state = strategy.ask(k, state)
            objective, costs = toy(population)
            fitness = constrained_fitness(objective, costs, BOUNDS)
            state, metrics = strategy.tell(state, population, fitness)
            return state, jnp.mean(is_feasible(costs, BOUNDS))

        keys = jax.random.split(key_steps, 150)  # 300 evaluations
        return jax.lax.scan(step, strategy.init(key_init), keys)

    state, feasible_share = jax.jit(jax.vmap(search))(jax.random.split(jax.random.key(0), 8))
    objective, costs = toy(state.best.genotype)
    assert bool(jnp.all(is_feasible(costs, BOUNDS)))  # the best is feasible on every seed
    chex.assert_trees_all_equal(state.best.fitness, objective)
    assert int(jnp.sum(objective == 2.0)) >= 7, objective  # the constrained optimum
    # Pulled into the feasible region: ~18% of random cells are feasible, ~50% at the end
    # (unconstrained, the same search ends with none feasible).
    assert float(feasible_share[:, :10].mean()) < float(feasible_share[:, -25:].mean()) - 0.2
