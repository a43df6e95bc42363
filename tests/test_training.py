"""Population training: each member computes what it would alone; vmap agrees with map."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_same_accuracy

from nasjax.data import load_dataset
from nasjax.evaluation.training import TrainConfig, train_population, training_evaluator
from nasjax.spaces import NB201Space

SPACE = NB201Space()
# The CLI's --smoke recipe: these compiled programs are shared with the slow CLI tests of
# tests/test_cli.py through the persistent compilation cache (make test runs them later).
CONFIG = TrainConfig(steps=6, batch_size=100, learning_rate=0.05, channels=4, cells_per_stage=1)
POPULATION = jnp.array([[3, 3, 3, 1, 3, 2], [1, 4, 2, 0, 3, 0]], jnp.int32)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist1d", seed=0)


@pytest.fixture(scope="module")
def population_run(data):
    return train_population(jax.random.key(0), POPULATION, data, SPACE, CONFIG)


def test_shapes_and_ranges(population_run):
    chex.assert_shape(population_run["valid_accuracy"], (2,))
    chex.assert_shape(population_run["test_accuracy"], (2,))
    chex.assert_shape(population_run["loss_curve"], (2, CONFIG.steps))
    chex.assert_tree_all_finite(population_run)
    acc = np.asarray(population_run["valid_accuracy"])
    assert np.all((acc >= 0) & (acc <= 1))


def test_member_matches_solo_run(data, population_run):
    keys = jax.random.split(jax.random.key(0), 2)
    i = 1
    solo = train_population(keys[i][None], POPULATION[i : i + 1], data, SPACE, CONFIG, split=False)
    np.testing.assert_allclose(
        solo["loss_curve"][0], population_run["loss_curve"][i], rtol=1e-5, atol=1e-6
    )
    for name, split in (("valid_accuracy", data.x_valid), ("test_accuracy", data.x_test)):
        assert_same_accuracy(solo[name][0], population_run[name][i], len(split), err_msg=name)


def test_same_key_same_result(data, population_run):
    again = train_population(jax.random.key(0), POPULATION, data, SPACE, CONFIG)
    chex.assert_trees_all_equal(again, population_run)


def test_evaluator_fitness_is_valid_accuracy(data, population_run):
    fitness, metrics = training_evaluator(SPACE, data, CONFIG).evaluate(
        jax.random.key(0), POPULATION
    )
    np.testing.assert_array_equal(fitness, population_run["valid_accuracy"])
    np.testing.assert_array_equal(metrics["final_train_loss"], population_run["loss_curve"][:, -1])


@pytest.mark.slow
def test_vmapped_members_match_looped_members(data, population_run):
    vmapped = train_population(
        jax.random.key(0), POPULATION, data, SPACE, CONFIG._replace(member_batch=2)
    )
    np.testing.assert_allclose(
        vmapped["loss_curve"], population_run["loss_curve"], rtol=1e-4, atol=1e-5
    )
    assert_same_accuracy(
        vmapped["valid_accuracy"], population_run["valid_accuracy"], len(data.x_valid)
    )


@pytest.mark.slow
def test_training_learns(data):
    config = CONFIG._replace(steps=80, channels=8)
    out = train_population(jax.random.key(1), POPULATION[:1], data, SPACE, config)
    curve = np.asarray(out["loss_curve"][0])
    assert curve[-10:].mean() < 0.6 * curve[:5].mean()
    assert float(out["valid_accuracy"][0]) > 0.5  # 10 classes: chance is 0.1
