"""``nasjax report``: a run folder becomes evaluations.csv, results.md, plots and one
self-contained report.html (nasjax.report, nasjax.plots.plot_cell, the CLI subcommand)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nasjax.cli import main
from nasjax.errors import NasjaxError
from nasjax.plots import plot_cell
from nasjax.report import cell_drawing, detect_kind, write_report

ARCHS = (
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|avg_pool_3x3~1|none~2|",
    "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|avg_pool_3x3~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|none~1|skip_connect~2|",
)


def _search_run(out: Path) -> Path:
    """The files a ``nasjax search --smoke`` run writes (no checkpoints: not read)."""
    out.mkdir()
    records = [
        {
            "generation": i // 2,
            "member": i % 2,
            "arch": arch,
            "genotype": [0] * 6,
            "fitness": 0.1 * (i + 1),
            "wall_s": 1.0 + i,
            "valid_accuracy": 0.1 * (i + 1),
            "test_accuracy": 0.1 * i,
        }
        for i, arch in enumerate(ARCHS)
    ]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {
        "arch": ARCHS[2],
        "space": "nb201",
        "strategy": "rea",
        "dataset": "mnist1d",
        "seed": 0,
        "test_accuracy": 0.25,
        "params": 2310,
        "wall_s": 3.0,
        "search_training": {"steps": 6, "channels": 4},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    config = {"config": {"space": "nb201", "budget": 3, "smoke": True}, "nasjax_version": "x"}
    (out / "run_config.json").write_text(json.dumps(config))
    return out


def test_report_of_a_search_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _search_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2  # search curve and cell drawing
    assert 'alt="cell.png"' in page and "Found cell" in page
    assert "<link" not in page and "<script" not in page  # self-contained
    assert (run / "cell.png").stat().st_size > 1000
    assert (run / "search_curve.png").is_file()
    with open(run / "evaluations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["arch"] for r in rows] == list(ARCHS)  # one row per results.jsonl line
    md = (run / "results.md").read_text()
    assert md.startswith("# search run") and "0.25" in md and "budget" in md
    assert not list(run.glob(".*tmp*"))  # no temporary file left behind


def test_report_rebuilds_results_md(tmp_path: Path) -> None:
    run = _search_run(tmp_path / "run")
    (run / "results.md").write_text("stale\n")
    write_report(run)
    assert "stale" not in (run / "results.md").read_text()


def test_results_json_run_rows(tmp_path: Path) -> None:
    """A run with only results.json (nb201_pareto) reports the rows it holds."""
    run = tmp_path / "pareto"
    run.mkdir()
    results = {"random": {"hypervolume": 0.5, "igd": 0.1}, "nsga2": {"hypervolume": 0.6}}
    (run / "results.json").write_text(json.dumps(results))
    report = write_report(run)
    assert report["kind"] == "pareto" and report["evaluations"] == 2
    assert "nsga2" in (run / "evaluations.csv").read_text()


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p / "missing"])
def test_not_a_run_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, make: object
) -> None:
    folder = make(tmp_path)  # an empty folder, then one that does not exist
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nasjax: ") and "\n" not in err and str(folder) in err
    with pytest.raises(NasjaxError):
        detect_kind(folder)


def test_cell_drawing_of_nb201_and_darts(tmp_path: Path) -> None:
    (cell,) = cell_drawing("nb201", ARCHS[0]).values()
    assert cell[0] == ["0", "1", "2", "3"]
    assert (0, 1, "avg_pool_3x3") in cell[1] and (2, 3, "none") in cell[1]
    darts = cell_drawing("darts", "DARTS_V2")
    assert set(darts) == {"normal cell", "reduction cell"}
    assert plot_cell(darts, tmp_path / "darts.png", "DARTS_V2").stat().st_size > 1000
