"""Hyperband and successive halving over training steps, with real training and resume.

Li, Jamieson, DeSalvo, Rostamizadeh & Talwalkar, "Hyperband: A Novel Bandit-Based Approach
to Hyperparameter Optimization", JMLR 18(185), 2018, Algorithm 1, with the resource being
training steps: ``R = max_steps`` and the smallest rung ``min_steps``; ``s_max =
floor(log_eta(R / min_steps))``, ``B = (s_max + 1) R``. Bracket ``s = s_max .. 0`` draws
``n = ceil(B / R * eta^s / (s + 1))`` architectures uniformly from the space and runs
successive halving (Jamieson & Talwalkar, AISTATS 2016): rung ``i`` trains ``n_i =
floor(n eta^-i)`` of them to ``r_i = R eta^(i - s)`` steps (rounded down) and keeps the best
``n_(i+1)`` by validation accuracy (maximised; NaN is the worst). Successive halving alone
is Hyperband with one bracket (``brackets=1``: the most exploratory one, ``s = s_max``).

Unlike the paper's pseudo-code, a rung does not retrain from scratch: it continues each
survivor from its own parameters, BatchNorm statistics and optimiser state for
``r_i - r_(i-1)`` steps (:mod:`nasjax.evaluation.rung_training`), every member on the
minibatches and cosine learning-rate schedule of one ``R``-step run, so a member that
reaches ``R`` steps is exactly that run. The found architecture is the one with the best
validation accuracy at ``R`` steps (ties: the first). Bracket ``s`` draws from
``fold_in(key, s)`` (its architectures and member keys), so successive halving's bracket is
Hyperband's first. The run folder is a :class:`nasjax.rundir.RunDir` checkpointed after
every rung (survivors' states included), so ``--resume`` continues exactly: the records
are those of an uninterrupted run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from nasjax.errors import NasjaxError
from nasjax.evaluation.rung_training import RungTrainer
from nasjax.rundir import RunDir
from nasjax.search.loop import RESULTS_FILE, SearchResult, member_records
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import BestSoFar
from nasjax.tracking import Callback, notify_end, notify_records


class Rung(NamedTuple):
    """One rung of a bracket: ``members`` architectures trained to ``steps`` steps."""

    bracket: int  # s
    rung: int  # i
    members: int  # n_i
    steps: int  # r_i (cumulative)


def max_brackets(min_steps: int, max_steps: int, eta: int) -> int:
    """``s_max + 1``: the brackets ``min_steps .. max_steps`` allow at ratio ``eta``.

    Raises:
      NasjaxError: ``eta < 2``, ``min_steps < 1`` or ``min_steps > max_steps``.
    """
    if eta < 2:
        raise NasjaxError(f"--eta must be >= 2, got {eta}")
    if not 1 <= min_steps <= max_steps:
        raise NasjaxError(f"--min-steps {min_steps} must be between 1 and --steps ({max_steps})")
    s = 0
    while min_steps * eta ** (s + 1) <= max_steps:  # integers: no log rounding
        s += 1
    return s + 1


def hyperband_schedule(
    min_steps: int, max_steps: int, eta: int, brackets: int | None = None
) -> list[list[Rung]]:
    """The rungs of each bracket, ``s = s_max`` first (Li et al. 2018, Algorithm 1).

    Args:
      min_steps: the smallest rung's steps (``r`` of the paper, the unit of ``R``).
      max_steps: ``R``, the steps of the top rung of every bracket.
      eta: the halving ratio (``>= 2``): a rung keeps ``1 / eta`` of its members.
      brackets: run the first ``brackets`` brackets (default all ``s_max + 1``); 1 is
        successive halving.

    Raises:
      NasjaxError: one line for a bad ``eta``, steps or ``brackets``.
    """
    count = max_brackets(min_steps, max_steps, eta)
    brackets = count if brackets is None else brackets
    if not 1 <= brackets <= count:
        raise NasjaxError(
            f"--brackets {brackets} is not in 1..{count} (the brackets that --min-steps "
            f"{min_steps}, --steps {max_steps} and --eta {eta} give)"
        )
    s_max = count - 1
    schedule = []
    for s in range(s_max, s_max - brackets, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))  # ceil(B / R * eta^s / (s + 1))
        schedule.append(
            [Rung(s, i, n // eta**i, max_steps // eta ** (s - i)) for i in range(s + 1)]
        )
    return schedule


def schedule_totals(schedule: list[list[Rung]]) -> dict[str, int]:
    """Architectures drawn, evaluations (records) and training steps of all members."""
    steps = 0
    for bracket in schedule:
        done = 0
        for rung in bracket:
            steps += rung.members * (rung.steps - done)
            done = rung.steps
    return {
        "architectures": sum(b[0].members for b in schedule),
        "evaluations": sum(r.members for b in schedule for r in b),
        "member_steps": steps,
    }


def _bracket(key: jax.Array, space: SearchSpace, s: int, n: int) -> tuple[np.ndarray, ...]:
    """Bracket ``s``'s ``n`` architectures and member keys (raw key data)."""
    key = jax.random.fold_in(key, s)
    key_sample, key_members = jax.random.split(key)
    genotypes = np.asarray(space.sample(key_sample, n), np.int32)
    keys = np.asarray(jax.random.key_data(jax.random.split(key_members, n)))
    return genotypes, keys


