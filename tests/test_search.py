"""The search loop: records, checkpoints, exact resume, refusal to overwrite."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.search import RESULTS_FILE, run_search
from nasjax.spaces import NB201Space
from nasjax.strategies import make_strategy

SPACE = NB201Space()
TARGET = jnp.array([3, 3, 3, 1, 3, 2], jnp.int32)


def cheap_evaluate(key, population):
    """Fitness = matching decisions with a hidden target, plus key-dependent noise."""
    noise = 0.01 * jax.random.uniform(key, (population.shape[0],))
    fitness = jnp.sum(population == TARGET, axis=-1) + noise
    return fitness, {"matches": jnp.sum(population == TARGET, axis=-1).astype(jnp.float32)}


class Interrupt(Exception):
    pass


def interrupting(after_calls):
    calls = {"n": 0}

    def evaluate(key, population):
        if calls["n"] == after_calls:
            raise Interrupt
        calls["n"] += 1
        return cheap_evaluate(key, population)

    return evaluate


def strip_wall(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r.pop("wall_s")
    return records


@pytest.fixture(scope="module")
def strategy():
    return make_strategy("rea", SPACE, population_size=6, sample_size=2, batch_size=3)


def test_records_and_best(tmp_path, strategy):
    result = run_search(
        jax.random.key(0), SPACE, strategy, cheap_evaluate, 8, tmp_path, progress=False
    )
    records = strip_wall(tmp_path / RESULTS_FILE)
    assert len(records) == 24 == result.num_evaluated
    assert {r["generation"] for r in records} == set(range(8))
    best = max(records, key=lambda r: r["fitness"])
    np.testing.assert_allclose(result.best_fitness, best["fitness"], rtol=1e-6)
    assert SPACE.to_string(result.best_genotype) == best["arch"]
    assert all(SPACE.from_string(r["arch"]).tolist() == r["genotype"] for r in records)
    assert all(r["matches"] == int(r["fitness"]) for r in records)


def test_resume_matches_uninterrupted_run(tmp_path, strategy):
    full = run_search(
        jax.random.key(1), SPACE, strategy, cheap_evaluate, 7, tmp_path / "a", progress=False
    )
    with pytest.raises(Interrupt):
        run_search(
            jax.random.key(1), SPACE, strategy, interrupting(4), 7, tmp_path / "b", progress=False
        )
    # A record written after the last checkpoint must be dropped on resume.
    with (tmp_path / "b" / RESULTS_FILE).open("a") as f:
        f.write('{"generation": 99, "partial": tru')
    resumed = run_search(
        jax.random.key(1),
        SPACE,
        strategy,
        cheap_evaluate,
        7,
        tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert strip_wall(tmp_path / "a" / RESULTS_FILE) == strip_wall(tmp_path / "b" / RESULTS_FILE)
    np.testing.assert_array_equal(full.best_genotype, resumed.best_genotype)
    assert full.best_fitness == resumed.best_fitness
    chex_equal = jax.tree_util.tree_map(np.array_equal, full.state, resumed.state)
    assert all(jax.tree_util.tree_leaves(chex_equal))


def test_refuses_to_overwrite_without_resume(tmp_path, strategy):
    run_search(jax.random.key(2), SPACE, strategy, cheap_evaluate, 2, tmp_path, progress=False)
    with pytest.raises(NasjaxError, match="--resume"):
        run_search(jax.random.key(2), SPACE, strategy, cheap_evaluate, 2, tmp_path, progress=False)


def test_same_seed_same_result(strategy):
    a = run_search(jax.random.key(3), SPACE, strategy, cheap_evaluate, 5, progress=False)
    b = run_search(jax.random.key(3), SPACE, strategy, cheap_evaluate, 5, progress=False)
    np.testing.assert_array_equal(a.best_genotype, b.best_genotype)
    assert a.best_fitness == b.best_fitness
