"""The command line: info, search end to end, and one clear line for every bad input."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from numerics import MAX_FLIPS, assert_same_accuracy

from nasjax.cli import main
from nasjax.data import load_dataset
from nasjax.errors import NasjaxError
from nasjax.spaces import NB201Space

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_benchmark_param_count(capsys):
    code, out, _ = run(capsys, "info", "--space", "nb201", "--arch", BEST, "--dataset", "cifar10")
    assert code == 0
    record = json.loads(out)
    assert record["params"] == 1_073_466
    assert record["macs"] == 153_272_960


def test_info_prints_benchmark_flops(capsys):
    """FLOPs under NAS-Bench-201's convention: MACs plus the classifier's bias additions."""
    code, out, _ = run(capsys, "info", "--arch", BEST, "--dataset", "imagenet16")
    assert code == 0
    record = json.loads(out)
    assert record["flops"] == record["macs"] + 120
    assert (record["channels"], record["cells_per_stage"]) == (16, 5)
    assert "latency_ms" not in record and "device" not in record


def test_info_latency_fields(capsys):
    from nasjax.objectives import device_name

    argv = ["info", "--arch", BEST, "--dataset", "mnist1d", "--channels", "4"]
    code, out, _ = run(capsys, *argv, "--cells-per-stage", "1", "--latency", "--batch-size", "3")
    assert code == 0
    record = json.loads(out)
    assert record["flops"] == record["macs"] + 10 and record["params"] > 0
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] > 0
    assert isinstance(record["peak_mem_mb"], float) and record["peak_mem_mb"] > 0
    assert record["device"] == device_name()
    assert record["batch_size"] == 3


@pytest.mark.parametrize(
    "flag, value",
    [("--batch-size", "0"), ("--batch-size", "-2"), ("--channels", "0"), ("--repeats", "0")],
)
def test_info_bad_sizes_are_one_clear_line(capsys, flag, value):
    code, out, err = run(capsys, "info", "--arch", BEST, "--latency", flag, value)
    assert code == 2 and out == ""
    assert err.strip() == f"nasjax: error: {flag} must be >= 1, got {value}"


@pytest.mark.parametrize(
    "argv, bad, valid",
    [
        (["info", "--space", "nope", "--arch", BEST], "'nope'", "nb201"),
        (["info", "--arch", BEST, "--dataset", "mnist2d"], "'mnist2d'", "imagenet16"),
        (
            ["info", "--arch", "|nor_conv_3x3~0|+|bogus~0|skip_connect~1|+|none~0|none~1|none~2|"],
            "'bogus'",
            "avg_pool_3x3",
        ),
        (["info", "--arch", "|nor_conv_3x3~0|"], "|nor_conv_3x3~0|", "3 nodes"),
        (["search", "--strategy", "annealing", "--out", "unused"], "'annealing'", "random, rea"),
        (["search", "--dataset", "imagenet", "--out", "unused"], "'imagenet'", "mnist1d"),
        (["search", "--space", "darts9", "--out", "unused"], "'darts9'", "nb201"),
        (["search", "--optimizer", "lion", "--out", "unused"], "'lion'", "sgd"),
        (["search", "--strategy", "nsga2", "--out", "unused"], "multi-objective", "rea"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, argv, bad, valid):
    argv = [a if a != "unused" else str(tmp_path / "out") for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert bad in lines[0] and valid in lines[0]
    assert not (tmp_path / "out" / "summary.json").exists()


def test_missing_cifar_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("NASJAX_CIFAR_DIR", raising=False)
    missing = tmp_path / "no-such-folder"
    code, _, err = run(
        capsys, "search", "--dataset", "cifar10", "--data-dir", str(missing), "--out", str(tmp_path)
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(missing) in err and "NASJAX_CIFAR_DIR" in err
    assert not (tmp_path / "summary.json").exists()


def test_out_of_range_genotype():
    with pytest.raises(NasjaxError, match=r"entry 0 = 5 \(valid 0..4\)"):
        NB201Space().decode([5, 0, 0, 0, 0, 0])


def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nasjax", "search", "--strategy", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "nasjax: error: unknown strategy 'nope'; valid choices: random, rea, reinforce, nsga2, bananas, local_search, hyperband"
    )


SMOKE_SEED = 3


@pytest.fixture(scope="module")
def smoke_search(tmp_path_factory):
    """A smoke search in this (one-device) process: its argv, stdout and summary."""
    out_dir = tmp_path_factory.mktemp("smoke")
    argv = ["search", "--smoke", "--seed", str(SMOKE_SEED), "--out", str(out_dir), "--no-progress"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    assert code == 0
    return argv, out_dir, json.loads((out_dir / "summary.json").read_text()), stdout.getvalue()


@pytest.mark.slow
def test_search_smoke_end_to_end_and_resume(capsys, smoke_search):
    argv, tmp_path, summary, out = smoke_search
    for key in (
        "arch",
        "test_accuracy",
        "valid_accuracy",
        "params",
        "macs",
        "num_devices",
        "seed",
        "wall_s",
    ):
        assert key in summary
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["seed"] == SMOKE_SEED and summary["num_evaluated"] == 4
    assert summary["num_devices"] == jax.device_count() and summary["num_processes"] == 1
    genotype = NB201Space().from_string(summary["arch"])
    assert genotype.tolist() == summary["genotype"]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert max(r["fitness"] for r in records) == pytest.approx(summary["search_valid_accuracy"])
    assert summary["arch"] in out and "published MNIST-1D" in out
    assert (tmp_path / "search_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Without --resume the folder is refused; with it the finished search is reused.
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--resume" in err
    code, _, err = run(capsys, *argv, "--resume", "--budget", "3")
    assert code == 2 and "--budget 4 -> 3" in err
    code, _, _ = run(capsys, *argv, "--resume")
    assert code == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["arch"] == summary["arch"]
    assert again["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
def test_main_job_script_smoke_on_four_devices(tmp_path, smoke_search):
    """The main job on 4 host devices evaluates what the 1-device search evaluated.

    At smoke size REA's population (10) exceeds the budget (4), so the candidates are its
    random initial samples, a function of the key alone: the genotypes must be equal, the
    accuracies equal up to near-tied predictions (4 devices round differently), and the
    cell found one of the best of them.
    """
    script = Path(__file__).parents[1] / "experiments" / "mnist1d_rea.py"
    argv = ["--smoke", "--seed", str(SMOKE_SEED), "--no-progress", "--out", str(tmp_path)]
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    proc = subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
            "XLA_FLAGS": flags.strip(),
            "JAX_PLATFORMS": "cpu",
        },
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["strategy"] == "rea" and summary["dataset"] == "mnist1d"
    assert "published MNIST-1D" in proc.stdout
    _, one_dir, one_device, _ = smoke_search
    # the reference ran in this process: one host device unless XLA_FLAGS says otherwise
    assert summary["num_devices"] == 4 and one_device["num_devices"] == jax.device_count()
    four, one = (_records(d / "results.jsonl") for d in (tmp_path, one_dir))
    assert [r["genotype"] for r in four] == [r["genotype"] for r in one]
    num_valid = len(load_dataset("mnist1d", seed=SMOKE_SEED).x_valid)
    fitness = [[r["fitness"] for r in run] for run in (four, one)]
    assert_same_accuracy(*fitness, num_valid)
    best = max(fitness[1])
    found = fitness[1][[r["arch"] for r in one].index(summary["arch"])]
    assert found >= best - MAX_FLIPS / num_valid


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_constrained_search_keeps_the_best_within_the_bounds(capsys, tmp_path):
    """--max-params (exact table) and --max-latency-ms (this device's latency table)."""
    from nasjax.spaces.nb201_costs import nb201_cost_table

    params = nb201_cost_table("params", "mnist1d", channels=4, cells_per_stage=1)
    bound = float(np.percentile(params, 30))  # binding: most cells are over it
    argv = ["search", "--smoke", "--seed", "1", "--no-progress", "--out", str(tmp_path)]
    argv += ["--max-params", str(bound), "--max-latency-ms", "1e6"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["constraints"] == {"params <=": bound, "latency_ms <=": 1e6}
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for r in records:
        assert r["params"] == params[NB201Space().to_index(np.array(r["genotype"]))]
        assert r["feasible"] == float(r["params"] <= bound)
        assert (r["fitness"] >= 0) == bool(r["feasible"])  # infeasible: penalised below 0
    if any(r["feasible"] for r in records):
        assert summary["feasible"] and summary["constrained_costs"]["params"] <= bound
    assert (tmp_path / "latency_table.json").exists()
