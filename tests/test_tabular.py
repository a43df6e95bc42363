"""Tests of the NAS-Bench-201 table loader, the simulated search and the Table 5 script."""

import csv
import gzip
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from nasjax.errors import NasjaxError
from nasjax.evaluation import tabular
from nasjax.evaluation.tabular import DATASETS, load_nb201
from nasjax.search.tabular import max_queries_for, run_datasets, run_seeds, simulate
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import make_strategy

BEST_ARCH = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    "nor_conv_1x1~2|"
)
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def table(table_path):
    return load_nb201(table_path)


@pytest.fixture(scope="module")
def rows(table_path):
    with gzip.open(table_path, "rt", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------- loader errors
def test_missing_file_names_flag_env_and_default(tmp_path, monkeypatch):
    monkeypatch.delenv(tabular.ENV_VAR, raising=False)
    with pytest.raises(NasjaxError) as e:
        load_nb201(tmp_path / "nope.csv.gz")
    msg = str(e.value)
    assert "--nb201" in msg and "NASJAX_NB201" in msg and str(tabular.DEFAULT_PATH) in msg
    assert "nope.csv.gz" in msg


def test_env_var_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(tabular.ENV_VAR, str(tmp_path / "env.csv.gz"))
    with pytest.raises(NasjaxError, match="env.csv.gz"):
        load_nb201()


def test_default_is_the_packaged_table(monkeypatch):
    """Without --nb201 or NASJAX_NB201 the table is the copy inside the package (a clone or
    a wheel, no folder beside the checkout needed), with its provenance notes beside it."""
    monkeypatch.delenv(tabular.ENV_VAR, raising=False)
    package = Path(tabular.__file__).resolve().parents[1]  # nasjax/
    assert tabular.resolve_path() == tabular.DEFAULT_PATH
    assert tabular.DEFAULT_PATH.is_file() and tabular.DEFAULT_PATH.is_relative_to(package)
    assert "Provenance and licences" in (tabular.DEFAULT_PATH.parent / "README.md").read_text()


def test_missing_columns_named(tmp_path):
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(
            "index,arch_str,c10_test_200ep\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n"
        )
    with pytest.raises(NasjaxError, match="c10valid_valid_12ep") as e:
        load_nb201(path)
    assert "c10valid_train_time_s_200ep" in str(e.value)


def test_wrong_row_count_and_coverage(tmp_path, rows):
    fields = list(rows[0])
    short = tmp_path / "short.csv.gz"
    with gzip.open(short, "wt", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows[:10])
    with pytest.raises(NasjaxError, match="has 10 rows, expected 15625"):
        load_nb201(short)
    dup = tmp_path / "dup.csv.gz"
    with gzip.open(dup, "wt", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows([rows[0]] + rows[:-1])
    with pytest.raises(NasjaxError, match="does not cover the space: 1 cells missing"):
        load_nb201(dup)


# ------------------------------------------------------------------- table contents
def test_anchors(table):
    space = NB201Space()
    code = int(space.to_index(space.from_string(BEST_ARCH)))
    assert int(table.official_index[code]) == 6111
    assert float(jnp.max(table.test[0])) == float(table.test[0, code])  # ties exist
    np.testing.assert_allclose(float(table.test[0, code]), 94.37, atol=0.01)
    skip = int(space.to_index(space.from_string(ALL_SKIP)))
    np.testing.assert_allclose(float(table.test[0, skip]), 54.30, atol=0.01)
    np.testing.assert_allclose(float(jnp.max(table.test[1])), 73.51, atol=0.01)
    np.testing.assert_allclose(float(jnp.max(table.test[2])), 47.31, atol=0.01)


def test_codes_index_the_csv_rows(table, rows):
    space = NB201Space()
    for i in [0, 1, 777, 6111, 15624]:
        row = rows[i]
        code = int(space.to_index(space.from_string(row["arch_str"])))
        assert int(table.official_index[code]) == int(row["index"])
        for dataset in tabular.DATASETS:
            reward, test, cost = table.arrays(dataset)
            np.testing.assert_allclose(reward[code], float(row[tabular.REWARD_COLUMNS[dataset]]))
            np.testing.assert_allclose(test[code], float(row[tabular.TEST_COLUMNS[dataset]]))
        expected = float(row["c10valid_train_time_s_200ep"]) * 12 / 200
        np.testing.assert_allclose(cost[code], expected, rtol=1e-6)


def test_unknown_dataset(table):
    with pytest.raises(NasjaxError, match="valid choices: cifar10, cifar100, imagenet16"):
        table.arrays("svhn")


# ------------------------------------------------------------------- simulated search
@pytest.mark.parametrize("name", ["random", "rea", "reinforce"])
def test_budget_respected_and_result_is_best_reward(table, name):
    space = NB201Space()
    reward, test, cost = table.arrays("cifar10")
    budget = 1500.0
    mq = max_queries_for(budget, table.min_cost)
    strategy = make_strategy(name, space)
    out = simulate(strategy, reward, test, cost, jax.random.key(3), budget, max_queries=mq)
    n = int(out["num_queries"])
    assert 0 < n < mq and bool(out["exhausted"])
    assert float(out["time_s"]) <= budget
    # Replay the same queries outside jit: the same keys give the same genotypes.
    key_init, key_run = jax.random.split(jax.random.key(3))
    state = strategy.init(key_init)
    ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
    clock, best_r, best_t = 0.0, -np.inf, np.nan
    for k in jax.random.split(key_run, mq)[:n]:
        pop, state = ask(k, state)
        code = int(space.to_index(pop[0]))
        clock += float(cost[code])
        state, _ = tell(state, pop, reward[code][None])
        if float(reward[code]) > best_r:
            best_r, best_t = float(reward[code]), float(test[code])
    assert clock <= budget + 1e-2
    np.testing.assert_allclose(float(out["best_reward"]), best_r)
    np.testing.assert_allclose(float(out["test_acc"]), best_t)
    assert float(state.best.fitness) == pytest.approx(best_r)
    curve = np.asarray(out["curve"])
    assert np.isnan(curve[0]) and curve[-1] == pytest.approx(best_t)


def test_simulate_nests_in_a_users_program_as_run_seeds(table):
    """simulate composes with jit and vmap (no options of its own for the outermost jit),
    and vmapped over keys it gives run_seeds' searches."""
    strategy = make_strategy("rea", NB201Space())
    reward, test, cost = table.arrays("cifar100")
    keys = jax.random.split(jax.random.key(5), 3)
    mq = max_queries_for(2000.0, table.min_cost)

    def one(key):
        return simulate(strategy, reward, test, cost, key, 2000.0, max_queries=mq)

    mine = jax.jit(jax.vmap(one))(keys)
    theirs = run_seeds(strategy, table, "cifar100", keys, budget_s=2000.0)
    for name in ("test_acc", "num_queries", "curve"):
        np.testing.assert_array_equal(np.asarray(mine[name]), np.asarray(theirs[name]))


def test_tiny_budget_counts_nothing(table):
    reward, test, cost = table.arrays("cifar10")
    strategy = make_strategy("random", NB201Space())
    out = simulate(strategy, reward, test, cost, jax.random.key(0), 1.0, max_queries=3)
    assert int(out["num_queries"]) == 0 and np.isnan(float(out["test_acc"]))


def test_run_seeds_deterministic_per_key(table):
    strategy = make_strategy("rea", NB201Space())
    keys = jax.random.split(jax.random.key(0), 4)
    a = run_seeds(strategy, table, "cifar100", keys, budget_s=2000.0)
    b = run_seeds(strategy, table, "cifar100", keys, budget_s=2000.0)
    np.testing.assert_array_equal(a["test_acc"], b["test_acc"])
    assert len(set(np.asarray(a["test_acc"]).tolist())) > 1  # seeds differ
    assert np.all(np.asarray(a["time_s"]) <= 2000.0)
    with pytest.raises(NasjaxError, match="budget"):
        run_seeds(strategy, table, "cifar100", keys, budget_s=-1.0)


def test_run_datasets_is_run_seeds_per_dataset_in_one_program(table):
    """Table 5's row of a strategy in one compiled call: row k equals the searches on
    DATASETS[k] alone (same keys, same budget)."""
    strategy = make_strategy("rea", NB201Space(), mutation="node_edge")
    keys = jax.random.split(jax.random.key(3), 3 * 4).reshape(3, 4)
    both = run_datasets(strategy, table, keys, budget_s=2000.0)
    assert both["test_acc"].shape == (3, 4)
    for k, dataset in enumerate(DATASETS):
        one = run_seeds(strategy, table, dataset, keys[k], budget_s=2000.0)
        for name in ("test_acc", "num_queries", "time_s", "curve"):
            np.testing.assert_array_equal(np.asarray(both[name][k]), np.asarray(one[name]))
    with pytest.raises(NasjaxError, match=r"keys must have shape \(3, seeds\)"):
        run_datasets(strategy, table, keys[:2])


def test_num_seeds_splits_the_key_inside_the_program(table):
    """One key and ``num_seeds``: the searches of ``jax.random.split(key, num_seeds)``."""
    strategy = make_strategy("random", NB201Space())
    key = jax.random.key(7)
    split = run_seeds(strategy, table, "cifar10", jax.random.split(key, 5), budget_s=2000.0)
    inside = run_seeds(strategy, table, "cifar10", key, budget_s=2000.0, num_seeds=5)
    for name in ("test_acc", "num_queries", "curve"):
        np.testing.assert_array_equal(np.asarray(inside[name]), np.asarray(split[name]))
    keys = jax.random.split(key, 3)
    rows = run_datasets(strategy, table, keys, budget_s=2000.0, num_seeds=5)
    assert rows["test_acc"].shape == (3, 5)
    np.testing.assert_array_equal(
        np.asarray(rows["num_queries"][0]),
        np.asarray(
            run_seeds(strategy, table, DATASETS[0], keys[0], budget_s=2000.0, num_seeds=5)[
                "num_queries"
            ]
        ),
    )
    with pytest.raises(NasjaxError, match=r"with num_seeds, keys must be one key"):
        run_seeds(strategy, table, "cifar10", keys, num_seeds=5)
    with pytest.raises(NasjaxError, match="num_seeds must be a positive int, got 0"):
        run_seeds(strategy, table, "cifar10", key, num_seeds=0)
    with pytest.raises(NasjaxError, match=r"keys must have shape \(seeds\)"):
        run_seeds(strategy, table, "cifar10", key)


# ------------------------------------------------------------------- experiment script
def test_script_smoke(tmp_path, table_path, capsys):
    script = load_experiment("nb201_table5")
    out = tmp_path / "run"
    argv = ["--dataset", "cifar10", "--seeds", "4", "--out", str(out), "--nb201", str(table_path)]
    assert script.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "cifar10"  # one dataset: the flat form of the issue
    for name in ("random", "rea", "reinforce", "rea_uniform_edge"):
        r = results[name]
        assert r["n"] == 4 and 85.0 < r["mean"] <= 94.38
    assert results["optimal"] == pytest.approx(94.37, abs=0.01)
    assert results["paper"]["rea"] == {"mean": 93.92, "std": 0.30}
    assert (out / "best_so_far.png").stat().st_size > 1000
    assert "| cifar10 | rea |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--dataset", "svhn"], "unknown dataset 'svhn'"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--budget", "-5"], "--budget must be > 0"),
        (["--nb201", "/nonexistent/nb201.csv.gz"], "NASJAX_NB201"),
    ],
)
def test_script_bad_input(tmp_path, capsys, argv, expected):
    script = load_experiment("nb201_table5")
    assert script.main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
