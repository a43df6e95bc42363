"""The zero-cost scoring benchmark: nasjax and the PyTorch peer score every cell alike."""

import json

import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:  # keep this process's device layout
        mp.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
        return load_experiment("bench_zero_cost")


def test_smoke_run_scores_every_cell_alike(bench, tmp_path):
    out = tmp_path / "zc.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["network"] == {
        "dataset": "mnist1d",
        "channels": 4,
        "cells_per_stage": 1,
        "input_shape": [40, 1],
    }
    assert len(result["genotypes"]) == result["cells"] == bench.SMOKE["cells"]
    for proxy, cells in (("synflow", bench.SMOKE["cells"]), ("snip", bench.SMOKE["data_cells"])):
        r = result["proxies"][proxy]
        assert r["cells"] == cells
        assert r["nasjax"]["compile_s"] > 0 and r["nasjax"]["cells_per_s"] > 0
        assert r["pytorch_eager"]["cells_per_s"] > 0 and r["speedup_vs_pytorch"] > 0
        # The same weights both ways: every cell's score agrees, not only the ranking.
        assert r["agreement"]["ok"]
        assert r["agreement"]["max_rel_diff"] <= bench.TOLERANCE[proxy]


def test_bad_cells_is_one_clear_line(bench, capsys):
    assert bench.main(["--cells", "1", "--out", "unused.json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cells" in err[0]
