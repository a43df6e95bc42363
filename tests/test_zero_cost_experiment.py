"""experiments/zero_cost_nb201.py: proxies against the table, throughput, guided REA."""

import json

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def script():
    return load_experiment("zero_cost_nb201")


@pytest.mark.slow
def test_smoke_writes_spearman_table_and_guided_search(tmp_path, table_path, script, capsys):
    out = tmp_path / "zc"
    argv = ["--smoke", "--proxies", "synflow,snip,params", "--datasets", "cifar10"]
    assert script.main(argv + ["--out", str(out), "--nb201", str(table_path)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["spearman"]) == {"synflow", "snip", "params"}
    for rho in results["spearman"].values():
        assert set(rho) == {"cifar10"}
        assert all(-1 <= r <= 1 for r in rho.values())
    assert "stand-in" in results["data"]["cifar10"]  # no --data-dir: labelled stand-in
    assert results["throughput"]["synflow"]["population_archs_per_s"] > 0
    guided = results["guided_search"]
    assert guided["proxy"] == "flops" and 0 < guided["rea"]["test_acc_mean"] <= 100
    table = (out / "results.md").read_text()
    assert "| synflow (data-free) |" in table and "0.737" in table and "stand-in" in table
    assert (out / "scatter_synflow.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--proxies", "synflow,zen"], "'zen'"),
        (["--datasets", "imagenet1k"], "'imagenet1k'"),
        (["--archs", "many"], "--archs"),
        (["--archs", "1"], "--archs"),
        (["--guided-proxy", "oracle"], "'oracle'"),
        (["--pool", "0"], "--pool"),
    ],
)
def test_bad_input(tmp_path, table_path, script, capsys, argv, expected):
    out = tmp_path / "never"
    assert script.main(argv + ["--out", str(out), "--nb201", str(table_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_default_proxies_are_the_data_free_ones_and_all_means_every_proxy(script):
    from nasjax.evaluation.proxies import DATA_FREE, PROXIES

    assert script.parse_args([]).proxies == list(DATA_FREE)  # the documented command's minutes
    assert script.parse_args(["--proxies", "all"]).proxies == list(PROXIES)
