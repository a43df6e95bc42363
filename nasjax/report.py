"""``nasjax report DIR``: one readable report of any finished run folder.

A run folder is recognised by the files its command wrote:

* ``search``: ``summary.json`` + ``results.jsonl`` (``nasjax search``, ``make search``);
* ``gradient``: ``result.json`` (+ ``search.jsonl``, one record per epoch;
  ``experiments/darts_search.py``);
* ``pareto``, ``compression``, ``llm``: ``results.json`` (``experiments/*_pareto.py``,
  ``compression_search.py``, ``llm_nas.py`` / ``llm_compress.py``), with the JSONL logs
  of their searches (``*.jsonl``, ``*/results.jsonl``) when they have any.

:func:`write_report` rebuilds from those files ``evaluations.csv`` (one row per JSONL
record, else the rows ``results.json`` holds), ``results.md`` (kept as the script wrote
it for LLM runs, whose tables are the script's own), the plots it can
(``search_curve.png``, ``cell.png``: the found cell drawn as a graph of op-labelled
edges) and ``report.html``: one self-contained page (inline CSS, the PNGs embedded as
base64) with the settings, the headline numbers, the best evaluations and every figure.
Every file is written to a temporary name and renamed, so none is ever half-written.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.evaluation.kinds import DATA_KINDS
from nasjax.pareto import pareto_mask
from nasjax.plots import plot_cell, plot_front, plot_search_curve
from nasjax.rundir import RUN_CONFIG_FILE, write_text_atomic
from nasjax.search import RESULTS_FILE
from nasjax.spaces import SPACES, make_space

KINDS = ("search", "gradient", "pareto", "compression", "llm")
TOP_ROWS = 15  # best evaluations shown in results.md and report.html
CELL_FILE = "cell.png"
PLOTS = ("search_curve.png", "fronts.png", CELL_FILE)  # the figures this module draws


# ----------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise NasjaxError(f"cannot read {str(path)!r}: {err}") from None


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL log (a torn last line of an interrupted run is skipped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict)]


def detect_kind(run: Path) -> str:
    """The kind of run in folder ``run`` (one of :data:`KINDS`), from the files there.

    Raises:
      NasjaxError: one line when ``run`` is missing or holds no run nasjax knows.
    """
    if not run.is_dir():
        raise NasjaxError(f"run folder {str(run)!r} does not exist")
    if (run / "summary.json").is_file() and (run / RESULTS_FILE).is_file():
        return "search"
    if (run / "result.json").is_file():
        return "gradient"
    if (run / "results.json").is_file():
        results = _read_json(run / "results.json")
        keys = set(results) if isinstance(results, dict) else set()
        if "dense" in keys:
            return "llm"
        if "pareto" in keys or (run / "uniform.jsonl").is_file():
            return "compression"
        return "pareto"
    raise NasjaxError(
        f"{str(run)!r} holds no finished nasjax run: expected summary.json and "
        f"{RESULTS_FILE} (search), result.json (gradient search) or results.json "
        "(Pareto, compression, LLM)"
    )


def _logs(run: Path, kind: str) -> list[Path]:
    """The JSONL logs of one evaluation per line, in a fixed order."""
    if kind == "search":
        return [run / RESULTS_FILE]
    if kind == "gradient":
        return [p for p in [run / "search.jsonl"] if p.is_file()]
    return sorted(run.glob("*.jsonl")) + sorted(run.glob(f"*/{RESULTS_FILE}"))


def _flat(record: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b`` columns; lists as JSON text."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            out[f"{prefix}{key}"] = json.dumps(value)
        else:
            out[f"{prefix}{key}"] = value
    return out


def _results_rows(results: Any) -> list[dict[str, Any]]:
    """The rows ``results.json`` holds: every list of records, and every section of
    scalars (e.g. one strategy's hypervolume), each with the ``table`` it came from."""
    rows: list[dict[str, Any]] = []
    if not isinstance(results, dict):
        return rows
    for key, value in results.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows += [{"table": key, **_flat(v)} for v in value]
        elif isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, list) and inner and all(isinstance(v, dict) for v in inner):
                    rows += [{"table": f"{key}.{sub}", **_flat(v)} for v in inner]
            scalars = {k: v for k, v in value.items() if not isinstance(v, (list, dict))}
            if scalars:
                rows.append({"table": key, **scalars})
    return rows


