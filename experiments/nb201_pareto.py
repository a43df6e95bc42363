"""Accuracy-vs-cost Pareto fronts on NAS-Bench-201: NSGA-II, random search, scalarised REA.

Every architecture of the NAS-Bench-201 table has a CIFAR-10 test accuracy
(``c10_test_200ep``) and a cost: a latency column measured on a device (``lat_<device>``,
from HELP, Lee et al. NeurIPS 2021), or ``params`` / ``flops`` counted by
:mod:`nasjax.objectives` under the benchmark profiler's convention. Each strategy gets the
same fixed budget of table queries per seed, and everything it queried forms its front:

* ``nsga2``: NSGA-II (Deb et al. 2002), population 20, told ``(accuracy, -cost)``;
* ``random``: uniform random sampling;
* ``rea_scalarised``: regularized evolution (population 10, tournament 3) run once per
  weight ``w`` in ``SCALARISATION_WEIGHTS`` on ``w * acc - (1 - w) * cost`` (both
  normalised), each with an equal share of the budget.

Hypervolume is measured on the normalised objectives: accuracy and cost are min-max
scaled over the whole table, so the reference point ``(0, 0)`` is the table's worst
accuracy at its highest cost and a hypervolume of 1 would be a single architecture with
the best accuracy at the lowest cost. ``front_recovered`` is the fraction of the table's
true Pareto front (computed exhaustively) that a strategy queried; ``igd`` is the mean
distance from a true-front point to the nearest point found (normalised units).

With ``--bound B``, a fourth search, ``rea_constrained``, maximises accuracy subject to
``cost <= B``: regularized evolution told :func:`nasjax.strategies.constrained_fitness`
(infeasible cells score below every feasible one, ordered by their violation), with the
whole budget; it reports the best feasible accuracy found per seed next to the table's
optimum under the same bound. A bound below the cheapest cell is refused with a message.

Command::

    python experiments/nb201_pareto.py --objective lat_pixel3 --seeds 20 --out runs/pareto
    python experiments/nb201_pareto.py --objective params --bound 0.5e6 --out runs/bounded

Expected runtime: about a minute on a 2-core CPU (each strategy is one compiled call over
all seeds). Writes ``OUT/results.json`` (per strategy: ``hypervolume`` mean and std over
seeds, ``hypervolume_fraction`` of the true front's, ``front_recovered``, ``igd``) and
``OUT/pareto_front.png`` (all architectures, the true front, each strategy's front of
seed 0). ``--smoke`` runs 2 seeds with a small budget.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import check_choice
from nasjax.evaluation.tabular import latency_columns, load_nb201_columns
from nasjax.flags import (
    OneLineErrorParser,
    at_least,
    check_memory,
    positive_float,
    positive_int,
    run_script,
    seed,
)
from nasjax.pareto import front_recovery, hypervolume_2d, igd, pareto_mask
from nasjax.plots import finish_figure
from nasjax.rundir import check_out_folder, write_json_atomic
from nasjax.search.tabular import BYTES_PER_QUERY, query_table
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.nb201_costs import nb201_cost_table
from nasjax.strategies import check_bound_satisfiable, constrained_fitness, make_strategy

ACCURACY_COLUMN = "c10_test_200ep"
COUNTED_OBJECTIVES = ("params", "flops")  # counted by nasjax.objectives for CIFAR-10
SCALARISATION_WEIGHTS = (0.2, 0.4, 0.6, 0.8)
NSGA2_POPULATION = 20
REA_SETTINGS = {"population_size": 10, "sample_size": 3}
STRATEGIES = ("nsga2", "random", "rea_scalarised")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", default="lat_pixel3", help="lat_<device>, params or flops")
    p.add_argument("--seeds", type=positive_int, default=20, help="searches per strategy")
    p.add_argument(
        "--budget",
        type=at_least(NSGA2_POPULATION),
        default=200,
        help=f"table queries per search (>= {NSGA2_POPULATION}: one NSGA-II generation)",
    )
    p.add_argument("--out", default="runs/nb201_pareto", help="output folder")
    p.add_argument("--nb201", default=None, help="path of nb201.csv.gz (else $NASJAX_NB201)")
    p.add_argument("--seed", type=seed, default=0, help="base PRNG seed")
    p.add_argument("--bound", type=positive_float, help="also run REA with cost <= BOUND")
    p.add_argument("--smoke", action="store_true", help="2 seeds, 40 queries (for tests)")
    return p.parse_sized(argv, {"seeds": 2, "budget": 40})


def load_objectives(objective: str, path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(accuracy %, cost)`` per dense code; the cost column is checked by name."""
    lat = latency_columns(path)
    check_choice("objective", objective, (*lat, *COUNTED_OBJECTIVES))
    if objective in COUNTED_OBJECTIVES:
        columns = load_nb201_columns([ACCURACY_COLUMN], path)
        cost = np.asarray(nb201_cost_table(objective, "cifar10"), np.float64)
    else:
        columns = load_nb201_columns([ACCURACY_COLUMN, objective], path)
        cost = columns[objective]
    return columns[ACCURACY_COLUMN], cost


