"""experiments/darts_search.py end to end (each method at --smoke size on NB201 / MNIST-1D,
the DARTS space once) and experiments/bench_darts_search.py; bad flags."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment
from numerics import assert_same_accuracy
from test_tracking import read_scalars

import nasjax
from nasjax.data import load_dataset
from nasjax.evaluation.module_training import module_accuracy
from nasjax.rundir import RunDir, flags_config
from nasjax.spaces import NB201Space


@pytest.fixture(scope="module")
def script():
    return load_experiment("darts_search")


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--method", "enas"],
            "unknown method 'enas'; valid choices: darts1, darts2, gdas, pcdarts",
        ),
        (["--space", "nb101"], "unknown space 'nb101'; valid choices: nb201, darts"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--unrolled", "hvp"], "unknown unrolled hypergradient 'hvp'"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    ],
)
def test_bad_flags_are_one_line_errors(script, tmp_path, capsys, flags, message):
    assert script.main(["--out", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_resume_with_other_flags_is_refused_before_any_work(script, tmp_path, capsys):
    """A run folder started with seed 0 and darts1: --resume with gdas and seed 5 is one
    line naming both (checked before the data loads or anything compiles)."""
    argv = ["--smoke", "--no-progress", "--out", str(tmp_path)]
    args = script.parse_args(argv)
    script._sizes(args)
    config = flags_config(args, skip=("tensorboard",))
    with RunDir.open(tmp_path, config, resume=False, log_name="search.jsonl") as run:
        run.save(1, {"x": jnp.zeros(2)})
    code = script.main([*argv, "--resume", "--method", "gdas", "--seed", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--method 'darts1' -> 'gdas'" in err[0] and "--seed 0 -> 5" in err[0]
    assert script.main(argv) == 2  # without --resume: the folder holds a run
    assert "already holds a run" in capsys.readouterr().err


# The script end to end for the two mixed-op paths (every op summed; one sampled op under
# lax.switch). Each method's whole epoch loop and its log fields run on a toy network in
# tests/test_relaxation.py, and the NB201 / DARTS relaxed networks in every mode there and
# in tests/test_darts_space.py, at a fraction of the compile time of darts2 and PC-DARTS here.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["darts1", "gdas"])
def test_each_method_searches_and_retrains_at_smoke_size(script, tmp_path, capsys, method):
    out = tmp_path / method
    argv = ["--method", method, "--smoke", "--out", str(out), "--no-progress"]
    assert script.main([*argv, "--tensorboard", str(tmp_path / "tb")]) == 0
    result = json.loads((out / "result.json").read_text())
    log = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    entropy = read_scalars(tmp_path / "tb")[f"{method}/alpha_entropy"]
    assert entropy == {r["epoch"]: np.float32(r["alpha_entropy"]) for r in log}
    space = NB201Space()
    assert result["arch"] == space.to_string(space.from_string(result["arch"]))
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["search_s"] > 0
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert 0 <= result["num_parameter_free"] <= 6
    assert 0 < result["alpha_entropy"] <= np.log(5) + 1e-6
    assert (out / "alpha.png").stat().st_size > 10_000
    assert len((out / "search.jsonl").read_text().splitlines()) == 2
    assert f"arch: {result['arch']}" in capsys.readouterr().out
    if method == "gdas":
        assert result["history"][1]["tau"] < result["history"][0]["tau"]
    # The retrained network, saved and loaded back, gives the accuracy it was saved with.
    saved = nasjax.load_result(out)
    assert saved.genotype.tolist() == result["genotype"] and saved.summary == result
    data = load_dataset("mnist1d", seed=0)
    batch = result["final_training"]["eval_batch_size"]
    acc = module_accuracy(saved.module, saved.variables, data.x_test, data.y_test, batch)
    assert acc == result["model_test_accuracy"]
    assert_same_accuracy(acc, result["test_accuracy"], len(data.y_test))


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    bench = load_experiment("bench_darts_search")
    out = tmp_path / "bench.json"
    assert bench.main(["--smoke", "--methods", "darts1", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures["nasjax"]) == {"darts1"}  # one method: the bench's plumbing
    assert figures["ratio_to_darts1"]["darts1"] == 1.0
    assert figures["pytorch_over_nasjax_darts1"] > 0