def evaluation_rows(run: Path, kind: str) -> list[dict[str, Any]]:
    """One row per evaluation: every JSONL record (with its ``log`` when there are several
    logs), or for a run without logs the rows of ``results.json``."""
    logs = _logs(run, kind)
    rows: list[dict[str, Any]] = []
    for log in logs:
        source = {"log": str(log.relative_to(run))} if len(logs) > 1 else {}
        rows += [{**source, **_flat(r)} for r in _read_jsonl(log)]
    if not logs and (run / "results.json").is_file():
        rows = _results_rows(_read_json(run / "results.json"))
    return rows


# ----------------------------------------------------------------- writing
def _csv_text(rows: list[dict[str, Any]]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _scalars(record: Any) -> dict[str, Any]:
    """The top-level scalar fields of a JSON object (settings and headline numbers)."""
    if not isinstance(record, dict):
        return {}
    return {k: v for k, v in record.items() if not isinstance(v, (list, dict))}


def _fitness(row: dict[str, Any]) -> float:
    """A row's (maximised) fitness; the first objective of a multi-objective one."""
    value = row.get("fitness")
    if isinstance(value, str) and value.startswith("["):
        value = (json.loads(value) or [None])[0]
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return -math.inf


def _best_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best :data:`TOP_ROWS` rows by (maximised, scalar) fitness, else the first."""
    if any(math.isfinite(_fitness(r)) for r in rows):
        rows = sorted(rows, key=_fitness, reverse=True)
    return rows[:TOP_ROWS]


# ----------------------------------------------------------------- cells
def cell_drawing(space_name: str, arch: str) -> dict[str, tuple[list[str], list]] | None:
    """The cells of ``arch`` for :func:`nasjax.plots.plot_cell`, or ``None`` when the
    space has no cells (NAS-Bench-201: nodes 0..3, one op per edge; DARTS: the normal and
    the reduction cell: the two previous cells' outputs ``k-2`` and ``k-1``, nodes 0..3 and
    ``out``, the concatenation of the nodes)."""
    if space_name not in SPACES:
        return None
    space = make_space(space_name)
    genotype = space.from_string(arch)
    if hasattr(space, "cells"):  # DARTS: two (op, input state) pairs per node
        cells = {}
        for name, pairs in zip(("normal cell", "reduction cell"), space.cells(genotype)):
            nodes = space.nodes
            labels = ["k-2", "k-1", *map(str, range(nodes)), "out"]
            edges = [(src, 2 + k // 2, op) for k, (op, src) in enumerate(pairs)]
            edges += [(2 + n, nodes + 2, "concat") for n in range(nodes)]
            cells[name] = (labels, edges)
        return cells
    if hasattr(space, "edges") and hasattr(space, "ops"):  # NAS-Bench-201 style
        edges = [(s, d, space.ops[int(genotype[e])]) for e, (s, d) in enumerate(space.edges)]
        count = 1 + max(d for _, d, _ in edges)
        return {"cell": ([str(i) for i in range(count)], edges)}
    return None


def _found(run: Path, kind: str, rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """``(space, arch)`` of the run's found architecture, if it has one."""
    if kind == "search":
        summary = _read_json(run / "summary.json")
        return summary.get("space", ""), summary.get("arch", "")
    if kind == "gradient":
        result = _read_json(run / "result.json")
        return result.get("space", ""), result.get("arch", "")
    config = (
        _read_json(run / RUN_CONFIG_FILE).get("config", {})
        if (run / RUN_CONFIG_FILE).is_file()
        else {}
    )
    scored = [r for r in rows if isinstance(r.get("arch"), str) and "test_accuracy" in r]
    if scored:  # the most accurate architecture a Pareto run evaluated
        best = max(scored, key=lambda r: float(r["test_accuracy"]))
        return config.get("space", "nb201"), best["arch"]
    return None


# ----------------------------------------------------------------- plots
def _plots(run: Path, kind: str, rows: list[dict[str, Any]]) -> list[str]:
    """Regenerates the figures this module draws; returns notes on what it could not."""
    notes: list[str] = []
    if kind == "search":
        summary = _read_json(run / "summary.json")
        records = _read_jsonl(run / RESULTS_FILE)
        title = (
            f"{summary.get('strategy')} on {summary.get('space')} / {summary.get('dataset')} "
            f"(seed {summary.get('seed')})"
        )
        ylabel = "fitness (maximised)"
        if summary.get("space") in SPACES:
            ylabel = DATA_KINDS[make_space(summary["space"]).data_kind].fitness
        if records and all(isinstance(r.get("fitness"), (int, float)) for r in records):
            plot_search_curve(records, run / "search_curve.png", title, ylabel)
    _plot_fronts(run, kind)
    found = _found(run, kind, rows)
    if found is None:
        return notes
    space, arch = found
    try:
        cells = cell_drawing(space, arch)
    except NasjaxError as err:
        cells, notes = None, [f"no cell drawing: {err}"]
    if cells is not None:
        title = arch if len(arch) <= 100 else f"{space} cell found"
        plot_cell(cells, run / CELL_FILE, title)
    return notes


def _plot_fronts(run: Path, kind: str) -> None:
    """``fronts.png``: the two objectives of every multi-objective log (NSGA-II's
    ``fitness`` pairs, both maximised) with each log's non-dominated set."""
    series = {}
    for log in _logs(run, kind):
        pairs = [r.get("fitness") for r in _read_jsonl(log)]
        if pairs and all(isinstance(p, list) and len(p) == 2 for p in pairs):
            points = np.asarray(pairs, np.float32)
            front = np.asarray(pareto_mask(jnp.asarray(points)))
            name = str(log.relative_to(run).parent) if log.parent != run else log.stem
            series[name] = (points[:, 1], points[:, 0], front)
    if series:
        labels = ("second objective (maximised)", "first objective: fitness (maximised)")
        plot_front(series, run / "fronts.png", *labels, "evaluated architectures and fronts")


# ----------------------------------------------------------------- markdown and HTML
def _result_file(run: Path, kind: str) -> Any:
    name = {"search": "summary.json", "gradient": "result.json"}.get(kind, "results.json")
    return _read_json(run / name)


def _settings(run: Path, kind: str) -> dict[str, Any]:
    """What the run was started with: ``run_config.json``'s settings and the result
    file's sections of scalars (e.g. ``search_training``, ``final_training``)."""
    settings: dict[str, Any] = {}
    if (run / RUN_CONFIG_FILE).is_file():
        settings.update(_scalars(_read_json(run / RUN_CONFIG_FILE).get("config", {})))
    record = _result_file(run, kind)
    if kind in ("search", "gradient") and isinstance(record, dict):
        sections = {k: _scalars(v) for k, v in record.items() if isinstance(v, dict)}
        settings.update(_flat({k: v for k, v in sections.items() if v}))
    return settings


def _headline(run: Path, kind: str) -> dict[str, Any]:
    """The run's result in numbers: the top-level scalars of ``summary.json``,
    ``result.json`` or ``results.json`` (with one level of sections for the latter)."""
    record = _result_file(run, kind)
    if kind in ("search", "gradient") or not isinstance(record, dict):
        return _scalars(record)
    sections = {k: _scalars(v) for k, v in record.items() if isinstance(v, dict)}
    return _scalars(record) | _flat({k: v for k, v in sections.items() if v})


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines


def _columns(rows: list[dict[str, Any]], limit: int = 9) -> list[str]:
    """The columns worth a table: scalars, ``arch`` and ``fitness`` first, no genotypes."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(k for k, v in row.items() if not str(v).startswith("[")))
    first = [c for c in ("log", "table", "arch", "fitness") if c in seen]
    rest = [c for c in seen if c not in first and c not in ("genotype", "member")]
    return (first + rest)[:limit]


def results_markdown(run: Path, kind: str, rows: list[dict[str, Any]]) -> str:
    """``results.md``: the headline numbers, the settings and the best evaluations."""
    head = _headline(run, kind)
    lines = [f"# {kind} run: {run.name}", "", "## Result", ""]
    lines += _md_table([{"field": k, "value": v} for k, v in head.items()], ["field", "value"])
    settings = _settings(run, kind)
    if settings:
        lines += ["", "## Settings", ""]
        pairs = [{"setting": k, "value": v} for k, v in settings.items()]
        lines += _md_table(pairs, ["setting", "value"])
    best = _best_rows(rows)
    if best:
        lines += ["", f"## Evaluations ({len(rows)}; best {len(best)} shown)", ""]
        lines += _md_table(best, _columns(best))
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code,td{font-family:ui-monospace,monospace}figure{margin:1em 0}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
.grid{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
.grid section{flex:1 1 400px;min-width:0}
.wide{overflow-x:auto;max-width:100%}td{overflow-wrap:anywhere}
.pairs td:first-child{white-space:nowrap}
"""


def _html_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    kind = ' class="pairs"' if columns[0] in ("field", "setting") else ""
    return f'<div class="wide"><table{kind}><tr>{head}</tr>{body}</table></div>'


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
        f"<figcaption>{name}</figcaption></figure>"
    )


