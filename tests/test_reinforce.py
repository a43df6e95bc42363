"""Tests of the REINFORCE strategy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import STRATEGIES, ReinforceState, make_strategy, reinforce

TARGET = 3


def _fitness(population):
    """Synthetic landscape: the number of decisions set to ``TARGET`` (maximised)."""
    return jnp.sum(population == TARGET, axis=-1).astype(jnp.float32)


def _run(strategy, key, steps):
    def step(state, k):
        pop, state = strategy.ask(k, state)
        state, metrics = strategy.tell(state, pop, _fitness(pop))
        return state, metrics["best_fitness"]

    key_init, key_run = jax.random.split(key)
    return jax.lax.scan(step, strategy.init(key_init), jax.random.split(key_run, steps))


def test_registered():
    assert STRATEGIES["reinforce"] is reinforce
    assert isinstance(
        make_strategy("reinforce", NB201Space()).init(jax.random.key(0)), ReinforceState
    )


def test_shapes_and_init_scale():
    space = NB201Space()
    strategy = reinforce(space, batch_size=4)
    state = strategy.init(jax.random.key(0))
    chex.assert_shape(state.logits, (6, 5))
    assert float(jnp.max(jnp.abs(state.logits))) < 1e-2
    assert bool(jnp.isnan(state.baseline))
    pop, _ = strategy.ask(jax.random.key(1), state)
    chex.assert_shape(pop, (4, 6))
    assert pop.dtype == jnp.int32 and bool(jnp.all(space.is_valid(pop)))
    state, metrics = strategy.tell(state, pop, jnp.arange(4.0))
    assert float(state.baseline) == pytest.approx(1.5)  # first rewards initialise it
    assert int(metrics["num_evaluated"]) == 4 and float(metrics["best_fitness"]) == 3.0


def test_unequal_choices_never_sample_padding():
    space = SearchSpace(num_choices=(2, 5, 1))
    strategy = reinforce(space, batch_size=64)
    pop, _ = strategy.ask(jax.random.key(0), strategy.init(jax.random.key(0)))
    assert bool(jnp.all(space.is_valid(pop)))


def test_jit_matches_no_jit():
    strategy = reinforce(NB201Space(), batch_size=2)
    state = strategy.init(jax.random.key(0))
    pop, _ = strategy.ask(jax.random.key(1), state)
    pop_j, _ = jax.jit(strategy.ask)(jax.random.key(1), state)
    np.testing.assert_array_equal(pop, pop_j)
    fit = jnp.array([80.0, 90.0])
    s1, _ = strategy.tell(state, pop, fit)
    s2, _ = jax.jit(strategy.tell)(state, pop, fit)
    chex.assert_trees_all_close(s1, s2, atol=1e-6)
    s1, _ = strategy.tell(s1, pop, fit[::-1])
    s2, _ = jax.jit(strategy.tell)(s2, pop, fit[::-1])
    chex.assert_trees_all_close(s1, s2, atol=1e-6)


def test_policy_concentrates_on_optimum():
    strategy = reinforce(NB201Space(), learning_rate=0.05)
    state, best = jax.jit(lambda k: _run(strategy, k, 400))(jax.random.key(0))
    probs = jax.nn.softmax(state.logits, axis=-1)[:, TARGET]
    assert bool(jnp.all(probs > 0.5)), probs  # uniform start: 0.2
    assert float(best[-1]) == 6.0
    # With NAS-Bench-201's own settings the probability still rises on every decision.
    state, _ = jax.jit(lambda k: _run(reinforce(NB201Space()), k, 300))(jax.random.key(1))
    assert bool(jnp.all(jax.nn.softmax(state.logits, axis=-1)[:, TARGET] > 0.25))


def test_nan_rewards_do_not_corrupt_state():
    strategy = reinforce(NB201Space(), batch_size=2)
    state = strategy.init(jax.random.key(0))
    pop, _ = strategy.ask(jax.random.key(1), state)
    after, metrics = strategy.tell(state, pop, jnp.array([jnp.nan, jnp.nan]))
    chex.assert_trees_all_equal(after.logits, state.logits)
    chex.assert_trees_all_equal(after.opt_state, state.opt_state)
    assert float(after.best.fitness) == -jnp.inf and int(after.best.num_evaluated) == 2
    after, _ = strategy.tell(after, pop, jnp.array([jnp.nan, 70.0]))
    assert bool(jnp.all(jnp.isfinite(after.logits)))
    assert float(after.baseline) == pytest.approx(70.0)
    assert float(after.best.fitness) == 70.0
    np.testing.assert_array_equal(after.best.genotype, pop[1])
    after, _ = strategy.tell(after, pop, jnp.array([-jnp.inf, jnp.inf]))
    assert bool(jnp.all(jnp.isfinite(after.logits))) and float(after.baseline) == 70.0


@pytest.mark.parametrize(
    "kwargs",
    [{"learning_rate": 0.0}, {"baseline_momentum": 1.0}, {"batch_size": 0}, {"init_scale": -1}],
)
def test_bad_hyperparameters(kwargs):
    with pytest.raises(NasjaxError):
        reinforce(NB201Space(), **kwargs)
