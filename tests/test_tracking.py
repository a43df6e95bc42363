"""Tracking hooks: callbacks told every record, and the TensorBoard writer behind --tensorboard."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasjax.cli import main
from nasjax.tracking import Callback, TensorBoardWriter, read_scalars, scalars

SMOKE_SEED = 3  # tests/test_cli.py's smoke search: the same compiled programs


class Recorder:
    def __init__(self):
        self.records, self.ends = [], []

    def on_record(self, record, step):
        self.records.append((step, record))

    def on_end(self, result):
        self.ends.append(result)


@pytest.mark.slow
def test_tensorboard_scalars_match_the_jsonl_log(tmp_path):
    out, logs = tmp_path / "run", tmp_path / "tb"
    argv = ["search", "--smoke", "--seed", str(SMOKE_SEED), "--no-progress", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--tensorboard", str(logs)]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    got = read_scalars(logs)
    fitness = [np.float32(r["fitness"]) for r in records]
    assert got["search/fitness"] == dict(enumerate(fitness))
    test = [np.float32(r["test_accuracy"]) for r in records]
    assert got["search/test_accuracy"] == dict(enumerate(test))
    summary = json.loads((out / "summary.json").read_text())
    final = got["search/final/best_fitness"]
    assert list(final.values()) == [np.float32(summary["search_valid_accuracy"])]
    assert "tensorboard" not in json.loads((out / "run_config.json").read_text())["config"]


def test_scalars_keep_numbers_and_objective_lists():
    record = {"generation": 1, "member": 0, "arch": "x", "genotype": [1, 2], "wall_s": 3.0,
              "fitness": [0.5, -2.0], "valid_accuracy": 0.25, "ok": True}  # fmt: skip
    assert scalars(record) == {"fitness/0": 0.5, "fitness/1": -2.0, "valid_accuracy": 0.25}
    assert isinstance(Recorder(), Callback)


def test_writer_steps_and_close(tmp_path):
    writer = TensorBoardWriter(tmp_path, prefix="darts")
    writer.on_record({"epoch": 1, "alpha_entropy": 1.5, "valid_accuracy": float("nan")}, 1)
    writer.on_record({"epoch": 2, "alpha_entropy": 1.25}, 2)
    writer.on_end({"search_s": 4.0})
    got = read_scalars(tmp_path)
    assert got["darts/alpha_entropy"] == {1: 1.5, 2: 1.25}
    assert np.isnan(got["darts/valid_accuracy"][1]) and got["darts/final/search_s"] == {2: 4.0}


def test_writers_opened_together_in_one_folder_keep_their_own_files(tmp_path):
    """Scripts open one writer per search in one folder, often within the same second (the
    second is all tensorboardX's file name has): each keeps its scalars, even same-named."""
    writers = [TensorBoardWriter(tmp_path, prefix=p) for p in ("a", "b", "a")]
    for i, writer in enumerate(writers):
        writer.on_record({"loss": float(i)}, i)
        writer.on_end({})
    assert read_scalars(tmp_path) == {"a/loss": {0: 0.0, 2: 2.0}, "b/loss": {1: 1.0}}
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 3


def test_import_nasjax_does_not_load_tensorboardx():
    code = "import sys, nasjax, nasjax.cli; print('tensorboardX' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
