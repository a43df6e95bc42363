"""Tests of experiments/bench_nb201_search.py: the NumPy reference REA and a smoke run."""

import json
import math

import numpy as np
import pytest
from conftest import load_experiment

from nasjax.evaluation.tabular import load_nb201

KEYS = (
    "speedup_rea",
    "compile_s",
    "table_wall_s",
    "ours_s_per_seed",
    "reference_s_per_seed",
    "seeds",
    "reference_seeds",
    "agreement",
)


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_nb201_search")


def test_reference_rea_respects_budget_and_reports_best_reward_test(bench, table_path):
    table = load_nb201(table_path)
    reward, test, cost = (np.asarray(a) for a in table.arrays("cifar10"))
    budget = 12000.0
    results = [bench.reference_rea(reward, test, cost, seed, budget) for seed in range(3)]
    for res in results:
        codes = np.array(res["codes"])
        assert res["num_queries"] == len(codes) > 10  # past the random warm-up phase
        spent = float(np.sum(cost[codes].astype(np.float64)))
        assert spent <= budget
        assert math.isclose(res["time_s"], spent, rel_tol=1e-9, abs_tol=1e-6)
        best = codes[int(np.argmax(reward[codes]))]  # first best-reward query
        assert res["best_reward"] == float(reward[best])
        assert res["test_acc"] == float(test[best])
    assert len({tuple(r["codes"]) for r in results}) == 3  # seeds differ


def test_bad_seeds_exit_2(bench, tmp_path, capsys):
    assert bench.main(["--seeds", "0", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_smoke_run_writes_json(bench, table_path, tmp_path, monkeypatch):
    # One dataset in part (d) keeps the test well under 40 s (each cell compiles afresh).
    monkeypatch.setattr(bench, "DATASETS", ("cifar10",))
    out = tmp_path / "bench.json"
    rc = bench.main(
        ["--seeds", "8", "--reference-seeds", "4", "--out", str(out), "--nb201", str(table_path)]
    )
    assert rc in (0, 1)  # 1 only if the 4-sigma agreement check fails
    result = json.loads(out.read_text())
    for key in KEYS:
        assert key in result, key
    assert result["seeds"] == 8 and result["reference_seeds"] == 4
    assert result["speedup_rea"] > 0 and result["table_wall_s"] > 0
    assert set(result["table_cells"]) == {"cifar10/random", "cifar10/rea", "cifar10/reinforce"}
    stats = result["agreement"]
    for key in ("ours_mean", "reference_mean", "welch_t", "agree", "ours_mean_queries"):
        assert key in stats, key
    assert 85 < stats["reference_mean"] <= 94.37 and 85 < stats["ours_mean"] <= 94.37
