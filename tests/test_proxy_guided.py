"""Proxy-guided regularized evolution: warm-up from the top of a screened pool, screened children."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.search.tabular import query_table
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import make_strategy
from nasjax.strategies.proxy_guided import proxy_guided_evolution

SPACE = NB201Space()
# A toy landscape over the 15,625 cells: fitness = number of 3x3 convs, plus a small tie-break.
TOY = np.asarray((np.asarray(SPACE.from_index(np.arange(SPACE.size))) == 3).sum(1), np.float32)
TOY = TOY + np.linspace(0.0, 0.5, SPACE.size, dtype=np.float32)


def lookup(table):
    table = jnp.asarray(table)
    return lambda genotypes: table[SPACE.to_index(genotypes)]


def test_warm_up_is_the_distinct_top_of_the_pool_best_first():
    strategy = proxy_guided_evolution(SPACE, lookup(TOY), population_size=10, pool_size=200)
    state = strategy.init(jax.random.key(0))
    pool = np.asarray(SPACE.sample(jax.random.split(jax.random.key(0))[0], 200))
    pool_scores = np.unique(TOY[np.asarray(SPACE.to_index(pool))])[::-1]
    np.testing.assert_allclose(state.warm_up_scores, pool_scores[:10])
    assert len(set(np.asarray(SPACE.to_index(state.warm_up)).tolist())) == 10
    asked = []
    for i in range(10):  # the warm-up population is asked first, in order
        population, state = strategy.ask(jax.random.key(i), state)
        asked.append(population[0])
        state, _ = strategy.tell(
            state, population, jnp.asarray([TOY[SPACE.to_index(population[0])]])
        )
    np.testing.assert_array_equal(np.stack(asked), state.warm_up)
    assert state.best.fitness == pytest.approx(pool_scores[0])


def test_screened_children_score_higher_than_plain_rea_and_it_scans():
    """With the proxy equal to the fitness, screening 8 proposals per child beats plain REA."""
    told = jnp.asarray(TOY)
    guided = proxy_guided_evolution(SPACE, lookup(TOY), pool_size=100, proposals=8)
    plain = make_strategy("rea", SPACE, population_size=10, sample_size=3)
    keys = jax.random.split(jax.random.key(1), 16)
    runs = lambda s: jax.vmap(lambda k: query_table(s, told, k, num_queries=40))(keys)
    guided_codes, plain_codes = np.asarray(runs(guided)), np.asarray(runs(plain))
    assert TOY[guided_codes[:, :10]].mean() > TOY[plain_codes[:, :10]].mean() + 1.0
    assert TOY[guided_codes[:, 10:]].mean() > TOY[plain_codes[:, 10:]].mean()
    np.testing.assert_array_equal(guided_codes, np.asarray(runs(guided)))  # deterministic


def test_bad_hyper_parameters():
    with pytest.raises(NasjaxError, match="pool_size must be >= population_size"):
        proxy_guided_evolution(SPACE, lookup(TOY), population_size=10, pool_size=5)
    with pytest.raises(NasjaxError, match="proposals"):
        proxy_guided_evolution(SPACE, lookup(TOY), proposals=0)
