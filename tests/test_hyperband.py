"""Hyperband / successive halving (nasjax.search.hyperband, nasjax.evaluation.rung_training).

Pins the schedule to Li et al. 2018's Table 1 (exact integers), that a rung continues each
survivor from its own state (two rungs compute exactly what one run of the same steps
does), that ``--resume`` after kill -9 ends with an uninterrupted run's records and
summary, and that bad input is one line and exit 2. Every run here uses the settings of
one smoke search (seed 3), so the rung program compiles once for the module.
"""

import json
import signal

import jax
import numpy as np
import pytest
from test_faults import Loop, checkpoints, launch, outcome, run_here

from nasjax.cli import main
from nasjax.data import load_dataset
from nasjax.errors import NasjaxError
from nasjax.evaluation.rung_training import rung_trainer
from nasjax.evaluation.training import train_population
from nasjax.rundir import RUN_CONFIG_FILE
from nasjax.search.hyperband import hyperband_schedule, max_brackets, schedule_totals
from nasjax.spaces import make_space
from nasjax.training_recipe import TrainConfig

# Li et al. 2018, Table 1 (R = 81, eta = 3): per bracket s = 4 .. 0, (n_i, r_i) per rung.
PAPER_TABLE = [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
]

# The smoke search: --steps capped at 6, --eta 3, --min-steps 6 // 27 -> 1: bracket s = 1
# trains 3 architectures 2 steps and the best one 4 more; bracket s = 0 trains 2 for 6.
HYPERBAND = Loop(
    "nasjax",
    ("search", "--smoke", "--strategy", "hyperband", "--seed", "3", "--no-progress"),
    "results.jsonl",
    "summary.json",
    "rung",
    "nasjax: ",
    ("--eta", "2", "--eta 3 -> 2"),
    "save:1",
)
SMOKE_CONFIG = TrainConfig(steps=6, channels=4)  # the smoke search's recipe


def _table(schedule):
    return [[(r.members, r.steps) for r in bracket] for bracket in schedule]


def test_schedule_is_the_papers_table():
    assert _table(hyperband_schedule(1, 81, 3)) == PAPER_TABLE
    assert [r.bracket for b in hyperband_schedule(1, 81, 3) for r in b][:5] == [4] * 5
    # In steps: the same table scaled by the smallest rung.
    scaled = [[(n, 10 * r) for n, r in b] for b in PAPER_TABLE]
    assert _table(hyperband_schedule(10, 810, 3)) == scaled
    # Successive halving: the first (most exploratory) bracket alone.
    assert _table(hyperband_schedule(1, 81, 3, brackets=1)) == PAPER_TABLE[:1]
    # eta = 2, R = 8 (as mlr3hyperband's documented table).
    assert _table(hyperband_schedule(1, 8, 2)) == [
        [(8, 1), (4, 2), (2, 4), (1, 8)],
        [(6, 2), (3, 4), (1, 8)],
        [(4, 4), (2, 8)],
        [(4, 8)],
    ]
    # Steps that are not a power of eta apart: rounded down, the top rung is R.
    assert _table(hyperband_schedule(22, 200, 3)) == [
        [(9, 22), (3, 66), (1, 200)],
        [(5, 66), (1, 200)],
        [(3, 200)],
    ]
    assert schedule_totals(hyperband_schedule(22, 200, 3)) == {
        "architectures": 17,
        "evaluations": 22,
        "member_steps": 9 * 22 + 3 * 44 + 134 + 5 * 66 + 134 + 3 * 200,
    }
    assert max_brackets(1, 1, 2) == 1  # one rung: R steps at once


