"""Command line: ``python -m nasjax {search,info}``.

``search`` runs a strategy over a space with a short training run as the fitness (the
validation accuracy, maximised), retrains the best architecture longer, and writes
``summary.json``, ``results.jsonl`` and checkpoints to ``--out``. ``info`` prints the
parameter count, MACs and FLOPs (NAS-Bench-201's conventions, ``nasjax.objectives``) of one
decoded architecture as a JSON line; with ``--latency`` also its measured inference latency
and peak memory on the default device.

Bad input (an unknown name, a malformed arch string, a missing data path) exits with
status 2 and one line naming the bad value and the valid choices.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nasjax.data import DATASETS, load_dataset
from nasjax.errors import NasjaxError, check_choice
from nasjax.evaluation.training import (
    Evaluator,
    TrainConfig,
    train_population,
    training_evaluator,
)
from nasjax.objectives import (
    benchmark_variables,
    device_name,
    measure_latency_ms,
    network_cost,
    peak_memory_mb,
)
from nasjax.plots import plot_search_curve
from nasjax.rundir import RunDir, write_json_atomic
from nasjax.search import RESULTS_FILE, run_search
from nasjax.spaces import SPACES, make_space
from nasjax.spaces.nb201_costs import nb201_cost_table
from nasjax.spaces.nb201_latency import LatencyTable, build_latency_table
from nasjax.strategies import (
    STRATEGIES,
    check_bound_satisfiable,
    constrained_fitness,
    is_feasible,
    make_strategy,
)
from nasjax.tasks import TASKS, get_task

# Greydanus 2020, "Scaling down deep learning", test accuracy on MNIST-1D (%).
MNIST1D_PUBLISHED = {"logistic": 32, "mlp": 68, "cnn": 94, "gru": 91, "human": 96}

LATENCY_TABLE_FILE = "latency_table.json"  # the --max-latency-ms search's device table
MULTI_OBJECTIVE = ("nsga2",)  # strategies told [B, M] objectives, not one fitness

SMOKE = {"budget": 4, "batch": 2, "steps": 6, "final_steps": 6, "channels": 4}


def _search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search a space and retrain the best architecture")
    p.add_argument("--space", default="nb201", help=f"one of {', '.join(SPACES)}")
    p.add_argument("--strategy", default="rea", help=f"one of {', '.join(STRATEGIES)}")
    p.add_argument("--dataset", default="mnist1d", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-dir", default=None, help="CIFAR folder (or NASJAX_CIFAR_DIR)")
    p.add_argument("--budget", type=int, default=60, help="architectures to evaluate")
    p.add_argument("--batch", type=int, default=5, help="architectures per generation")
    p.add_argument("--population-size", type=int, default=10, help="REA population")
    p.add_argument("--sample-size", type=int, default=3, help="REA tournament size")
    p.add_argument("--steps", type=int, default=200, help="training steps per candidate")
    p.add_argument("--final-steps", type=int, default=1000, help="retraining steps")
    p.add_argument("--batch-size", type=int, default=100, help="training minibatch")
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument("--optimizer", default="sgd", help="sgd or adamw")
    p.add_argument("--channels", type=int, default=16, help="C of the first stage")
    p.add_argument("--cells-per-stage", type=int, default=1, help="N cells per stage")
    p.add_argument("--member-batch", type=int, default=1, help="members vmapped together")
    p.add_argument("--max-params", type=float, default=None, help="constraint: params <= this")
    p.add_argument("--max-flops", type=float, default=None, help="constraint: FLOPs <= this")
    p.add_argument(
        "--max-latency-ms", type=float, default=None, help="constraint: latency on this device"
    )
    p.add_argument("--text", default=None, help="transformer: UTF-8 text file (pydoc_data)")
    p.add_argument("--context", type=int, default=None, help="transformer: bytes per window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/search", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="params, MACs, FLOPs (and latency) of one architecture")
    p.add_argument("--space", default="nb201", help=f"one of {', '.join(SPACES)}")
    p.add_argument("--arch", required=True, help="architecture string of the space")
    p.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--channels", type=int, default=None, help="C (default: the space's)")
    p.add_argument(
        "--cells-per-stage", type=int, default=None, help="N cells per stage (the space's)"
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="also measure latency (ms, median) and peak memory (MiB) on the default device",
    )
    p.add_argument("--batch-size", type=int, default=1, help="examples per call for --latency")
    p.add_argument("--repeats", type=int, default=20, help="timed calls for --latency")
    p.add_argument("--context", type=int, default=None, help="transformer: tokens (64)")


def build_parser() -> argparse.ArgumentParser:
    """The ``nasjax`` argument parser."""
    parser = argparse.ArgumentParser(prog="nasjax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _info_parser(sub)
    return parser


def _default_net_size(space: Any, args: argparse.Namespace) -> None:
    """Fills unset ``--channels`` / ``--cells-per-stage`` with the defaults of the space's
    ``decode`` (NB201: 16 and 5, its benchmark; DARTS: 36 and 6, the paper's 20 cells)."""
    params = inspect.signature(space.decode).parameters
    for name, fallback in (("channels", 16), ("cells_per_stage", 5)):
        if getattr(args, name) is None:
            default = params[name].default if name in params else inspect.Parameter.empty
            setattr(args, name, fallback if default is inspect.Parameter.empty else default)


def info(args: argparse.Namespace) -> dict[str, Any]:
    """Params, MACs and FLOPs of the decoded architecture ``args.arch``; with
    ``args.latency`` also ``latency_ms``, ``peak_mem_mb``, ``device`` and ``batch_size``."""
    if args.space == "transformer":  # params and FLOPs per token of a language model
        from nasjax.transformer_cli import transformer_info

        return transformer_info(args)
    space = make_space(args.space)
    _default_net_size(space, args)
    for name in ("channels", "cells_per_stage", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise NasjaxError(f"{flag} must be >= 1, got {getattr(args, name)}")
    task = get_task(args.dataset)
    genotype = space.from_string(args.arch)
    net = space.decode(
        genotype, args.dataset, channels=args.channels, cells_per_stage=args.cells_per_stage
    )
    record = {
        "space": args.space,
        "arch": space.to_string(genotype),
        "dataset": args.dataset,
        "channels": args.channels,
        "cells_per_stage": args.cells_per_stage,
        **network_cost(net, task.input_shape),
    }
    if hasattr(space, "cost_info"):  # compress:<base>: size in bits, BitOps, MACs removed
        net_shape = {"channels": args.channels, "cells_per_stage": args.cells_per_stage}
        record.update(space.cost_info(genotype, args.dataset, **net_shape))
    if args.latency:
        shape = task.input_shape
        variables = benchmark_variables(net, shape)
        record["latency_ms"] = measure_latency_ms(
            net, variables, shape, args.batch_size, repeats=args.repeats
        )
        record["peak_mem_mb"] = peak_memory_mb(net, variables, shape, args.batch_size)
        record["device"] = device_name()
        record["batch_size"] = args.batch_size
    return record


def _train_config(args: argparse.Namespace, steps: int) -> TrainConfig:
    check_choice("optimizer", args.optimizer, ("sgd", "adamw"))
    return TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        channels=args.channels,
        cells_per_stage=args.cells_per_stage,
        member_batch=args.member_batch,
    )


def _validate_search_args(args: argparse.Namespace) -> None:
    check_choice("space", args.space, SPACES)
    check_choice("strategy", args.strategy, STRATEGIES)
    if args.strategy in MULTI_OBJECTIVE:
        single = ", ".join(s for s in STRATEGIES if s not in MULTI_OBJECTIVE)
        raise NasjaxError(
            f"strategy {args.strategy!r} is multi-objective and `search` has one objective "
            "(validation accuracy); run experiments/mnist1d_pareto.py for accuracy vs "
            f"latency, or choose one of {single}"
        )
    check_choice("dataset", args.dataset, DATASETS)
    for name in ("budget", "batch", "steps", "final_steps", "channels", "cells_per_stage"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise NasjaxError(f"{flag} must be >= 1, got {getattr(args, name)}")
    for name in ("max_params", "max_flops", "max_latency_ms"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise NasjaxError(f"--{name.replace('_', '-')} must be > 0, got {value}")


_NOT_CONFIG = ("command", "out", "resume", "no_progress")


def _constrained(
    evaluator: Evaluator, args: argparse.Namespace, space: Any
) -> tuple[Evaluator, dict[str, float], Any]:
    """Wraps the evaluator with the ``--max-*`` bounds (``constrained_fitness``).

    Params and FLOPs come from the exact NB201 cost tables; latency from a per-op latency
    table measured on this device first (``nasjax.spaces.nb201_latency``). Returns the
    evaluator, the active bounds and a ``costs(genotypes) -> float[B, K]`` function
    (``None`` if none).
    """
    bounds = {
        "params": args.max_params,
        "flops": args.max_flops,
        "latency_ms": args.max_latency_ms,
    }
    bounds = {k: float(v) for k, v in bounds.items() if v is not None}
    if not bounds:
        return evaluator, {}, None
    net = {"channels": args.channels, "cells_per_stage": args.cells_per_stage}
    cost_fns = {}
    for metric in ("params", "flops"):
        if metric in bounds:
            table = np.asarray(nb201_cost_table(metric, args.dataset, **net), np.float64)
            cost_fns[metric] = lambda g, t=table: t[np.asarray(space.to_index(g))]
    table_file = Path(args.out) / LATENCY_TABLE_FILE
    if "latency_ms" in bounds:
        # A resumed search predicts with the table it started with (exact resume).
        if args.resume and table_file.exists():
            latency = LatencyTable.from_json(table_file)
        else:
            latency = build_latency_table(space, args.dataset, **net)
        cost_fns["latency_ms"] = lambda g: np.asarray(latency.predict(np.asarray(g)), np.float64)
    every_cell = np.asarray(space.from_index(np.arange(space.size)))
    names = list(bounds)
    cheapest = np.array([cost_fns[k](every_cell).min() for k in names])
    check_bound_satisfiable(cheapest, np.array([bounds[k] for k in names]), names)
    if "latency_ms" in bounds and not table_file.exists():
        table_file.parent.mkdir(parents=True, exist_ok=True)
        latency.to_json(table_file)

    def costs(genotypes: Any) -> np.ndarray:
        return np.stack([cost_fns[k](genotypes) for k in names], axis=1)

    def evaluate(key: jax.Array, population: jax.Array) -> tuple[jax.Array, dict]:
        accuracy, metrics = evaluator.evaluate(key, population)
        c = costs(population)
        limits = np.array([bounds[k] for k in names])
        metrics = {**metrics, **{k: c[:, i] for i, k in enumerate(names)}}
        metrics["feasible"] = np.asarray(is_feasible(c, limits), np.float32)
        return constrained_fitness(accuracy, c, limits), metrics

    return Evaluator(evaluate), bounds, costs


def search(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the search of ``args`` and returns the summary it writes."""
    if args.space == "transformer":  # byte-level LM training, bits per byte
        from nasjax.transformer_cli import transformer_search

        return transformer_search(args)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, min(getattr(args, name), value))
    _validate_search_args(args)
    t0 = time.time()
    out = Path(args.out)
    config = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_CONFIG}
    RunDir.check(out, config, resume=args.resume)  # bad --out/--resume before any work
    data = load_dataset(args.dataset, seed=args.seed, data_dir=args.data_dir)
    space = make_space(args.space)
    options = {"batch_size": args.batch}
    if args.strategy == "rea":
        options.update(population_size=args.population_size, sample_size=args.sample_size)
    strategy = make_strategy(args.strategy, space, **options)
    evaluator = training_evaluator(space, data, _train_config(args, args.steps))
    evaluator, bounds, costs = _constrained(evaluator, args, space)
    generations = -(-args.budget // args.batch)
    key_search, key_final = jax.random.split(jax.random.key(args.seed))
    result = run_search(
        key_search,
        space,
        strategy,
        evaluator.evaluate,
        generations,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        config=config,
    )
    final_config = _train_config(args, args.final_steps)
    final = train_population(key_final, result.best_genotype[None], data, space, final_config)
    net = space.decode(
        result.best_genotype,
        args.dataset,
        channels=args.channels,
        cells_per_stage=args.cells_per_stage,
    )
    summary = {
        "arch": space.to_string(result.best_genotype),
        "genotype": [int(v) for v in result.best_genotype],
        "test_accuracy": float(final["test_accuracy"][0]),
        "valid_accuracy": float(final["valid_accuracy"][0]),
        **network_cost(net, data.input_shape),
        "search_valid_accuracy": result.best_fitness,
        "num_evaluated": result.num_evaluated,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        **_constraint_summary(bounds, costs, result.best_genotype),
        "seed": args.seed,
        "wall_s": round(time.time() - t0, 2),
        "space": args.space,
        "strategy": args.strategy,
        "dataset": args.dataset,
        "search_training": _train_config(args, args.steps)._asdict(),
        "final_training": final_config._asdict(),
    }
    records = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    title = f"{args.strategy} on {args.space} / {args.dataset} (seed {args.seed})"
    plot_search_curve(records, out / "search_curve.png", title)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _constraint_summary(bounds: dict[str, float], costs: Any, genotype: np.ndarray) -> dict:
    if not bounds:
        return {}
    found = costs(genotype[None])[0]
    limits = np.array(list(bounds.values()))
    return {
        "constraints": {f"{k} <=": v for k, v in bounds.items()},
        "constrained_costs": dict(zip(bounds, found.tolist())),
        "feasible": bool(is_feasible(found, limits)),
    }


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one ``error: ...`` line and exit status 2 (the scripts')."""

    def error(self, message: str) -> None:  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def run_script(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None = None,
) -> int:
    """``run(parse_args(argv))`` for an experiment script: 0, or 2 and one error line."""
    try:
        run(parse_args(argv))
    except NasjaxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _report(summary: dict[str, Any]) -> str:
    if summary.get("space") == "transformer":
        from nasjax.transformer_cli import transformer_report

        return transformer_report(summary)
    lines = [
        f"found      {summary['arch']}",
        f"test acc   {100 * summary['test_accuracy']:.2f}%  (valid "
        f"{100 * summary['valid_accuracy']:.2f}%)",
        f"params     {summary['params']:,}   MACs {summary['macs']:,}",
        f"wall time  {summary['wall_s']:.0f} s",
    ]
    if summary["dataset"] == "mnist1d":
        published = ", ".join(f"{k} {v}%" for k, v in MNIST1D_PUBLISHED.items())
        lines.append(f"published MNIST-1D test accuracy (Greydanus 2020): {published}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            print(json.dumps(info(args)))
        else:
            summary = search(args)
            print(_report(summary))
            print(f"summary: {Path(args.out) / 'summary.json'}")
    except NasjaxError as err:
        print(f"nasjax: error: {err}", file=sys.stderr)
        return 2
    return 0
