"""experiments/compression_search.py: bad flags fail in one line; the smoke run's outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from numerics import assert_same_accuracy

import nasjax
from nasjax.data import load_dataset
from nasjax.evaluation.module_training import module_accuracy
from nasjax.spaces.compress import CompressedSpace

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "compression_search.py"


def _load():
    spec = importlib.util.spec_from_file_location("compression_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compression_search"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--population", "1"], "--population must be >= 2"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--arch", "|conv~0|+|x|+|y|"], "unknown op 'conv'"),
        (["--cost-weights", "a,b"], "--cost-weights must be a number >= 0, got 'a'"),
        (["--cost-weights", "0.1,-1"], "--cost-weights must be >= 0, got -1 (in '0.1,-1')"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, tmp_path, capsys):
    module = _load()
    assert module.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_front_and_w4a4_comparison():
    module = _load()
    uniform = [
        {
            "name": "w4a4",
            "bits_total": 100.0,
            "test_accuracy": 0.8,
            "valid_accuracy": 0.8,
            "bitops": 1.0,
            "mac_fraction_removed": 0.0,
            "arch": "a",
        },
    ]
    rec = dict(bitops=1.0, mac_fraction_removed=0.0)
    searched = {
        "mixed": [
            {"arch": "x", "bits_total": 90.0, "valid_accuracy": 0.85, "test_accuracy": 0.84, **rec},
            {"arch": "y", "bits_total": 95.0, "valid_accuracy": 0.80, "test_accuracy": 0.9, **rec},
            {"arch": "z", "bits_total": 300.0, "valid_accuracy": 0.95, "test_accuracy": 0.9, **rec},
        ]
    }
    out = module.summarize(uniform, searched, {"mixed_s": 1.0})
    assert [p["arch"] for p in out["pareto"]] == ["x", "z"]  # y is dominated by x
    c = out["at_w4a4_size"]
    assert c["front_arch"] == "x" and c["delta_test_accuracy"] == pytest.approx(0.04)
    assert c["at_least_as_accurate"]


@pytest.mark.slow
def test_smoke_run_writes_results_and_plot(tmp_path):
    module = _load()
    assert module.main(["--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    names = [u["name"] for u in results["uniform"]]
    assert {"w8a8", "w4a4", "w2a2", "keep0.5", "keep0.25"} <= set(names)
    for u in results["uniform"]:
        assert {"name", "bits_total", "test_accuracy"} <= set(u)
    sizes = {u["name"]: u["bits_total"] for u in results["uniform"]}
    assert sizes["w2a2"] < sizes["w4a4"] < sizes["w8a8"] < sizes["w32a32"]
    assert sizes["keep0.25"] < sizes["keep0.5"] < sizes["w32a32"]
    assert results["pareto"]
    for p in results["pareto"]:
        assert {"arch", "bits_total", "bitops", "test_accuracy"} <= set(p)
    assert set(results["fronts"]) == {"mixed", "joint", "dnas"}
    assert "delta_test_accuracy" in results["at_w4a4_size"]
    assert (tmp_path / "compression_front.png").stat().st_size > 0
    assert len((tmp_path / "mixed" / "results.jsonl").read_text().splitlines()) == 4
    # The retrained front member, saved with its policy, loads back bit for bit.
    saved = nasjax.load_result(tmp_path)
    final = results["final"]
    assert saved.genotype.tolist() == final["genotype"] and saved.summary == results
    space = CompressedSpace()
    policy = {u: list(v) for u, v in space.policy_values(saved.genotype).items()}
    assert saved.extra["policy"] == policy and saved.extra["module"] == "functional"
    data = load_dataset("mnist1d", seed=0)
    acc = module_accuracy(saved.module, saved.variables, data.x_test, data.y_test, 500)
    assert acc == final["model_test_accuracy"]
    assert_same_accuracy(acc, final["test_accuracy"], len(data.y_test))