@pytest.mark.parametrize(
    "args, message",
    [
        ((1, 81, 1), "--eta must be >= 2, got 1"),
        ((82, 81, 3), "--min-steps 82 must be between 1 and --steps (81)"),
        ((1, 81, 3, 6), "--brackets 6 is not in 1..5"),
    ],
)
def test_bad_schedule_is_one_line(args, message):
    with pytest.raises(NasjaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hyperband_schedule(*args)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The smoke hyperband search, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("hyperband") / "reference"
    assert main([*HYPERBAND.flags, "--out", str(out)]) == 0
    return out


def test_records_summary_and_the_found_cell(reference):
    lines = (reference / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["generation"], r["bracket"], r["rung"], r["steps"]) for r in records] == [
        (0, 1, 0, 2),
        (0, 1, 0, 2),
        (0, 1, 0, 2),
        (1, 1, 1, 6),
        (2, 0, 0, 6),
        (2, 0, 0, 6),
    ]
    # Rung 1 trains the best of rung 0 (ties: the first) further.
    first = records[:3]
    best = max(range(3), key=lambda i: (first[i]["fitness"], -i))
    assert records[3]["member"] == first[best]["member"] == best
    assert records[3]["arch"] == first[best]["arch"]
    summary = json.loads((reference / "summary.json").read_text())
    top = [r for r in records if r["steps"] == 6]
    winner = max(top, key=lambda r: r["fitness"])  # max keeps the first of equals
    assert summary["arch"] == winner["arch"]
    assert summary["search_valid_accuracy"] == winner["fitness"]
    assert summary["schedule"] == [[[3, 2], [1, 6]], [[2, 6]]]
    assert (summary["architectures"], summary["evaluations"], summary["member_steps"]) == (5, 6, 22)
    assert summary["final_training"]["steps"] == 6 and 0 <= summary["test_accuracy"] <= 1
    assert (reference / "search_curve.png").stat().st_size > 0


def test_a_rung_continues_from_the_members_own_state(reference):
    """Steps [0, 2] then [2, 6] from the returned states equal [0, 6] at once, exactly,
    and equal the population trainer's from-scratch run of 6 steps."""
    space, data = make_space("nb201"), load_dataset("mnist1d", seed=3)
    trainer = rung_trainer(space, data, SMOKE_CONFIG)
    genotypes = np.asarray(space.sample(jax.random.key(7), 2), np.int32)
    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(8), 2)))
    start = trainer.init(keys)
    once = trainer.train(keys, genotypes, start, 0, 6)
    part = trainer.train(keys, genotypes, start, 0, 2)
    twice = trainer.train(keys, genotypes, part[2], 2, 6)
    for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(twice)):
        np.testing.assert_array_equal(a, b)
    early, late = jax.tree.leaves(part[2])[0], jax.tree.leaves(once[2])[0]
    assert not np.array_equal(early, late)  # the first rung really stopped early
    # One member: the final retraining's program (compiled by the reference run).
    scratch = train_population(
        keys[:1], genotypes[:1], data, space, SMOKE_CONFIG, split=False, keep_variables=True
    )
    np.testing.assert_array_equal(scratch["valid_accuracy"], once[0][:1])
    np.testing.assert_array_equal(scratch["test_accuracy"], once[1]["test_accuracy"][:1])
    np.testing.assert_allclose(scratch["loss_curve"][0, -1], once[1]["final_train_loss"][0], 1e-5)
    for a, b in zip(jax.tree.leaves(scratch["params"]), jax.tree.leaves(once[2].params)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)


def test_resume_after_kill_gives_the_uninterrupted_records(reference, tmp_path, capsys):
    out = tmp_path / "run"
    # kill -9 as rung 2 is checkpointed: checkpoint 1 kept, rung 2's records logged past it.
    proc = launch(HYPERBAND, out, "kill@save:2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert checkpoints(out) == [1] and (out / RUN_CONFIG_FILE).exists()
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    # A flag that changes results is refused in one line.
    status, err = run_here(HYPERBAND, out, capsys, True, "--eta", "2")
    assert status == 2 and len(err) == 1 and "--eta 3 -> 2" in err[0]
    status, err = run_here(HYPERBAND, out, capsys, True)
    assert status == 0 and err == []
    assert checkpoints(out) == [2, 3]
    assert outcome(HYPERBAND, out) == outcome(HYPERBAND, reference)


CLI = ["search", "--smoke", "--no-progress", "--strategy", "hyperband"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eta", "1"], "--eta must be >= 2, got 1"),
        (["--eta", "2.5"], "--eta must be an integer >= 2, got '2.5'"),
        (["--min-steps", "0"], "--min-steps must be >= 1, got 0"),
        (["--min-steps", "7"], "--min-steps 7 must be between 1 and --steps (6)"),
        (["--brackets", "3"], "--brackets 3 is not in 1..2 (the brackets that --min-steps 1"),
        (["--strategy", "rea", "--eta", "3"], "--eta applies to --strategy hyperband only"),
        (["--space", "transformer"], "text spaces such as 'transformer' cannot"),
        (["--max-params", "1e5"], "--strategy hyperband has no cost bounds"),
        (["--steps", "100000", "--min-steps", "1", "--eta", "2"], "starts a bracket of 65536"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*CLI, *flags, "--out", str(out)]
    if "--smoke" in argv and "--steps" in flags:
        argv.remove("--smoke")  # the smoke cap would hide the size
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()  # refused before any work
