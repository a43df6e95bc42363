"""Compression-aware search on MNIST-1D: uniform baselines vs searched mixed precision/pruning.

One NB201 cell (default: the best cell ``make search`` found on MNIST-1D) is compressed
(:mod:`nasjax.spaces.compress`): per unit (stem, each stage's cells, each reduction block,
classifier) a weight and an activation bit-width in {2, 4, 6, 8, 32} and a channel
keep-ratio in {0.25, 0.5, 0.75, 1}. Every candidate gets the same QAT recipe: ``--steps``
SGD steps, the first half at full precision, the rest quantization-aware with its policy
(:mod:`nasjax.evaluation.compression`). Then:

1. uniform baselines of that network: ``w8a8``, ``w4a4``, ``w2a2`` (QAT), ``keep0.5``,
   ``keep0.25`` (full precision, pruned) and ``w32a32`` (the float network);
2. ``mixed``: NSGA-II over the per-unit bits and keep-ratios of the fixed cell (HAQ, Wang
   et al., CVPR 2019, searched per-layer bits; APQ, Wang et al., CVPR 2020, pruning too);
3. ``joint``: NSGA-II over cell *and* compression policy (APQ's joint search).
   Both NSGA-II runs are told the scored uniform baselines before their first generation
   (no extra training), so they breed from them instead of from random policies;
4. ``dnas``: the differentiable bit-width search of Wu et al. (2018), one run per cost
   weight (hard Gumbel-softmax, :mod:`nasjax.relaxation.bit_search`), argmax policies retrained
   by the same QAT recipe.

NSGA-II maximises ``(valid accuracy, -bits_total / bits_float)``. The reported front is the
non-dominated set of all searched candidates by (valid accuracy, size), with their *test*
accuracy (re-draws of a baseline's genotype excluded); ``at_w4a4_size`` compares the
front's member of at most ``w4a4``'s size with the best validation accuracy to ``w4a4`` on
test accuracy.

Command::

    python experiments/compression_search.py --dataset mnist1d --out runs/compression

Expected runtime: about 28 minutes measured on this project's 2-core CPU while it was
shared with other jobs (C=8, 240 steps per candidate, 6 baselines + 2 x 60 searched + 3
DNAS runs and their retraining; two compiled programs). Expected result (seed 0,
measured): baselines w32a32 94.6 %, w8a8 96.1 %, w4a4 86.9 %, w2a2 27.4 %, keep0.5
78.6 %, keep0.25 48.8 %; the front dominates every compressed baseline, and at w4a4's
size (13.0 kB) its best member reaches 92.5 % at 11.2 kB, 5.6 points *above* w4a4 (with
``--generations 4`` it fell 2.3 points short; see README). ``--smoke``
runs tiny sizes for tests. Writes ``OUT/results.json``, ``OUT/compression_front.png``,
the retrained front member at w4a4's size with its bits and keep ratios (``OUT/model.json``
+ ``model.msgpack``, ``nasjax.load_result(OUT)``),
``OUT/uniform.jsonl``, ``OUT/dnas.jsonl`` and ``OUT/{mixed,joint}/results.jsonl`` (with
checkpoints; ``--resume`` reuses the scored baselines and continues the two NSGA-II
searches).
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

from nasjax.data import DATASETS, load_dataset  # noqa: E402
from nasjax.errors import check_choice  # noqa: E402
from nasjax.evaluation.compression import (  # noqa: E402
    compression_evaluator,
    population_costs,
    train_padded,
)
from nasjax.evaluation.module_training import module_accuracy  # noqa: E402
from nasjax.evaluation.training import TrainConfig, train_population  # noqa: E402
from nasjax.flags import (  # noqa: E402
    OneLineErrorParser,
    at_least,
    list_of,
    nonneg_float,
    positive_int,
    run_script,
    seed,
)
from nasjax.pareto import pareto_mask  # noqa: E402
from nasjax.plots import finish_figure  # noqa: E402
from nasjax.relaxation.bit_search import dnas_bit_search  # noqa: E402
from nasjax.rundir import RunDir, flags_config, write_json_atomic  # noqa: E402
from nasjax.search import RESULTS_FILE, run_search  # noqa: E402
from nasjax.spaces.compress import CompressedSpace  # noqa: E402
from nasjax.spaces.nb201 import NB201Space  # noqa: E402
from nasjax.spaces.saved import save_model, trained_network  # noqa: E402
from nasjax.strategies import make_strategy  # noqa: E402

BEST_CELL = (
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|skip_connect~1|"
    "+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
UNIFORM = {
    "w32a32": (32, 32, 1.0),
    "w8a8": (8, 8, 1.0),
    "w4a4": (4, 4, 1.0),
    "w2a2": (2, 2, 1.0),
    "keep0.5": (32, 32, 0.5),
    "keep0.25": (32, 32, 0.25),
}
SMOKE = {"population": 4, "generations": 1, "steps": 4, "channels": 4}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist1d", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--arch", default=BEST_CELL, help="the NB201 cell to compress")
    p.add_argument("--population", type=at_least(2), default=6, help="per generation (NSGA-II)")
    p.add_argument("--generations", type=positive_int, default=10, help="per NSGA-II search")
    p.add_argument("--steps", type=positive_int, default=240, help="training steps per candidate")
    p.add_argument("--channels", type=positive_int, default=8)
    p.add_argument(
        "--cost-weights",
        type=list_of(nonneg_float),
        default="0.02,0.1,0.5",
        help="DNAS penalties, comma-separated",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default="runs/compression")
    p.add_argument(
        "--resume", action="store_true", help="reuse the baselines, continue the searches"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_sized(argv, {**SMOKE, "cost_weights": [1.0]})
    check_choice("dataset", args.dataset, DATASETS)
    args.arch_genotype = NB201Space().from_string(args.arch)
    return args


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def _score(space, genotypes, data, config, key, chunk, joint, to_joint) -> list[dict]:
    """Trains genotypes of ``space`` (through the joint space) and returns their records."""
    out = train_padded(key, to_joint(genotypes), data, joint, config, chunk)
    costs = population_costs(space, genotypes, data.name, config)
    return [
        {
            "arch": space.to_string(g),
            "genotype": [int(v) for v in g],
            "valid_accuracy": float(out["valid_accuracy"][i]),
            "test_accuracy": float(out["test_accuracy"][i]),
            **{k: float(costs[k][i]) for k in ("bits_total", "bitops", "mac_fraction_removed")},
        }
        for i, g in enumerate(np.asarray(genotypes))
    ]


def _fitness(records: list[dict], data, config: TrainConfig, space) -> np.ndarray:
    """NSGA-II objectives ``(valid accuracy, -bits_total / bits_dense)`` of scored records."""
    genotypes = np.array([r["genotype"] for r in records], np.int32)
    dense = population_costs(space, genotypes, data.name, config)["bits_dense"]
    size = np.array([r["bits_total"] for r in records]) / dense
    return np.stack([[r["valid_accuracy"] for r in records], -size], 1).astype(np.float32)


def seeded(strategy, genotypes: np.ndarray, fitness: np.ndarray):
    """``strategy`` whose initial state has already been told the scored ``genotypes``
    (the uniform baselines): its first generation breeds from them instead of sampling."""

    def init(key: jax.Array):
        state = strategy.init(key)
        state, _ = strategy.tell(state, jnp.asarray(genotypes), jnp.asarray(fitness))
        return state

    return strategy._replace(init=init)


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    out = Path(args.out)
    run_config = flags_config(args, skip=("arch_genotype",))  # a numpy copy of --arch
    for name in ("mixed", "joint"):  # bad --out/--resume fails before the baselines
        RunDir.check(out / name, run_config, resume=args.resume)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, seed=args.seed)
    arch = tuple(int(v) for v in args.arch_genotype)
    config = TrainConfig(steps=args.steps, channels=args.channels, cells_per_stage=1)
    float_steps = args.steps // 2
    joint = CompressedSpace(float_steps=float_steps)
    fixed = CompressedSpace(fixed_arch=arch, float_steps=float_steps)
    for space in (joint, fixed):
        space.functional(args.dataset, channels=args.channels, cells_per_stage=1)

    def to_joint(genotypes: np.ndarray) -> np.ndarray:
        g = np.asarray(genotypes, np.int32).reshape(-1, fixed.num_decisions)
        return np.concatenate([np.tile(np.asarray(arch, np.int32), (len(g), 1)), g], 1)

    key_uniform, key_mixed, key_joint, key_dnas = jax.random.split(jax.random.key(args.seed), 4)
    score = dict(data=data, config=config, chunk=args.population, joint=joint, to_joint=to_joint)

    t0 = time.perf_counter()
    uniform_g = np.stack([fixed.uniform(arch, *v) for v in UNIFORM.values()])
    saved = out / "uniform.jsonl"
    uniform = _records(saved) if args.resume and saved.exists() else []
    if [r["genotype"] for r in uniform] != uniform_g.tolist():  # (re)train the baselines
        uniform = _score(fixed, uniform_g, key=key_uniform, **score)
        for name, record in zip(UNIFORM, uniform):
            record["name"] = name
        _write_jsonl(saved, uniform)
    times = {"uniform_s": time.perf_counter() - t0}
    for r in uniform:
        print(
            f"uniform {r['name']:12s} {r['bits_total'] / 8e3:8.1f} kB  test "
            f"{100 * r['test_accuracy']:.2f}%",
            flush=True,
        )

    searched: dict[str, list[dict]] = {}
    for name, space, key, kwargs in (
        ("mixed", fixed, key_mixed, {"train_space": joint, "to_train": to_joint}),
        ("joint", joint, key_joint, {}),
    ):
        t0 = time.perf_counter()
        evaluator = compression_evaluator(space, data, config, **kwargs)
        strategy = make_strategy("nsga2", space, population_size=args.population)
        seeds = uniform_g if space is fixed else to_joint(uniform_g)
        strategy = seeded(strategy, seeds, _fitness(uniform, data, config, fixed))
        run_search(
            key,
            space,
            strategy,
            evaluator.evaluate,
            args.generations,
            out / name,
            resume=args.resume,
            progress=not args.no_progress,
            config=run_config,
        )
        searched[name] = _records(out / name / RESULTS_FILE)
        times[f"{name}_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dnas_config = config._replace(steps=args.steps)
    found = dnas_bit_search(key_dnas, data, fixed, dnas_config, args.cost_weights)
    dnas = _score(fixed, found["genotypes"], key=key_dnas, **score)
    for weight, record in zip(args.cost_weights, dnas):
        record["cost_weight"] = weight
    _write_jsonl(out / "dnas.jsonl", dnas)
    searched["dnas"] = dnas
    times["dnas_s"] = time.perf_counter() - t0

    results = summarize(uniform, searched, times)
    results.update(
        dataset=args.dataset,
        arch=args.arch,
        channels=args.channels,
        steps=args.steps,
        float_steps=float_steps,
        population=args.population,
        generations=args.generations,
        cost_weights=args.cost_weights,
        seed=args.seed,
        wall_s=round(time.perf_counter() - start, 2),
    )
    final_key = jax.random.fold_in(jax.random.key(args.seed), 5)
    results["final"] = retrain_and_save(out, final_key, results, searched, score)
    plot(out / "compression_front.png", uniform, searched, results["pareto"])
    write_json_atomic(out / "results.json", results)
    report(results)
    print(f"wrote {out / 'results.json'}")
    return results


def retrain_and_save(out: Path, key, results: dict, searched: dict, score: dict) -> dict:
    """Retrains the front's member at w4a4's size (else its most accurate on valid) through
    the joint space and saves it with its bits and keep ratios (``OUT/model.json``,
    ``model.msgpack``; ``nasjax.load_result(OUT)``); returns the fields for results.json."""
    c = results["at_w4a4_size"]
    if c["front_arch"] is None:
        best = max(results["pareto"], key=lambda p: p["valid_accuracy"])
        arch, method = best["arch"], best["method"]
    else:
        arch, method = c["front_arch"], c["front_method"]
    record = next(r for r in searched[method] if r["arch"] == arch)
    g = np.asarray(record["genotype"], np.int32)
    joint, data, config = score["joint"], score["data"], score["config"]
    g = g if method == "joint" else score["to_joint"](g[None])[0]  # the fixed cell first
    final = train_population(key, g[None], data, joint, config, keep_variables=True)
    size = {"channels": config.channels, "cells_per_stage": config.cells_per_stage}
    member = jax.tree.map(lambda a: a[0], (final["params"], final["batch_stats"]))
    module, variables, extra = trained_network(joint, g, data.task, size, *member)
    batch = config.eval_batch_size
    acc = module_accuracy(module, variables, data.x_test, data.y_test, batch)
    saved = save_model(
        out, joint, g, data.task, size, variables, summary_file="results.json", extra=extra
    )
    return {
        "arch": joint.to_string(g),
        "method": method,
        "genotype": [int(v) for v in g],
        "test_accuracy": float(final["test_accuracy"][0]),
        "valid_accuracy": float(final["valid_accuracy"][0]),
        "model_test_accuracy": acc,
        **saved,
    }


def front_of(records: list[dict]) -> list[dict]:
    """Non-dominated records by (valid accuracy, -bits_total), sorted by size."""
    if not records:
        return []
    points = np.array([[r["valid_accuracy"], -r["bits_total"]] for r in records], np.float32)
    mask = np.asarray(pareto_mask(jnp.asarray(points)))
    front = [records[i] for i in np.flatnonzero(mask)]
    return sorted(front, key=lambda r: r["bits_total"])


def _point(r: dict, method: str) -> dict:
    keys = ("arch", "bits_total", "bitops", "test_accuracy", "valid_accuracy")
    return {
        **{k: r[k] for k in keys},
        "mac_fraction_removed": r["mac_fraction_removed"],
        "method": method,
    }


def summarize(uniform: list[dict], searched: dict[str, list[dict]], times: dict) -> dict:
    """``results.json``: baselines, the combined front, per-method fronts, the comparison."""
    # A search may re-draw a baseline's genotype (NSGA-II breeds from them); such a
    # re-evaluation differs from the baseline only by training noise, so it is no finding.
    baselines = {r["arch"] for r in uniform}
    searched = {m: [r for r in rs if r["arch"] not in baselines] for m, rs in searched.items()}
    everything = [_point(r, m) for m, rs in searched.items() for r in rs]
    pareto = front_of(everything)
    ref = next(r for r in uniform if r["name"] == "w4a4")
    within = [p for p in pareto if p["bits_total"] <= ref["bits_total"]]
    best = max(within, key=lambda p: p["valid_accuracy"]) if within else None
    comparison = {
        "w4a4_bits_total": ref["bits_total"],
        "w4a4_test_accuracy": ref["test_accuracy"],
        "front_arch": best["arch"] if best else None,
        "front_method": best["method"] if best else None,
        "front_bits_total": best["bits_total"] if best else None,
        "front_test_accuracy": best["test_accuracy"] if best else None,
        "delta_test_accuracy": best["test_accuracy"] - ref["test_accuracy"] if best else None,
        "at_least_as_accurate": bool(best and best["test_accuracy"] >= ref["test_accuracy"]),
    }
    keys = (
        "name",
        "bits_total",
        "bitops",
        "test_accuracy",
        "valid_accuracy",
        "mac_fraction_removed",
        "arch",
    )
    return {
        "uniform": [{k: r[k] for k in keys} for r in uniform],
        "pareto": pareto,
        "fronts": {m: front_of([_point(r, m) for r in rs]) for m, rs in searched.items()},
        "evaluated": {m: len(rs) for m, rs in searched.items()},
        "at_w4a4_size": comparison,
        "search_time_s": {k: round(v, 1) for k, v in times.items()},
    }


def report(results: dict) -> None:
    c = results["at_w4a4_size"]
    print(f"front ({len(results['pareto'])} points):")
    for p in results["pareto"]:
        print(
            f"  {p['method']:5s} {p['bits_total'] / 8e3:8.1f} kB  test "
            f"{100 * p['test_accuracy']:.2f}%  {p['arch']}"
        )
    if c["front_test_accuracy"] is None:
        print(f"no searched point at or below w4a4's size ({c['w4a4_bits_total'] / 8e3:.1f} kB)")
    else:
        print(
            f"at w4a4's size ({c['w4a4_bits_total'] / 8e3:.1f} kB): front "
            f"{100 * c['front_test_accuracy']:.2f}% vs w4a4 {100 * c['w4a4_test_accuracy']:.2f}%"
            f" ({100 * c['delta_test_accuracy']:+.2f} points)"
        )
    print("search time (s): " + ", ".join(f"{k} {v}" for k, v in results["search_time_s"].items()))


def plot(path: Path, uniform: list[dict], searched: dict, pareto: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for i, (method, records) in enumerate(searched.items()):
        kb = [r["bits_total"] / 8e3 for r in records]
        acc = [100 * r["test_accuracy"] for r in records]
        ax.scatter(kb, acc, s=12, alpha=0.35, c=f"C{i}", label=f"{method} (all)")
    kb = [p["bits_total"] / 8e3 for p in pareto]
    ax.step(
        kb,
        [100 * p["test_accuracy"] for p in pareto],
        where="post",
        c="k",
        marker="o",
        label="searched front",
    )
    for r in uniform:
        x, y = r["bits_total"] / 8e3, 100 * r["test_accuracy"]
        ax.scatter([x], [y], marker="s", c="C3", s=30)
        ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.scatter([], [], marker="s", c="C3", label="uniform baselines")
    finish_figure(
        fig,
        ax,
        path,
        "model size (kB: weights x bit-widths + 32-bit BN/bias)",
        "test accuracy (%)",
        "Compression-aware search: accuracy vs size",
        "lower right",
        xscale="log",
        legend_size=7,
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
