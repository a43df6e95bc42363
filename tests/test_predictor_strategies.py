"""Tests for nasjax.strategies.bananas and nasjax.strategies.local_search, the path
encoding of the spaces, and experiments/predictor_nb201.py (``--smoke``)."""

from __future__ import annotations

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import STRATEGIES, bananas, local_search, make_strategy

NB201 = NB201Space()
GENERIC = SearchSpace((5,) * 6)
# A fixed random "table" over the NB201 codes: fitness of every genotype (maximised).
TABLE = jax.random.uniform(jax.random.key(42), (NB201.size,))
SMALL = {"ensemble_size": 2, "hidden_width": 8, "num_candidates": 20, "max_history": 64}


def table_fitness(population):
    return TABLE[NB201.to_index(population)]


@functools.cache
def scanned(name, space, rounds, **kwargs):
    """A jitted ``lax.scan`` of ``rounds`` ask/tell steps on ``table_fitness``; returns
    the asks ``int32[rounds, B, D]`` and the states after every tell (stacked)."""
    strategy = make_strategy(name, space, **kwargs)

    def run(key):
        key_init, key = jax.random.split(key)

        def step(state, k):
            population, state = strategy.ask(k, state)
            state, _ = strategy.tell(state, population, table_fitness(population))
            return state, (population, state)

        return jax.lax.scan(step, strategy.init(key_init), jax.random.split(key, rounds))[1]

    return jax.jit(run)


def test_registered():
    assert STRATEGIES["bananas"] is bananas
    assert STRATEGIES["local_search"] is local_search


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("bananas", SMALL), ("local_search", {}), ("local_search", {"move": "best"})],
)
def test_ask_tell_contract_under_scan(name, kwargs):
    asks, states = scanned(name, NB201, 30, **kwargs)(jax.random.key(0))
    chex.assert_shape(asks, (30, 1, 6))
    chex.assert_type(asks, jnp.int32)
    assert bool(jnp.all(NB201.is_valid(asks)))
    again = scanned(name, NB201, 30, **kwargs)(jax.random.key(0))[0]
    other = scanned(name, NB201, 30, **kwargs)(jax.random.key(1))[0]
    chex.assert_trees_all_equal(asks, again)
    assert not bool(jnp.array_equal(asks, other))
    # The best-so-far record is the best of the told fitness.
    fitness = table_fitness(asks[:, 0])
    assert float(states.best.fitness[-1]) == float(jnp.max(fitness))


@pytest.mark.parametrize(("name", "kwargs"), [("bananas", SMALL), ("local_search", {})])
def test_jit_matches_eager_on_a_generic_space(name, kwargs):
    strategy = make_strategy(name, GENERIC, batch_size=2, **kwargs)

    def rounds(init, ask, tell):
        state = init(jax.random.key(3))
        asks = []
        for k in jax.random.split(jax.random.key(4), 7):
            population, state = ask(k, state)
            state, _ = tell(state, population, jnp.sum(population, -1).astype(jnp.float32))
            asks.append(population)
        return jnp.stack(asks), state

    eager = rounds(strategy.init, strategy.ask, strategy.tell)
    jitted = rounds(jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell))
    chex.assert_trees_all_equal(eager[0], jitted[0])
    chex.assert_trees_all_close(eager[1], jitted[1], rtol=1e-6, atol=1e-7)
    assert bool(jnp.all(GENERIC.is_valid(eager[0])))


def test_bananas_never_reasks_a_told_genotype_after_warm_up():
    asks = np.asarray(scanned("bananas", NB201, 60, **SMALL)(jax.random.key(5))[0][:, 0])
    codes = [int(c) for c in np.asarray(NB201.to_index(asks))]
    for i in range(10, len(codes)):  # num_init = 10 uniform draws may repeat
        assert codes[i] not in codes[:i], f"query {i} repeats a told genotype"


def test_bananas_ucb_and_batches():
    strategy = make_strategy("bananas", NB201, acquisition="ucb", batch_size=4, **SMALL)
    state = strategy.init(jax.random.key(0))
    for k in jax.random.split(jax.random.key(1), 5):
        population, state = strategy.ask(k, state)
        state, _ = strategy.tell(state, population, table_fitness(population))
    assert len({int(c) for c in NB201.to_index(population)}) == 4  # distinct candidates


