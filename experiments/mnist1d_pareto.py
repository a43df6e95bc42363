"""Accuracy-vs-latency search on MNIST-1D with real training: NSGA-II against random search.

The NAS-Bench-201 cell space on MNIST-1D (1D convolutions), every candidate trained from
scratch by the population trainer (:mod:`nasjax.evaluation.training`), and its inference
latency on *this* machine predicted by a per-op lookup table measured here first
(:mod:`nasjax.spaces.nb201_latency`; its Spearman against measured latency is reported). Both
strategies get the same number of trained architectures:

* ``nsga2``: NSGA-II (Deb et al. 2002) told ``(valid accuracy, -latency)``;
* ``random``: uniform random sampling.

Each search streams ``OUT/<strategy>/results.jsonl``, checkpoints every generation and
resumes with ``--resume``. The fronts are compared by hypervolume of
``(test accuracy, 1 - latency / max latency)`` with reference point ``(0, 0)`` (zero
accuracy at the slowest cell of the space, by the table). The found fronts' latencies
are then measured directly and printed next to the table's predictions.

Command::

    python experiments/mnist1d_pareto.py --out runs/mnist1d_pareto

Expected runtime: about 10 minutes on a 2-core CPU (latency table ~1 min, 2 x 40
architectures of 200 steps). ``--smoke`` trains 2 x 8 tiny candidates for tests. Writes
``OUT/results.json`` and ``OUT/pareto_front.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nasjax.devices import use_cpu_cores

use_cpu_cores()  # before JAX starts: one host device per core

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nasjax.data import load_dataset  # noqa: E402
from nasjax.evaluation.training import TrainConfig, train_population  # noqa: E402
from nasjax.flags import (  # noqa: E402
    OneLineErrorParser,
    at_least,
    positive_int,
    run_script,
    seed,
    tensorboard_flag,
)
from nasjax.objectives import benchmark_variables, measure_latency_ms  # noqa: E402
from nasjax.pareto import hypervolume_2d, pareto_mask  # noqa: E402
from nasjax.plots import finish_figure  # noqa: E402
from nasjax.rundir import RunDir, flags_config, write_json_atomic  # noqa: E402
from nasjax.search import run_search  # noqa: E402
from nasjax.spaces.nb201 import NB201Space  # noqa: E402
from nasjax.spaces.nb201_latency import (  # noqa: E402
    LatencyTable,
    build_latency_table,
    evaluate_latency_table,
)
from nasjax.strategies import make_strategy  # noqa: E402
from nasjax.tracking import tensorboard_callbacks  # noqa: E402

STRATEGIES = ("nsga2", "random")
SMOKE = {"population": 4, "generations": 2, "steps": 6, "channels": 4, "latency_archs": 4}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=at_least(2), default=10, help="per generation (NSGA-II)")
    p.add_argument("--generations", type=positive_int, default=4)
    p.add_argument("--steps", type=positive_int, default=200, help="training steps per candidate")
    p.add_argument("--channels", type=positive_int, default=16)
    p.add_argument("--latency-archs", type=positive_int, default=20, help="latency table check")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default="runs/mnist1d_pareto")
    p.add_argument("--resume", action="store_true", help="continue the searches in --out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--no-progress", action="store_true")
    tensorboard_flag(p)
    return p.parse_sized(argv, SMOKE)


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    out = Path(args.out)
    run_config = flags_config(args)
    for name in STRATEGIES:  # bad --out/--resume fails before the latency table
        RunDir.check(out / name, run_config, resume=args.resume)
    out.mkdir(parents=True, exist_ok=True)
    space = NB201Space()
    data = load_dataset("mnist1d", seed=args.seed)
    net_options = {"channels": args.channels, "cells_per_stage": 1}
    key_check, key_search = jax.random.split(jax.random.key(args.seed))

    # One latency table per output folder: a resumed search predicts with the same one.
    table_file = out / "latency_table.json"
    if args.resume and table_file.exists():
        table = LatencyTable.from_json(table_file)
    else:
        table = build_latency_table(space, "mnist1d", **net_options)
        table.to_json(table_file)
    check = evaluate_latency_table(key_check, table, space, num_archs=args.latency_archs)
    print(
        f"latency table on {table.device}: Spearman {check['spearman']:.3f}, "
        f"mean relative error {100 * check['mean_relative_error']:.1f}% "
        f"({args.latency_archs} cells)",
        flush=True,
    )
    all_codes = jnp.arange(space.size)
    slowest = float(jnp.max(table.predict(space.from_index(all_codes))))
    config = TrainConfig(steps=args.steps, batch_size=100, channels=args.channels)

    def evaluate_with(multi: bool):
        def evaluate(key: jax.Array, population: jax.Array) -> tuple[jax.Array, dict]:
            trained = train_population(key, population, data, space, config)
            latency = np.asarray(table.predict(population))
            valid = trained["valid_accuracy"]
            fitness = np.stack([valid, -latency / slowest], 1) if multi else valid
            metrics = {
                "valid_accuracy": valid,
                "test_accuracy": trained["test_accuracy"],
                "latency_ms_predicted": latency,
            }
            return jnp.asarray(fitness), metrics

        return evaluate

    results: dict = {
        "latency_table": {k: check[k] for k in ("spearman", "mean_relative_error")},
        "slowest_cell_ms_predicted": slowest,
        "reference_point": {"test_accuracy": 0.0, "latency_ms": slowest},
        "trained_per_strategy": args.population * args.generations,
        "training_steps": args.steps,
    }
    fronts = {}
    for name in STRATEGIES:
        options = {"population_size": args.population} if name == "nsga2" else {}
        if name == "random":
            options = {"batch_size": args.population}
        strategy = make_strategy(name, space, **options)
        run_search(
            key_search,
            space,
            strategy,
            evaluate_with(name == "nsga2"),
            args.generations,
            out / name,
            resume=args.resume,
            progress=not args.no_progress,
            config=run_config,
            callbacks=tensorboard_callbacks(args.tensorboard, name),
        )
        records = [
            json.loads(line) for line in (out / name / "results.jsonl").read_text().splitlines()
        ]
        test = np.array([r["test_accuracy"] for r in records], np.float32)
        latency = np.array([r["latency_ms_predicted"] for r in records], np.float32)
        points = np.stack([test, 1.0 - latency / slowest], 1)
        mask = np.asarray(pareto_mask(jnp.asarray(points)))
        front = [records[i] for i in np.flatnonzero(mask)]
        measured = []
        for r in front:
            net = space.decode(np.array(r["genotype"]), "mnist1d", **net_options)
            variables = benchmark_variables(net, (40, 1))
            measured.append(measure_latency_ms(net, variables, (40, 1)))
        fronts[name] = (test[mask], latency[mask])
        results[name] = {
            "hypervolume": float(hypervolume_2d(jnp.asarray(points), jnp.zeros(2))),
            "front": [
                {
                    "arch": r["arch"],
                    "test_accuracy": r["test_accuracy"],
                    "latency_ms_predicted": r["latency_ms_predicted"],
                    "latency_ms_measured": m,
                }
                for r, m in zip(front, measured)
            ],
        }
        print(f"{name:7s} hypervolume {results[name]['hypervolume']:.4f}, front:", flush=True)
        for f in results[name]["front"]:
            print(
                f"   test {100 * f['test_accuracy']:.2f}%  latency predicted "
                f"{f['latency_ms_predicted']:.3f} ms, measured {f['latency_ms_measured']:.3f} ms"
                f"  {f['arch']}"
            )
    plot_fronts(out / "pareto_front.png", fronts)
    results["wall_s"] = round(time.perf_counter() - start, 2)
    write_json_atomic(out / "results.json", results)
    print(f"wrote {out / 'results.json'}")
    return results


def plot_fronts(path: Path, fronts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (name, (test, latency)) in enumerate(fronts.items()):
        order = np.argsort(latency)
        ax.step(latency[order], 100 * test[order], where="post", marker="o", c=f"C{i}", label=name)
    finish_figure(
        fig,
        ax,
        path,
        "latency (ms, predicted by this machine's table)",
        "MNIST-1D test accuracy (%)",
        "NB201 cells on MNIST-1D: found Pareto fronts",
        "lower right",
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
