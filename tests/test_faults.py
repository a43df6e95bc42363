"""Fault injection against the real entry points (issue 21): kill -9, Ctrl-C, a damaged
checkpoint, changed flags and bad input.

Each search loop kind (the NB201 search of ``python -m nasjax search`` and the gradient
search of ``experiments/darts_search.py``) runs once uninterrupted (the reference, in this
process) and once as a chain, each process stopped at an exact point by
``tests/fault_runner.py`` (no sleeps, no races) and resumed by the next:

1. kill -9 before the first checkpoint: as the first step is logged (NB201: a log is left
   without a checkpoint) or before anything compiles (gradient: an empty folder);
2. ``--resume`` (one note: no checkpoint, a new run), kill -9 mid-run (checkpoint 1 kept,
   the records of step 2 logged past it);
3. ``--resume``, Ctrl-C (SIGINT) once the state is restored: exit 130, one line naming
   the step, no traceback;
4. ``--resume``, kill -9 as the final retraining starts;
5. the newest checkpoint damaged, ``--resume`` (in this process): one warning line, the
   older checkpoint restored, and the run completes.

The chain must end with the reference's records and result (all but wall-clock times),
which holds only if every resume continued exactly. The steps that need no fresh process
(the reference, the last resume, a changed flag and a garbage log line refused in one
line) run in this process, where the compiled programs are shared; the processes get this
process's host devices and XLA flags, so both compute the same numbers and the processes
reuse this process's compiled programs from the persistent cache.
"""

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import load_experiment

from nasjax.cli import main as cli_main
from nasjax.rundir import CHECKPOINT_DIR, RUN_CONFIG_FILE

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "fault_runner.py"
TIMES = {"wall_s", "search_s", "search_s_per_epoch", "retrain_s"}  # differ run to run


@dataclasses.dataclass(frozen=True)
class Loop:
    """One loop kind: its entry point, flags and files."""

    target: str  # "nasjax" or the name of an experiment script
    flags: tuple[str, ...]  # all but --out and --resume
    log: str
    result: str
    unit: str  # what a checkpoint step is
    prefix: str  # before the entry point's error and interrupt lines
    changed: tuple[str, str, str]  # a flag, a new value, how the refusal names the change
    first_kill: str  # the fault point before the first checkpoint

    def argv(self, out: Path, resume: bool) -> list[str]:
        return [*self.flags, "--out", str(out), *(["--resume"] if resume else [])]

    def main(self, argv: list[str]) -> int:
        return entry(self.target)(argv)


# Both loops run the settings (seed included) of another test's smoke run
# (tests/test_cli.py's smoke search, tests/test_darts_experiment.py's gdas), whose compiled
# programs the persistent cache then serves here: the search's, and the final retraining's,
# which is the found cell's own network.
LOOPS = {
    "nb201": Loop(
        "nasjax",
        ("search", "--smoke", "--dataset", "mnist1d", "--seed", "3", "--no-progress"),
        "results.jsonl",
        "summary.json",
        "generation",
        "nasjax: ",
        ("--seed", "4", "--seed 3 -> 4"),
        "save:1",
    ),
    "gradient": Loop(
        "darts_search",
        ("--smoke", "--method", "gdas", "--seed", "0", "--no-progress"),
        "search.jsonl",
        "result.json",
        "epoch",
        "",
        ("--method", "darts1", "--method 'gdas' -> 'darts1'"),
        "restore",  # its processes are dear: killed before the first epoch compiles
    ),
}


def entry(target: str):
    """The ``main`` of ``python -m nasjax`` or of an experiment script."""
    return cli_main if target == "nasjax" else load_experiment(target).main


