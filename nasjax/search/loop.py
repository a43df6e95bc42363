"""The search loop: a space, an ask/tell strategy and an evaluator, with resume.

Each generation asks the strategy for a batch of genotypes, evaluates them in one call,
tells the fitness back (MAXIMISED; NaN is the worst), appends one JSON line per evaluated
architecture to ``results.jsonl`` and checkpoints the strategy state with orbax. The
PRNG key of generation ``g`` is ``fold_in(key, g)``, so a run resumed from its last
checkpoint produces exactly the records an uninterrupted run would have. The run folder
(refusals, checkpoints, the log, the settings) is a :class:`nasjax.rundir.RunDir`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nasjax.rundir import RunDir
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import Strategy
from nasjax.tracking import Callback, notify_end, notify_records

EvaluateFn = Callable[[jax.Array, jnp.ndarray], tuple[jnp.ndarray, dict[str, Any]]]

RESULTS_FILE = "results.jsonl"


class SearchResult(NamedTuple):
    """What a finished search found (fitness is maximised)."""

    best_genotype: np.ndarray
    best_fitness: float
    num_evaluated: int
    state: Any


def member_records(
    space: SearchSpace,
    generation: int,
    population: np.ndarray,
    fitness: np.ndarray,
    metrics: dict[str, Any],
    wall_s: float,
) -> list[dict]:
    """One record per member: generation, member, arch, genotype, fitness (maximised; a
    list when multi-objective), wall time, and every per-member ``[B]`` metric."""
    per_member = {
        k: np.asarray(v)
        for k, v in metrics.items()
        if np.ndim(v) == 1 and len(v) == len(population)
    }
    out = []
    for i, genotype in enumerate(population):
        record = {
            "generation": generation,
            "member": i,
            "arch": space.to_string(genotype),
            "genotype": [int(v) for v in genotype],
            "fitness": np.asarray(fitness[i], float).tolist(),  # a list when multi-objective
            "wall_s": round(wall_s, 3),
        }
        record.update({k: float(v[i]) for k, v in per_member.items()})
        out.append(record)
    return out


def run_search(
    key: jax.Array,
    space: SearchSpace,
    strategy: Strategy,
    evaluate: EvaluateFn,
    num_generations: int,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    config: dict | None = None,
    callbacks: Sequence[Callback] = (),
) -> SearchResult:
    """Runs ``num_generations`` ask/evaluate/tell rounds.

    Args:
      key: PRNG key of the whole search.
      space: the search space (for arch strings in the records).
      strategy: an ask/tell strategy.
      evaluate: ``evaluate(key, population) -> (fitness, metrics)``; fitness is
        ``[B]``, or ``[B, M]`` for a multi-objective strategy (recorded as a list), and
        maximised; metrics entries of shape ``[B]`` are copied into the records.
      num_generations: number of rounds (``B * num_generations`` evaluations).
      out_dir: the run folder (:class:`nasjax.rundir.RunDir`: ``results.jsonl``,
        ``checkpoints/``, ``run_config.json``); ``None`` keeps nothing.
      resume: continue from the last checkpoint in ``out_dir`` (records after it are
        dropped and recomputed, identically); refused if ``config`` differs from the run's.
      progress: show a tqdm bar with the best fitness so far.
      config: every setting that changes the results (e.g. the command-line flags),
        stored with the first checkpoint and compared on ``resume``; ``None``: unchecked.
      callbacks: :class:`nasjax.tracking.Callback` s, told each record (step: the
        evaluation's index, ``generation * B + member``) and, at the end, the best fitness
        and the number evaluated.

    Returns:
      The best genotype, its fitness, the number evaluated and the final state.
    """
    key_init, key_loop = jax.random.split(key)
    state = strategy.init(key_init)
    ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
    log = RESULTS_FILE
    with RunDir.open(out_dir, config, resume=resume, log_name=log, unit="generation") as run:
        start, state = run.restore(state)
        t0 = time.time()
        with tqdm(
            total=num_generations, initial=start, desc="search", unit="gen", disable=not progress
        ) as bar:
            for generation in range(start, num_generations):
                key_ask, key_eval = jax.random.split(jax.random.fold_in(key_loop, generation))
                population, state = ask(key_ask, state)
                fitness, metrics = evaluate(key_eval, population)
                state, told = tell(state, population, fitness)
                population, fitness = np.asarray(population), np.asarray(fitness)
                wall_s = time.time() - t0
                records = member_records(space, generation, population, fitness, metrics, wall_s)
                run.append(records)
                notify_records(callbacks, records, generation * len(records))
                run.save(generation + 1, state)
                bar.set_postfix(best=f"{float(told['best_fitness']):.4f}")
                bar.update(1)
    best = state.best
    notify_end(
        callbacks,
        {"best_fitness": float(best.fitness), "num_evaluated": int(best.num_evaluated)},
    )
    return SearchResult(
        best_genotype=np.asarray(best.genotype),
        best_fitness=float(best.fitness),
        num_evaluated=int(best.num_evaluated),
        state=state,
    )