def normalise(accuracy: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """``float32[N, 2]`` maximised objectives in [0, 1]: scaled accuracy, 1 - scaled cost."""
    scale = lambda v: (v - v.min()) / (v.max() - v.min())
    return np.stack([scale(accuracy), 1.0 - scale(cost)], axis=1).astype(np.float32)


def run_strategy(name: str, objectives: np.ndarray, keys: jax.Array, budget: int) -> np.ndarray:
    """Dense codes queried, ``int32[S, budget]``, one row per seed."""
    space = NB201Space()
    if name == "nsga2":
        strategy = make_strategy("nsga2", space, population_size=NSGA2_POPULATION)
        search = lambda key, told: query_table(strategy, told, key, num_queries=budget)
    elif name == "random":
        strategy = make_strategy("random", space)
        search = lambda key, told: query_table(strategy, told[:, 0], key, num_queries=budget)
    else:  # one REA per scalarisation weight, each with an equal share of the budget
        strategy = make_strategy("rea", space, **REA_SETTINGS)
        weights = jnp.asarray(SCALARISATION_WEIGHTS, jnp.float32)
        share = -(-budget // len(SCALARISATION_WEIGHTS))

        def search(key: jax.Array, told: jax.Array) -> jax.Array:
            def one(w: jax.Array, k: jax.Array) -> jax.Array:
                scalar = w * told[:, 0] + (1.0 - w) * told[:, 1]
                return query_table(strategy, scalar, k, num_queries=share)

            runs = jax.vmap(one)(weights, jax.random.split(key, len(SCALARISATION_WEIGHTS)))
            return runs.reshape(-1)[:budget]

    return _searched(search, keys, jnp.asarray(objectives))


def _searched(search: Any, keys: jax.Array, told: jax.Array) -> np.ndarray:
    """``search(key, told)`` for every key in one compiled call; the table is an argument,
    not a constant of the program (so every objective and seed count reuses it, and XLA
    does not fold a 15,625-row constant)."""
    return np.asarray(jax.jit(jax.vmap(search, in_axes=(0, None)))(keys, told))


def run_constrained(
    accuracy: np.ndarray, cost: np.ndarray, bound: float, keys: jax.Array, budget: int
) -> dict:
    """REA maximising accuracy subject to ``cost <= bound``; best feasible accuracy per seed."""
    told = constrained_fitness(
        jnp.asarray(accuracy, jnp.float32),
        jnp.asarray(cost, jnp.float32)[:, None],
        jnp.asarray([bound], jnp.float32),
    )
    strategy = make_strategy("rea", NB201Space(), **REA_SETTINGS)
    search = lambda key, told: query_table(strategy, told, key, num_queries=budget)
    codes = _searched(search, keys, told)
    feasible = cost <= bound
    best = [float(np.max(np.where(feasible[row], accuracy[row], -np.inf))) for row in codes]
    found = np.isfinite(best)
    return {
        "bound": bound,
        "best_feasible_accuracy": float(np.mean(np.asarray(best)[found])) if found.any() else None,
        "best_feasible_accuracy_std": float(np.std(np.asarray(best)[found]))
        if found.any()
        else None,
        "seeds_with_a_feasible_cell": int(found.sum()),
        "optimum_under_bound": float(accuracy[feasible].max()),
        "feasible_fraction_of_space": float(feasible.mean()),
        "feasible_fraction_of_queries": float(feasible[codes].mean()),
    }


def _padded(rows: np.ndarray, length: int, fill: float = np.nan) -> np.ndarray:
    """``rows`` followed by ``fill`` rows up to ``length`` rows."""
    pad = np.full((length - len(rows), *rows.shape[1:]), fill, rows.dtype)
    return np.concatenate([rows, pad])


_pareto_mask = jax.jit(pareto_mask)


@jax.jit
def _seed_metrics(found: jax.Array, true_front: jax.Array) -> tuple[jax.Array, ...]:
    """Hypervolume, front recovery and IGD of one queried set; its NaN rows count in none."""
    reference = jnp.zeros(2, jnp.float32)
    return (
        hypervolume_2d(found, reference),
        front_recovery(found, true_front),
        igd(found, true_front),
    )


def front_metrics(codes: np.ndarray, objectives: np.ndarray, true_front: np.ndarray) -> dict:
    """Hypervolume, front recovery and IGD of each seed's queried set, averaged. Each set
    (its distinct cells) is padded with NaN rows to the budget: one compiled program for
    every seed and strategy, not eager ops compiled again for each set's size."""
    hv, recovered, distance = [], [], []
    for row in codes:
        found = _padded(objectives[np.unique(row)], len(row))
        h, r, d = _seed_metrics(jnp.asarray(found), jnp.asarray(true_front))
        hv.append(float(h))
        recovered.append(float(r))
        distance.append(float(d))
    true_hv = float(hypervolume_2d(jnp.asarray(true_front), jnp.zeros(2, jnp.float32)))
    return {
        "hypervolume": float(np.mean(hv)),
        "hypervolume_std": float(np.std(hv)),
        "hypervolume_fraction": float(np.mean(hv) / true_hv),
        "front_recovered": float(np.mean(recovered)),
        "igd": float(np.mean(distance)),
        "per_seed_hypervolume": hv,
    }


def plot_fronts(
    path: Path,
    accuracy: np.ndarray,
    cost: np.ndarray,
    true_mask: np.ndarray,
    found: dict[str, np.ndarray],
    objective: str,
) -> None:
    """All architectures (grey), the true front (black) and each strategy's front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(cost, accuracy, s=2, c="0.8", label="all 15,625 cells", rasterized=True)
    order = np.argsort(cost[true_mask])
    ax.step(
        cost[true_mask][order],
        accuracy[true_mask][order],
        where="post",
        c="k",
        lw=1.5,
        label=f"true front ({int(true_mask.sum())} cells)",
    )
    objectives = normalise(accuracy, cost)
    for i, (name, row) in enumerate(found.items()):
        codes = np.unique(row)  # padded to the budget: one program for every strategy
        valid = _padded(np.ones(len(codes), bool), len(row), fill=False)
        points = _padded(objectives[codes], len(row), fill=0.0)
        mask = np.asarray(_pareto_mask(jnp.asarray(points), jnp.asarray(valid)))[: len(codes)]
        front = codes[mask][np.argsort(cost[codes[mask]])]
        ax.step(
            cost[front],
            accuracy[front],
            where="post",
            c=f"C{i}",
            lw=1.2,
            marker="o",
            ms=3,
            label=f"{name} (seed 0)",
        )
    ax.set_ylim(max(accuracy.min(), 80.0), accuracy.max() + 0.5)
    xlabel = objective + (" (ms)" if objective.startswith("lat_") else "")
    title = f"NAS-Bench-201: CIFAR-10 accuracy vs {objective}"
    finish_figure(
        fig, ax, path, xlabel, f"{ACCURACY_COLUMN} (%)", title, "lower right", legend_size=8
    )


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    out = check_out_folder(args.out, create=False)
    check_memory("--seeds", args.seeds, args.budget * BYTES_PER_QUERY)
    accuracy, cost = load_objectives(args.objective, args.nb201)
    if args.bound is not None:
        check_bound_satisfiable(np.array([cost.min()]), np.array([args.bound]), [args.objective])
    objectives = normalise(accuracy, cost)
    true_mask = np.asarray(pareto_mask(jnp.asarray(objectives)))
    true_front = objectives[true_mask]
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    results: dict = {
        "objective": args.objective,
        "accuracy": ACCURACY_COLUMN,
        "budget_queries": args.budget,
        "seeds": args.seeds,
        "reference_point": {
            "normalised": [0.0, 0.0],
            "accuracy": float(accuracy.min()),
            "cost": float(cost.max()),
        },
        "true_front": {
            "size": int(true_mask.sum()),
            "hypervolume": float(hypervolume_2d(jnp.asarray(true_front), jnp.zeros(2))),
        },
    }
    found = {}
    for name in STRATEGIES:
        t = time.perf_counter()
        codes = run_strategy(name, objectives, keys, args.budget)
        found[name] = codes[0]
        results[name] = front_metrics(codes, objectives, true_front)
        results[name]["seconds"] = round(time.perf_counter() - t, 2)
        r = results[name]
        print(
            f"{name:15s} hypervolume {r['hypervolume']:.4f} ± {r['hypervolume_std']:.4f} "
            f"({100 * r['hypervolume_fraction']:.1f}% of the true front's), front recovered "
            f"{100 * r['front_recovered']:.1f}%, IGD {r['igd']:.4f}",
            flush=True,
        )
    if args.bound is not None:
        r = results["rea_constrained"] = run_constrained(
            accuracy, cost, args.bound, keys, args.budget
        )
        best = r["best_feasible_accuracy"]
        print(
            f"rea_constrained {args.objective} <= {args.bound:g}: best feasible accuracy "
            f"{best if best is None else round(best, 2)} ± "
            f"{r['best_feasible_accuracy_std'] or 0:.2f} ({r['seeds_with_a_feasible_cell']}/"
            f"{args.seeds} seeds found one), optimum under the bound "
            f"{r['optimum_under_bound']:.2f}; {100 * r['feasible_fraction_of_space']:.1f}% of "
            f"the space and {100 * r['feasible_fraction_of_queries']:.1f}% of queries feasible",
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    plot_fronts(out / "pareto_front.png", accuracy, cost, true_mask, found, args.objective)
    results["wall_s"] = round(time.perf_counter() - start, 2)
    write_json_atomic(out / "results.json", results)
    print(
        f"true front: {results['true_front']['size']} cells, hypervolume "
        f"{results['true_front']['hypervolume']:.4f}; wrote {out / 'results.json'}"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    return run_script(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