def report_html(run: Path, kind: str, rows: list[dict[str, Any]], notes: list[str]) -> str:
    """``report.html``: one page, no external files (CSS inline, PNGs as data URIs)."""
    head = _headline(run, kind)
    parts = [
        f"<h1>nasjax {kind} run <code>{html.escape(run.name)}</code></h1>",
        f"<p>{len(rows)} evaluations; folder <code>{html.escape(str(run.resolve()))}</code>."
        " Rebuilt by <code>nasjax report</code>; every evaluation is in"
        " <code>evaluations.csv</code>.</p>",
    ]
    if (run / CELL_FILE).is_file():
        found = "Found cell" if kind in ("search", "gradient") else "Most accurate cell evaluated"
        parts += [f"<h2>{found}</h2>", _figure(run / CELL_FILE)]
    figures = [p for p in sorted(run.glob("*.png")) if p.name != CELL_FILE]
    if figures:
        parts += ["<h2>Figures</h2>", '<div class="grid">']
        parts += [_figure(p) for p in figures] + ["</div>"]
    pairs = [{"field": k, "value": v} for k, v in head.items()]
    parts += ['<div class="grid"><section><h2>Result</h2>']
    parts += [_html_table(pairs, ["field", "value"]), "</section>"]
    settings = _settings(run, kind)
    if settings:
        pairs = [{"setting": k, "value": v} for k, v in settings.items()]
        parts += ["<section><h2>Settings</h2>", _html_table(pairs, ["setting", "value"])]
        parts += ["</section>"]
    parts += ["</div>"]
    best = _best_rows(rows)
    if best:
        parts += [f"<h2>Evaluations ({len(rows)}; best {len(best)} shown)</h2>"]
        parts += [_html_table(best, _columns(best, limit=12))]
    if kind == "llm" and (run / "results.md").is_file():
        text = html.escape((run / "results.md").read_text())
        parts += ["<h2>results.md</h2>", f"<pre>{text}</pre>"]
    parts += [f"<p><em>{html.escape(n)}</em></p>" for n in notes]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>nasjax report: {html.escape(run.name)}</title><style>{_CSS}</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )


def write_report(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Rebuilds the report files of run folder ``run_dir`` (see the module docstring).

    Args:
      run_dir: a finished run folder of any kind in :data:`KINDS`.

    Returns:
      ``{"kind", "evaluations", "files"}``: the run kind, the number of rows in
      ``evaluations.csv`` and the paths written.

    Raises:
      NasjaxError: one line when the folder is missing or holds no run nasjax knows.
    """
    run = Path(run_dir)
    kind = detect_kind(run)
    rows = evaluation_rows(run, kind)
    notes = _plots(run, kind, rows)
    written = []
    if rows:
        write_text_atomic(run / "evaluations.csv", _csv_text(rows))
        written.append(run / "evaluations.csv")
    if kind != "llm" or not (run / "results.md").is_file():
        write_text_atomic(run / "results.md", results_markdown(run, kind, rows))
        written.append(run / "results.md")
    written += [run / name for name in PLOTS if (run / name).is_file()]
    write_text_atomic(run / "report.html", report_html(run, kind, rows, notes))
    written.append(run / "report.html")
    return {"kind": kind, "evaluations": len(rows), "files": [str(p) for p in written]}