def test_local_search_moves_only_to_better_neighbours():
    asks, states = scanned("local_search", NB201, 120)(jax.random.key(2))
    asks = np.asarray(asks[:, 0])
    inc, fit = np.asarray(states.incumbent), np.asarray(states.incumbent_fitness)
    restart = np.asarray(states.restart)
    moves = 0
    for t in range(1, len(asks)):
        was_restarting = restart[t - 1]
        if not was_restarting:
            # Every non-restart query is a neighbour of the incumbent.
            assert np.sum(asks[t] != inc[t - 1]) == 1
            if not np.array_equal(inc[t], inc[t - 1]) and not restart[t]:
                assert fit[t] > fit[t - 1]
                np.testing.assert_array_equal(inc[t], asks[t])
                moves += 1
    assert moves > 0 and int(states.num_restarts[-1]) >= 2
    # A restart follows only a neighbourhood fully evaluated without improvement.
    for t in np.flatnonzero(restart[1:] & ~restart[:-1]) + 1:
        nbrs = {tuple(g) for g in np.asarray(NB201.neighbours(inc[t - 1]))}
        asked = {tuple(g) for g in asks[max(0, t - 23) : t + 1]}
        assert nbrs <= asked
        best_nbr = max(float(table_fitness(jnp.asarray(g))) for g in nbrs)
        assert best_nbr <= fit[t - 1]


def test_local_search_best_move_takes_the_best_neighbour():
    asks, states = scanned("local_search", NB201, 80, move="best")(jax.random.key(3))
    inc, restart = np.asarray(states.incumbent), np.asarray(states.restart)
    for t in range(1, len(inc)):
        if not restart[t - 1] and not restart[t] and not np.array_equal(inc[t], inc[t - 1]):
            nbr_fit = table_fitness(NB201.neighbours(inc[t - 1]))
            assert float(table_fitness(inc[t])) == pytest.approx(float(jnp.max(nbr_fit)))


def test_path_encoding():
    g = NB201.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    assert NB201.cell_paths() == [(3,), (0, 4), (1, 5), (0, 2, 5)]
    enc = NB201.path_encoding(g)
    chex.assert_shape(enc, (84,))
    assert float(enc.sum()) == 4.0  # 4 live paths, distinct op sequences
    # All-none cell: no path survives.
    assert float(NB201.path_encoding(jnp.zeros((2, 6), jnp.int32)).sum()) == 0.0
    chex.assert_shape(GENERIC.path_encoding(jnp.zeros((3, 6), jnp.int32)), (3, 30))
    assert bool(jnp.all(jax.jit(NB201.path_encoding)(g) == enc))


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("bananas", {"ensemble_size": 0}, "ensemble_size must be an integer >= 1, got 0"),
        ("bananas", {"train_steps": 2.5}, "train_steps must be an integer >= 1, got 2.5"),
        ("bananas", {"acquisition": "ei"}, "acquisition.*'ei'.*its, ucb"),
        ("bananas", {"learning_rate": 0.0}, "learning_rate must be a finite number > 0, got 0.0"),
        ("bananas", {"ucb_kappa": -1.0}, "ucb_kappa must be a finite number >= 0, got -1.0"),
        ("bananas", {"batch_size": 200}, r"batch_size must be <= num_candidates \(100\), got 200"),
        ("local_search", {"move": "worst"}, "move.*'worst'.*first, best"),
        ("local_search", {"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_hyper_parameters(name, kwargs, message):
    with pytest.raises(NasjaxError, match=message):
        make_strategy(name, NB201, **kwargs)


def test_kendall_tau_matches_definition():
    script = load_experiment("predictor_nb201")
    assert script.kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert script.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with a tie: 4 concordant, 1 discordant, 1 of 6 pairs tied in x.
    assert script.kendall_tau([1, 1, 2, 3], [1, 2, 4, 3]) == pytest.approx((4 - 1) / np.sqrt(5 * 6))


def test_script_smoke_and_bad_input(table_path, tmp_path, capsys):
    script = load_experiment("predictor_nb201")
    out = tmp_path / "run"
    argv = ["--dataset", "cifar10", "--smoke", "--seeds", "2", "--out", str(out)]
    argv += ["--nb201", str(table_path), "--kendall-test", "100", "--kendall-trials", "1"]
    assert script.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("bananas", "local_search", "rea"):
        assert {"mean", "std", "n"} <= set(results[name])
        assert results[name]["n"] == 2
    assert -1.0 <= results["predictor_kendall_tau"]["mean"] <= 1.0
    assert results["paper"]["bananas"] == "not in REFERENCES.md"
    assert (out / "results.md").is_file() and (out / "best_so_far.png").is_file()
    capsys.readouterr()
    assert script.main(["--ensemble-size", "0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --ensemble-size must be >= 1, got 0"]
