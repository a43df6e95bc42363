"""LM population training (decoded = elastic, bf16), the CLI branch, and the two scripts."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from nasjax.cli import main as cli_main
from nasjax.errors import NasjaxError
from nasjax.evaluation.lm_training import LMTrainConfig, train_lm_population
from nasjax.rundir import RunDir
from nasjax.spaces.transformer import TransformerSpace
from nasjax.text import load_text
from nasjax.tracking import read_scalars

TINY = TransformerSpace(
    widths=(16, 32), layers=(1, 2), heads=(1, 2), mlp_ratios=(1, 2), head_dims=(8,), max_context=16
)
SMALL = {"steps": 3, "batch_size": 2, "context": 8, "eval_windows": 2}


def test_decoded_and_elastic_training_agree():
    data = load_text()
    pop = np.stack([TINY.from_string("d32-L2:h2e2d8|h1e1d8"), TINY.from_string("d16-L1:h1e2d8")])
    decoded = train_lm_population(jax.random.key(0), pop, data, TINY, LMTrainConfig(**SMALL))
    elastic = train_lm_population(
        jax.random.key(0), pop, data, TINY, LMTrainConfig(**SMALL, mode="elastic", member_batch=2)
    )
    np.testing.assert_allclose(decoded["valid_bpb"], elastic["valid_bpb"], rtol=1e-4)
    np.testing.assert_allclose(decoded["train_bpb"], elastic["train_bpb"], rtol=1e-4)
    assert np.all(decoded["valid_bpb"] < 8.05)  # about a uniform guess after 3 steps
    np.testing.assert_allclose(decoded["valid_ppl"], 2.0 ** decoded["valid_bpb"], rtol=1e-6)
    again = train_lm_population(jax.random.key(0), pop[1:], data, TINY, LMTrainConfig(**SMALL))
    assert again["valid_bpb"][0] == decoded["valid_bpb"][1]  # a function of the arch alone


@pytest.mark.slow
def test_bfloat16_mixed_precision_training():
    data = load_text()
    # a model of the test above, whose float32 program (SMALL) the reference run reuses
    pop = TINY.from_string("d16-L1:h1e2d8")[None]
    config = LMTrainConfig(**SMALL, compute_dtype="bfloat16")
    bf16 = train_lm_population(jax.random.key(0), pop, data, TINY, config)
    f32 = train_lm_population(jax.random.key(0), pop, data, TINY, LMTrainConfig(**SMALL))
    assert np.isfinite(bf16["valid_bpb"]).all()
    np.testing.assert_allclose(bf16["valid_bpb"], f32["valid_bpb"], atol=0.05)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"context": 17}, "context 17 is longer than the space supports: max_context is 16"),
        ({"mode": "masked"}, "unknown mode 'masked'; valid choices: decoded, elastic"),
        ({"compute_dtype": "fp8"}, "unknown compute_dtype 'fp8'; valid choices: float32, bfloat16"),
        ({"steps": 0}, "steps must be >= 1"),
    ],
)
def test_bad_training_config(changes, message):
    config = LMTrainConfig(**{**SMALL, **changes})
    with pytest.raises(NasjaxError) as err:
        train_lm_population(
            jax.random.key(0), TINY.sample(jax.random.key(0), 1), load_text(), TINY, config
        )
    assert message in str(err.value)


def test_invalid_genotype_is_refused_by_training():
    bad = np.asarray(TransformerSpace().from_string("d64-L1:h2e1d32"))
    bad[2] = 2  # 4 heads x 32 > 64
    with pytest.raises(NasjaxError, match="> width 64"):
        train_lm_population(
            jax.random.key(0), bad[None], load_text(), TransformerSpace(), LMTrainConfig(**SMALL)
        )


def test_cli_info(capsys):
    assert cli_main(["info", "--space", "transformer", "--arch", "d64-L1:h2e2d32"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decoder_params"] == 2 * 64 + 4 * 64 * 64 + 3 * 64 + 2 * 64 * 128 + 128 + 6 * 64
    assert record["total_params"] == record["decoder_params"] + (256 + 128) * 64
    assert record["flops_per_token"] == 2 * (4 * 64 * 64 + 2 * 64 * 128 + 2 * 64 * 64 + 64 * 256)
    args = ["info", "--space", "transformer", "--arch", "d64-L1:h2e2d32", "--latency"]
    assert cli_main(args + ["--repeats", "2", "--context", "16"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["context"] == 16
    for key in ("latency_ms", "generate_ms_per_token", "peak_mem_mb", "device"):
        assert key in record


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "--arch", "d64-L1:h4e2d32"], "4 heads x head dim 32 = 128 > width 64"),
        (["info", "--arch", "d64-L1:h2e2d32", "--context", "500"], "max_context is 128"),
        (["search", "--strategy", "nsga2", "--out", "unused"], "multi-objective"),
        (["search", "--text", "/nonexistent.txt", "--smoke", "--out", "unused"], "cannot read"),
    ],
)
def test_cli_bad_input(capsys, argv, message):
    assert cli_main(argv[:1] + ["--space", "transformer"] + argv[1:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nasjax: error:") and message in err and err.count("\n") == 1


def test_cli_search_resume_with_another_seed_is_refused(tmp_path, capsys):
    with RunDir.open(tmp_path, {"seed": 0}, resume=False, log_name="results.jsonl") as run:
        run.save(1, {"x": jnp.zeros(2)})
    argv = ["search", "--space", "transformer", "--smoke", "--out", str(tmp_path), "--resume"]
    assert cli_main([*argv, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "--seed 0 -> 1" in err and err.count("\n") == 1


@pytest.mark.slow
def test_proxy_study_smoke(tmp_path):
    module = load_experiment("transformer_proxy")
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["spearman"]) >= {"decoder_params", "total_params", "flops_per_token"}
    assert results["archs"] == 3
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "proxy_scatter.png").stat().st_size > 0


@pytest.mark.slow
def test_pareto_smoke(tmp_path):
    module = load_experiment("transformer_pareto")
    out, logs = tmp_path / "run", tmp_path / "tb"
    argv = ["--smoke", "--no-progress", "--out", str(out), "--tensorboard", str(logs)]
    assert module.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    scalars = read_scalars(logs)
    for name in ("proxy", "trained"):  # each search's records mirrored under its name
        lines = (out / name / "results.jsonl").read_text().splitlines()
        assert len(scalars[f"{name}/fitness/0"]) == len(lines) > 0
    # Latencies are measured, so at smoke size a front can fall outside the latency
    # reference (hypervolume 0) on a loaded machine; the fraction is then NaN, by design.
    hv_proxy, hv_trained = (
        results["hypervolume"][k] for k in ("proxy_front_trained_after", "trained_search")
    )
    fraction = results["proxy_quality_fraction"]
    if hv_trained > 0:
        assert fraction == pytest.approx(hv_proxy / hv_trained) and 0 <= fraction <= 1.5
    else:
        assert math.isnan(fraction)
    assert results["fronts"]["proxy"] and results["fronts"]["trained"]
    for r in results["fronts"]["trained"]:
        assert {"valid_bpb", "latency_ms", "generate_ms_per_token", "peak_mem_mb"} <= set(r)
    assert set(results["wall_s"]) >= {"proxy_search", "trained_search"}
    assert (out / "pareto_front.png").stat().st_size > 0


def test_scripts_refuse_bad_arguments(capsys, tmp_path):
    proxy = load_experiment("transformer_proxy")
    assert proxy.main(["--archs", "2", "--out", str(tmp_path)]) == 2
    assert "--archs must be >= 3" in capsys.readouterr().err
    assert proxy.main(["--text", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 2
    assert "cannot read text file" in capsys.readouterr().err
