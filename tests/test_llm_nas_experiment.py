"""experiments/llm_nas.py: bad flags in one line; the smoke run's results, plots and resume
(two blocks of the real SmolLM2, tiny budgets)."""

from __future__ import annotations

import json

import pytest
from conftest import load_experiment

from nasjax.errors import NasjaxError
from nasjax.tracking import read_scalars


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target-params", "0"], "--target-params must be"),
        (["--target-params", "1.5"], "--target-params must be"),
        (["--target-latency", "-1"], "--target-latency must be"),
        (["--population", "1"], "--population must be >= 2"),
        (["--distill-lr", "-1"], "--distill-lr must be"),
        (["--seed", "-1"], "--seed must be in"),
        (["--fitness", "accuracy"], "--fitness"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, tmp_path, capsys):
    script = load_experiment("llm_nas")
    assert script.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_smoke_run_writes_the_issue_layout_and_resumes(llm_checkpoint, tmp_path):
    script = load_experiment("llm_nas")
    out = tmp_path / "run"
    logs = tmp_path / "tb"
    results = script.run(
        script.parse_args(["--smoke", "--out", str(out), "--tensorboard", str(logs)])
    )
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["dense"]) >= {"ppl", "params", "tokens_per_s"}
    assert set(saved["candidates"]) == set(script.CANDIDATES)
    for name, c in saved["candidates"].items():
        assert {"genotype", "params", "ppl_zero_shot", "ppl_distilled", "tokens_per_s"} <= set(c)
        assert c["params"] < saved["dense"]["params"] and c["ppl_distilled"] > 1
        assert (c["ppl_zero_shot"] is None) == (name == "scratch")
    # scratch is the searched shape; the baselines are cut to the target size
    assert saved["candidates"]["scratch"]["genotype"] == saved["candidates"]["searched"]["genotype"]
    assert saved["candidates"]["uniform_width"]["params_fraction"] <= 0.75
    pop = saved["population_eval"]
    assert set(pop) >= {"P", "batched_s", "one_by_one_s", "batched_compiled_s"}
    assert pop["P"] == 4 and pop["max_abs_nll_difference"] < 1e-4  # the two paths agree
    assert -1 <= saved["latency_table_spearman"] <= 1 and saved["distill_tokens"] == 128
    assert saved["front"] and all(
        set(f) >= {"genotype", "params", "latency_ms", "ppl_zero_shot"} for f in saved["front"]
    )
    latencies = [f["latency_ms"] for f in saved["front"]]
    assert latencies == sorted(latencies)
    for name in ("results.md", "front.png", "distillation.png", "latency_table.json"):
        assert (out / name).stat().st_size > 0
    assert len((out / "stages.jsonl").read_text().splitlines()) == 9
    scalars = read_scalars(logs)  # every search's candidates, in the order they were scored
    for kind in script.SEARCHES:
        assert (
            len(scalars[f"{kind}/loss"]) == 4 * (1 + 1)
            and len(scalars[f"{kind}/final/best_loss"]) == 1
        )

    # --resume of a finished run recomputes no stage and writes the same results
    again = script.run(script.parse_args(["--smoke", "--out", str(out), "--resume"]))
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_s"}  # noqa: E731
    assert strip(again) == strip(results)
    # a changed flag is refused in one line
    with pytest.raises(NasjaxError, match="--seed 0 -> 1"):
        script.run(script.parse_args(["--smoke", "--out", str(out), "--resume", "--seed", "1"]))