def launch(loop: Loop, out: Path, fault: str = "none", resume: bool = False):
    """The loop's entry point in a fresh process with ``fault``: this process's XLA_FLAGS
    (conftest pins the host device count and -O0), so the same devices compute the same
    numbers, and the persistent cache serves what this process compiled."""
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
        "JAX_PLATFORMS": "cpu",
    }
    target = loop.target if loop.target == "nasjax" else ROOT / "experiments" / f"{loop.target}.py"
    argv = [sys.executable, str(RUNNER), fault, str(target), *loop.argv(out, resume)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def outcome(loop: Loop, out: Path) -> dict:
    """What a finished run wrote: its log records and result, without wall-clock times."""
    log = [json.loads(line) for line in (out / loop.log).read_text().splitlines()]
    result = json.loads((out / loop.result).read_text())
    return without_times({"log": log, "result": result})


def checkpoints(out: Path) -> list[int]:
    folder = out / CHECKPOINT_DIR
    steps = folder.iterdir() if folder.is_dir() else []
    return sorted(int(p.name) for p in steps if p.name.isdigit())


def log_lines(loop: Loop, out: Path) -> int:
    return len((out / loop.log).read_text().splitlines())


def stderr_lines(proc) -> list[str]:
    return proc.stderr.strip().splitlines()


def run_here(loop: Loop, out: Path, capsys, resume: bool = False, *flags: str):
    """The loop's ``main`` in this process: ``(exit status, stderr lines)``."""
    status = loop.main([*loop.argv(out, resume), *flags])
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("kind", LOOPS)
def test_killed_interrupted_and_damaged_runs_resume_to_the_reference(kind, tmp_path, capsys):
    loop, out = LOOPS[kind], tmp_path / "run"
    status, err = run_here(loop, tmp_path / "reference", capsys)
    assert status == 0 and err == []
    expected = outcome(loop, tmp_path / "reference")

    # 1. kill -9 before the first checkpoint: no checkpoint, no run_config.json.
    proc = launch(loop, out, f"kill@{loop.first_kill}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert checkpoints(out) == [] and not (out / RUN_CONFIG_FILE).exists()
    if loop.first_kill == "save:1":  # step 1's records, logged without a checkpoint
        assert log_lines(loop, out) == len(expected["log"]) // 2

    # 2. --resume: a new run, said in one note; kill -9 mid-run.
    proc = launch(loop, out, "kill@save:2", resume=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert stderr_lines(proc) == [f"note: {out} holds no checkpoint; starting a new run"]
    assert checkpoints(out) == [1] and (out / RUN_CONFIG_FILE).exists()
    assert log_lines(loop, out) == len(expected["log"])  # step 2's, past checkpoint 1

    # A changed flag is refused in one line (before the data load or any compile).
    flag, value, change = loop.changed
    status, err = run_here(loop, out, capsys, True, flag, value)
    assert status == 2 and len(err) == 1 and change in err[0]

    # 3. --resume, Ctrl-C once checkpoint 1 is restored: 130 and one line, no traceback.
    proc = launch(loop, out, "int@restore", resume=True)
    assert proc.returncode == 130, proc.stderr
    assert stderr_lines(proc) == [
        f"{loop.prefix}interrupted at {loop.unit} 2 (1 saved in {out}); resume with --resume"
    ]
    assert checkpoints(out) == [1]

    # 4. --resume, kill -9 as the final retraining starts: the search is all checkpointed.
    proc = launch(loop, out, "kill@retrain", resume=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert stderr_lines(proc) == []
    assert checkpoints(out) == [1, 2] and not (out / loop.result).exists()
    assert log_lines(loop, out) == len(expected["log"])

    # 5. The newest checkpoint damaged: restored from the older one, with one warning line.
    for data in (out / CHECKPOINT_DIR / "2").rglob("*"):
        if data.parent.name == "d":  # the arrays' bytes, truncated
            data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    status, err = run_here(loop, out, capsys, True)
    assert status == 0 and len(err) == 1, err
    assert err[0].startswith(f"warning: checkpoint 2 in {out} is damaged (")
    assert err[0].endswith("; restored step 1")
    assert outcome(loop, out) == expected

    # A garbage line in the log: one line naming it on --resume.
    lines = (out / loop.log).read_text().splitlines(True)
    (out / loop.log).write_text("".join([lines[0], "{not json\n", *lines[2:]]))
    status, err = run_here(loop, out, capsys, True)
    assert status == 2 and len(err) == 1 and f"{loop.log} line 2 is not valid JSON" in err[0]


# ----------------------------------------------------------------- bad input: one line, exit 2
def _damaged_tables(folder: Path, table: Path) -> dict[str, Path]:
    """The table truncated, with a bad CRC, not gzip, and not UTF-8."""
    raw = table.read_bytes()
    crc = bytearray(raw)
    crc[-8] ^= 0xFF  # the gzip trailer's CRC-32
    files = {
        "truncated": raw[: len(raw) // 2],
        "bad CRC": bytes(crc),
        "not gzip": b"index,arch_str\n0,|none~0|\n",
        "not UTF-8": gzip.compress("index,arch_str\n0,caf\xe9\n".encode("latin-1")),
    }
    for name, data in files.items():
        (folder / name.replace(" ", "_")).write_bytes(data)
    return {name: folder / name.replace(" ", "_") for name in files}


DAMAGE = {
    "truncated": "is damaged: truncated",
    "bad CRC": "is damaged: CRC check failed",
    "not gzip": "is damaged: not a gzip file",
    "not UTF-8": "is damaged: not UTF-8 text (byte 0xe9)",
}
CLI = ["search", "--smoke", "--no-progress"]
DARTS, TABLE5 = "darts_search", "nb201_table5"
BAD_INPUT = [  # (entry point, flags, the one line); unknown names: tests/test_cli.py
    ("nasjax", [*CLI, "--seed", "-1"], "--seed must be in 0..4294967295, got -1"),
    ("nasjax", [*CLI, "--learning-rate", "-1"], "--learning-rate must be > 0, got -1"),
    ("nasjax", [*CLI, "--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
    ("nasjax", [*CLI, "--member-batch", "0"], "--member-batch must be >= 1, got 0"),
    ("nasjax", [*CLI, "--budget", "2.5"], "--budget must be an integer >= 1, got '2.5'"),
    ("nasjax", [*CLI, "--space", "darts"], "space 'darts' has no population trainer"),
    (DARTS, ["--smoke", "--seed", "-1"], "--seed must be in 0..4294967295, got -1"),
    (DARTS, ["--smoke", "--weight-lr", "-1"], "--weight-lr must be > 0, got -1"),
    (TABLE5, ["--seeds", "100000000"], "--seeds 100000000 would need ~"),
    (TABLE5, ["--seed", "-1"], "--seed must be in 0..4294967295, got -1"),
]


def _one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("target, flags, message", BAD_INPUT)
def test_bad_flags_are_one_line_and_exit_2(target, flags, message, tmp_path, capsys):
    assert entry(target)([*flags, "--out", str(tmp_path / "out")]) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("target, flags", [("nasjax", CLI), (DARTS, ["--smoke"]), (TABLE5, [])])
def test_out_that_is_a_file_or_unwritable_is_one_line(target, flags, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a folder")
    for out, message in [
        (file, f"{file} is a file; choose another --out"),
        (file / "sub", f"{file} is a file; choose another --out"),
        (Path("/sys/nasjax-fault-test"), "cannot write to folder /sys/nasjax-fault-test"),
    ]:
        assert entry(target)([*flags, "--out", str(out)]) == 2
        assert message in _one_line(capsys)
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_table_is_one_line_naming_it(damage, table_path, tmp_path, capsys):
    path = _damaged_tables(tmp_path, table_path)[damage]
    argv = ["--smoke", "--nb201", str(path), "--out", str(tmp_path / "out")]
    assert entry(TABLE5)(argv) == 2
    line = _one_line(capsys)
    assert f"NAS-Bench-201 table {str(path)!r} {DAMAGE[damage]}" in line
    assert not (tmp_path / "out").exists()
