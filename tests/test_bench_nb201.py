"""Tests of experiments/bench_nb201_search.py and its peer, experiments/nb201_peer.py (the
paper's scripts' way of searching: architecture objects, one Python query per step)."""

import json
import math
import random

import pytest
from conftest import load_experiment

from nasjax.evaluation.tabular import load_nb201
from nasjax.spaces.nb201 import NB201Space

PER_STRATEGY = (
    "peer_ms_per_seed",
    "ours_compiled_ms_per_seed",
    "ours_first_call_ms_per_seed",
    "speedup_compiled",
    "speedup_compiled_by_seeds",
    "speedup_incl_compile",
    "speedup_incl_compile_by_seeds",
    "lean_peer_ms_per_seed",
    "speedup_compiled_vs_lean",
    "speedup_incl_compile_vs_lean",
)


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_nb201_search")


@pytest.fixture(scope="module")
def peer():
    return load_experiment("nb201_peer")


@pytest.fixture(scope="module")
def api(peer, table_path):
    return peer.TableAPI(load_nb201(table_path), "cifar10")


def test_peer_api_answers_as_the_table(peer, api, table_path):
    table, space = load_nb201(table_path), NB201Space()
    rng = random.Random(0)
    for _ in range(20):
        cell = peer.Cell.random(rng, api.ops)
        code = int(space.to_index(space.from_string(cell.tostr())))
        reward, cost = api.simulate_train_eval(cell)
        assert reward == pytest.approx(float(table.reward[0, code]))
        assert cost == pytest.approx(float(table.cost[code]))
        assert api.test_accuracy(cell) == pytest.approx(float(table.test[0, code]))


@pytest.fixture(scope="module")
def nats_api(peer, table_path):
    return peer.NatsBenchAPI(load_nb201(table_path), "cifar10")


@pytest.mark.parametrize("dataset", ["cifar100", "imagenet16"])
def test_nats_bench_api_answers_as_the_table(peer, table_path, dataset):
    table, space = load_nb201(table_path), NB201Space()
    nats, lean = peer.NatsBenchAPI(table, dataset), peer.TableAPI(table, dataset)
    rng = random.Random(3)
    for _ in range(20):
        cell = peer.Cell.random(rng, nats.ops)
        assert nats.simulate_train_eval(cell) == pytest.approx(lean.simulate_train_eval(cell))
        assert nats.test_accuracy(cell) == lean.test_accuracy(cell)
    cell = peer.Cell.random(rng, nats.ops)
    code = int(space.to_index(space.from_string(cell.tostr())))
    info = nats.api.get_more_info(cell.tostr(), peer.NATS_NAMES[dataset], hp="12")
    assert info["valid-accuracy"] == float(table.reward[1 + (dataset == "imagenet16"), code])


@pytest.mark.parametrize("name", ["random", "rea", "reinforce"])
def test_peer_searches_are_the_same_through_nats_bench_api(peer, api, nats_api, name):
    """The benchmark's API class answers every query as the lean table: same searches."""
    for seed in range(2):
        assert peer.SEARCHES[name](nats_api, seed, 3000.0) == peer.SEARCHES[name](api, seed, 3000.0)


def test_peer_mutation_is_node_then_edge_then_another_op(peer, api):
    rng, parent = random.Random(1), peer.Cell.random(random.Random(2), api.ops)
    edges = {}
    for _ in range(6000):
        child = parent.mutated(rng, api.ops)
        diff = [
            (n, e)
            for n, (a, b) in enumerate(zip(parent.nodes, child.nodes))
            for e, (x, y) in enumerate(zip(a, b))
            if x != y
        ]
        assert len(diff) == 1  # exactly one edge, to a different op
        edges[diff[0]] = edges.get(diff[0], 0) + 1
    # node 0 (the paper's node 1) has one incoming edge: picked 1/3 of the time
    assert edges[(0, 0)] / 6000 == pytest.approx(1 / 3, abs=0.03)
    assert edges[(2, 1)] / 6000 == pytest.approx(1 / 9, abs=0.03)


@pytest.mark.parametrize("name", ["random", "rea", "reinforce"])
def test_peer_searches_respect_the_budget(peer, api, name):
    budget = 3000.0
    runs = [peer.SEARCHES[name](api, seed, budget) for seed in range(2)]
    for res in runs:
        assert 0 < res["num_queries"] and res["time_s"] <= budget
        assert 80.0 < res["test_acc"] <= 94.38 and math.isfinite(res["best_reward"])
    assert runs[0] != runs[1]  # seeds differ


def test_bad_seeds_exit_2(bench, tmp_path, capsys):
    assert bench.main(["--seeds", "0", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_smoke_run_writes_json(bench, table_path, tmp_path):
    out = tmp_path / "bench.json"
    rc = bench.main(["--smoke", "--out", str(out), "--nb201", str(table_path)])
    assert rc in (0, 1)  # 1 only if a 4-sigma agreement check fails
    result = json.loads(out.read_text())
    for key in PER_STRATEGY:
        assert set(result[key]) == {"rea", "random", "reinforce"}, key
        assert all(v for v in result[key].values()), key
    assert result["peer_apis_agree"] == {"rea": True, "random": True, "reinforce": True}
    assert result["seeds"] == 16 and result["peer_seeds"] == 4
    assert result["table_wall_s"] > 0 and result["table_wall_s_warm"] > 0
    assert len(result["table_cells"]) == 12  # 4 methods x 3 datasets, from the cold process
    for name, stats in result["agreement"].items():
        assert 85 < stats["peer_mean"] <= 94.37 and 85 < stats["ours_mean"] <= 94.37, name
        assert stats["ours_mean_queries"] > 10 and stats["peer_mean_queries"] > 10, name
