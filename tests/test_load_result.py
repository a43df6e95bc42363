"""Take the model away: a search saves its retrained network and load_result rebuilds it."""

import contextlib
import io
import json

import jax
import numpy as np
import pytest
from numerics import assert_same_accuracy

import nasjax
from nasjax.cli import main
from nasjax.data import load_dataset
from nasjax.errors import NasjaxError
from nasjax.evaluation.module_training import module_accuracy
from nasjax.spaces.saved import MODEL_FILE, VARIABLES_FILE

SMOKE_SEED = 3  # tests/test_cli.py's smoke search: the same compiled programs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("saved")
    argv = ["search", "--smoke", "--seed", str(SMOKE_SEED), "--out", str(out), "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_reloaded_network_reproduces_the_saved_test_accuracy(smoke_run):
    out, summary = smoke_run
    assert summary["model"] == MODEL_FILE
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files
    result = nasjax.load_result(out)
    assert result.genotype.tolist() == summary["genotype"] and result.summary == summary
    assert result.task == nasjax.get_task("mnist1d")
    assert result.size == {"channels": 4, "cells_per_stage": 1}
    data = load_dataset("mnist1d", seed=SMOKE_SEED)
    logits = result.module.apply(result.variables, data.x_test[:7], train=False)
    assert logits.shape == (7, 10) and np.all(np.isfinite(logits))
    batch = summary["final_training"]["eval_batch_size"]
    acc = module_accuracy(result.module, result.variables, data.x_test, data.y_test, batch)
    assert acc == summary["model_test_accuracy"]  # the saved network, bit for bit
    # The population trainer's own number for the same weights (another program).
    assert_same_accuracy(acc, summary["test_accuracy"], len(data.y_test))


@pytest.mark.slow
def test_report_still_reads_a_run_with_a_saved_network(smoke_run, capsys):
    out, _ = smoke_run
    assert main(["report", str(out)]) == 0
    assert "search run" in capsys.readouterr().out


def test_folders_without_a_saved_network_are_one_clear_line(tmp_path):
    with pytest.raises(NasjaxError, match="holds no saved network") as info:
        nasjax.load_result(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / MODEL_FILE).write_text("{}")
    with pytest.raises(NasjaxError, match="is not a nasjax saved network"):
        nasjax.load_result(tmp_path)


def test_a_damaged_variables_file_is_one_clear_line(tmp_path):
    record = {
        "format": "nasjax-model", "version": 1, "space": "nb201", "genotype": [0] * 6,
        "input_shape": [40, 1], "num_classes": 10, "size": {}, "summary": "summary.json",
        "extra": {},
    }  # fmt: skip
    (tmp_path / MODEL_FILE).write_text(json.dumps(record))
    (tmp_path / VARIABLES_FILE).write_bytes(b"\x00\x01")
    with pytest.raises(NasjaxError, match="cannot read"):
        nasjax.load_result(tmp_path)


def _records(run):
    lines = (run / "results.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in lines]


@pytest.mark.slow
def test_an_npz_copy_of_mnist1d_finds_and_saves_the_same_network(smoke_run, tmp_path):
    """--dataset F.npz holding the built-in split's arrays runs the same programs on the same
    data: the same search records, the same retrained network, bit for bit."""
    out, summary = smoke_run
    data = load_dataset("mnist1d", seed=SMOKE_SEED)
    path = tmp_path / "mnist1d.npz"
    np.savez(path, **{k: getattr(data, k) for k in data._fields[:6]})
    mine = tmp_path / "run"
    argv = ["search", "--smoke", "--seed", str(SMOKE_SEED), "--no-progress", "--out", str(mine)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--dataset", str(path)]) == 0
    assert _records(mine) == _records(out)
    ours = json.loads((mine / "summary.json").read_text())
    for key in ("arch", "test_accuracy", "valid_accuracy", "model_test_accuracy", "params"):
        assert ours[key] == summary[key], key
    theirs, loaded = nasjax.load_result(out), nasjax.load_result(mine)
    for a, b in zip(jax.tree.leaves(theirs.variables), jax.tree.leaves(loaded.variables)):
        np.testing.assert_array_equal(a, b)
