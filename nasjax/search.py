"""The search loop: a space, an ask/tell strategy and an evaluator, with resume.

Each generation asks the strategy for a batch of genotypes, evaluates them in one call,
tells the fitness back (MAXIMISED; NaN is the worst), appends one JSON line per evaluated
architecture to ``results.jsonl`` and checkpoints the strategy state with orbax. The
PRNG key of generation ``g`` is ``fold_in(key, g)``, so a run resumed from its last
checkpoint produces exactly the records an uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from nasjax.errors import NasjaxError
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.base import Strategy

EvaluateFn = Callable[[jax.Array, jnp.ndarray], tuple[jnp.ndarray, dict[str, Any]]]

RESULTS_FILE = "results.jsonl"
CHECKPOINT_DIR = "checkpoints"


class SearchResult(NamedTuple):
    """What a finished search found (fitness is maximised)."""

    best_genotype: np.ndarray
    best_fitness: float
    num_evaluated: int
    state: Any


def write_json_atomic(path: str | os.PathLike, payload: dict) -> None:
    """Writes JSON to a temporary file and renames it, so no half-written file remains."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _truncate_lines(path: Path, num_lines: int) -> None:
    """Keeps the first ``num_lines`` lines of ``path`` (records past the checkpoint go)."""
    if not path.exists():
        return
    with path.open("rb") as f:
        lines = f.readlines()[:num_lines]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(b"".join(lines))
    os.replace(tmp, path)


def _records(
    space: SearchSpace,
    generation: int,
    population: np.ndarray,
    fitness: np.ndarray,
    metrics: dict[str, Any],
    wall_s: float,
) -> list[dict]:
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


def _checkpoint_manager(out_dir: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager((out_dir / CHECKPOINT_DIR).resolve(), options=options)


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
      out_dir: where ``results.jsonl`` and ``checkpoints/`` go; ``None`` keeps nothing.
      resume: continue from the last checkpoint in ``out_dir`` (records after it are
        dropped and recomputed, identically).
      progress: show a tqdm bar with the best fitness so far.

    Returns:
      The best genotype, its fitness, the number evaluated and the final state.
    """
    key_init, key_loop = jax.random.split(key)
    state = strategy.init(key_init)
    start, num_records = 0, 0
    manager = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        manager = _checkpoint_manager(out_dir)
        latest = manager.latest_step()
        if latest is not None and not resume:
            raise NasjaxError(
                f"{out_dir} already holds a search (checkpoint of generation {latest}); "
                "pass --resume to continue it or choose another --out"
            )
        if latest is not None:
            target = {"state": state, "num_records": jnp.int32(0)}
            restored = manager.restore(latest, args=ocp.args.StandardRestore(target))
            state, num_records, start = restored["state"], int(restored["num_records"]), latest
        _truncate_lines(out_dir / RESULTS_FILE, num_records)

    ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
    t0 = time.time()
    bar = tqdm(
        total=num_generations, initial=start, desc="search", unit="gen", disable=not progress
    )
    for generation in range(start, num_generations):
        key_ask, key_eval = jax.random.split(jax.random.fold_in(key_loop, generation))
        population, state = ask(key_ask, state)
        fitness, metrics = evaluate(key_eval, population)
        state, told = tell(state, population, fitness)
        records = _records(
            space,
            generation,
            np.asarray(population),
            np.asarray(fitness),
            metrics,
            time.time() - t0,
        )
        if manager is not None:
            with (out_dir / RESULTS_FILE).open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            num_records += len(records)
            tree = {"state": state, "num_records": jnp.int32(num_records)}
            manager.save(generation + 1, args=ocp.args.StandardSave(tree))
        bar.set_postfix(best=f"{float(told['best_fitness']):.4f}")
        bar.update(1)
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    best = state.best
    return SearchResult(
        best_genotype=np.asarray(best.genotype),
        best_fitness=float(best.fitness),
        num_evaluated=int(best.num_evaluated),
        state=state,
    )