def _survivors(fitness: np.ndarray, keep: int) -> np.ndarray:
    """The positions of the ``keep`` fittest (stable: ties keep the earlier; NaN last)."""
    fitness = np.where(np.isnan(fitness), -np.inf, np.asarray(fitness, np.float64))
    return np.argsort(-fitness, kind="stable")[:keep]


def run_hyperband(
    key: jax.Array,
    space: SearchSpace,
    trainer: RungTrainer,
    schedule: list[list[Rung]],
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    config: dict | None = None,
    callbacks: Sequence[Callback] = (),
) -> SearchResult:
    """Runs the brackets of ``schedule`` (see the module docstring), one rung at a time.

    Args:
      key: PRNG key of the whole search.
      space: the search space (sampling, arch strings).
      trainer: trains members further (:func:`nasjax.evaluation.rung_training.rung_trainer`,
        with ``config.steps == max_steps``).
      schedule: :func:`hyperband_schedule`'s brackets.
      out_dir: the run folder (``results.jsonl``: one record per member and rung, with
        ``bracket``, ``rung`` and ``steps``; ``checkpoints/`` after every rung); ``None``
        keeps nothing.
      resume: continue from the last checkpoint in ``out_dir``, exactly.
      progress: show a tqdm bar over rungs with the best fitness at ``max_steps``.
      config: every setting that changes the results, compared on ``resume``.
      callbacks: :class:`nasjax.tracking.Callback` s, told each record (step: the
        evaluation's index) and, at the end, the best fitness and the architectures drawn.

    Returns:
      The best architecture at ``max_steps``, its validation accuracy, the number of
      architectures drawn and the final state.
    """
    rungs = [rung for bracket in schedule for rung in bracket]
    top = max(r.steps for r in rungs)
    width = max([r.members for r in rungs if r.rung > 0] or [1])  # survivors held
    template = trainer.init(np.zeros((width, 2), np.uint32))
    leaves, treedef = jax.tree.flatten(template)
    state = {"members": np.zeros(width, np.int32), "leaves": leaves}
    state["best"] = BestSoFar.create(space)
    with RunDir.open(out_dir, config, resume=resume, log_name=RESULTS_FILE, unit="rung") as run:
        start, state = run.restore(state)
        t0 = time.time()
        best = state["best"]
        with tqdm(
            total=len(rungs), initial=start, desc="hyperband", unit="rung", disable=not progress
        ) as bar:
            for t in range(start, len(rungs)):
                rung = rungs[t]
                bracket = schedule[[b[0].bracket for b in schedule].index(rung.bracket)]
                genotypes, keys = _bracket(key, space, rung.bracket, bracket[0].members)
                members, held, done = _entrants(state, rung, bracket, trainer, keys, treedef)
                fitness, metrics, reached = trainer.train(
                    keys[members], genotypes[members], held, done, rung.steps
                )
                records = member_records(
                    space, t, genotypes[members], fitness, metrics, time.time() - t0
                )
                for record, m in zip(records, members):
                    record.update(member=int(m), bracket=rung.bracket, rung=rung.rung)
                    record["steps"] = rung.steps
                if rung.steps == top:
                    best = best.update(genotypes[members], fitness)
                state = _next_state(state, rung, bracket, members, fitness, reached, best)
                run.append(records)
                notify_records(callbacks, records, sum(r.members for r in rungs[:t]))
                run.save(t + 1, state)
                bar.set_postfix(best=f"{float(best.fitness):.4f}")
                bar.update(1)
    drawn = schedule_totals(schedule)["architectures"]
    notify_end(callbacks, {"best_fitness": float(best.fitness), "num_evaluated": drawn})
    return SearchResult(
        best_genotype=np.asarray(best.genotype),
        best_fitness=float(best.fitness),
        num_evaluated=drawn,
        state=state,
    )


def _entrants(
    state: dict[str, Any],
    rung: Rung,
    bracket: list[Rung],
    trainer: RungTrainer,
    keys: np.ndarray,
    treedef: Any,
) -> tuple[np.ndarray, Any, int]:
    """Who trains in ``rung`` (positions in the bracket), from which states and steps: the
    whole bracket from initialisation at rung 0, else the survivors the state holds."""
    if rung.rung == 0:
        return np.arange(rung.members), trainer.init(keys), 0
    held = [np.asarray(a)[: rung.members] for a in state["leaves"]]
    members = np.asarray(state["members"])[: rung.members]
    return members, jax.tree.unflatten(treedef, held), bracket[rung.rung - 1].steps


def _next_state(
    state: dict[str, Any],
    rung: Rung,
    bracket: list[Rung],
    members: np.ndarray,
    fitness: np.ndarray,
    reached: Any,
    best: BestSoFar,
) -> dict[str, Any]:
    """The checkpointed state after ``rung``: the survivors (positions in the bracket) and
    their states in the first rows, the rest kept as they were (fixed shapes)."""
    members_out = np.array(state["members"])
    leaves = [np.array(a) for a in state["leaves"]]
    if rung.rung + 1 < len(bracket):
        keep = _survivors(fitness, bracket[rung.rung + 1].members)
        members_out[: len(keep)] = members[keep]
        for out, new in zip(leaves, jax.tree.leaves(reached)):
            out[: len(keep)] = np.asarray(new)[keep]
    return {"members": members_out, "leaves": leaves, "best": best}
