"""Command line: ``python -m nasjax {search,info,report}``.

``search`` runs a strategy over a space with a short training run as the fitness
(maximised: the validation accuracy of an image space, minus the validation bits per byte
of a text space), retrains the best architecture longer, and writes ``summary.json``,
``results.jsonl``, ``search_curve.png`` and checkpoints to ``--out``. ``info`` prints the
exact costs of one decoded architecture (``space.costs``: params, MACs, FLOPs for CNNs) as
a JSON line; with ``--latency`` also its measured latency and peak memory
(``space.measure``) on the default device.

``search --strategy hyperband`` is multi-fidelity search instead of an ask/tell strategy
(:mod:`nasjax.search.hyperband`, Li et al. 2018): brackets of successive halving over
training steps, each rung continuing the survivors' own training; ``--steps`` is the top
rung (200), ``--min-steps`` the smallest (``steps / eta^3``), ``--eta`` the ratio (3: keep a
third), ``--brackets 1`` successive halving alone; its records carry ``bracket``, ``rung`` and
``steps``. Measured on MNIST-1D (seed 0, 2-core CPU shared with other jobs, back to back):
99.20 % test accuracy in 105 s against ``make search``'s REA, 98.50 % in 328 s (0.32x).

Nothing here knows a space: sizes, costs and networks come through the space contract
(:mod:`nasjax.spaces.contract`), training through the space's data kind
(:data:`nasjax.evaluation.kinds.DATA_KINDS`). Bad input (an unknown name, a malformed arch
string, a missing data path, a capability the space lacks) exits with status 2 and one
line naming the bad value and the valid choices.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax

from nasjax.data import dataset_identity, is_dataset_file
from nasjax.errors import NasjaxError, check_choice
from nasjax.evaluation.kinds import DATA_KINDS, DataKind, Recipe
from nasjax.evaluation.training import member_state_bytes
from nasjax.flags import (
    OneLineErrorParser,
    at_least,
    available_memory,
    flag_name,
    positive_float,
    positive_int,
    run_entry,
    seed,
    tensorboard_flag,
)
from nasjax.plots import plot_search_curve
from nasjax.report import write_report
from nasjax.rundir import RunDir, write_json_atomic
from nasjax.search import RESULTS_FILE, run_search
from nasjax.search.bounds import bounded_evaluator, bounds_summary, check_bounds
from nasjax.search.hyperband import hyperband_schedule, run_hyperband, schedule_totals
from nasjax.spaces import SPACES, make_space, require
from nasjax.strategies import STRATEGIES, make_strategy
from nasjax.tracking import tensorboard_callbacks

LATENCY_TABLE_FILE = "latency_table.json"  # the --max-latency-ms search's device table
MULTI_OBJECTIVE = ("nsga2",)  # strategies told [B, M] objectives, not one fitness
MULTI_FIDELITY = ("hyperband",)  # search modes of their own (not ask/tell strategies)
RUNG_FLAGS = ("eta", "min_steps", "brackets")  # --strategy hyperband only
HYPERBAND_STEPS = 200  # R: the top rung's training steps (--steps)
ASK_TELL_STEPS = 200  # --steps of the ask/tell strategies
SIZE_FLAGS = ("channels", "cells_per_stage", "context")  # each a key of some default_size
BOUNDS = {"max_params": "params", "max_flops": "flops", "max_latency_ms": "latency_ms"}


def _size_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=positive_int, default=None, help="C of the first stage")
    p.add_argument("--cells-per-stage", type=positive_int, default=None, help="N cells per stage")
    p.add_argument("--context", type=positive_int, default=None, help="transformer: window")


def _search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search a space and retrain the best architecture")
    p.add_argument("--space", default="nb201", help=f"one of {', '.join(SPACES)}")
    strategies = ", ".join([*STRATEGIES, *MULTI_FIDELITY])
    p.add_argument(
        "--strategy",
        default="rea",
        help=f"one of {strategies} (hyperband: MNIST-1D 99.2%% test acc in 0.32x REA's time)",
    )
    p.add_argument(
        "--dataset", default=None, help="images: mnist1d (default), digits, cifar*, or F.npz"
    )
    p.add_argument("--data-dir", default=None, help="CIFAR folder (or NASJAX_CIFAR_DIR)")
    p.add_argument("--text", default=None, help="text spaces: UTF-8 file (default pydoc_data)")
    p.add_argument("--budget", type=positive_int, default=60, help="architectures to evaluate")
    p.add_argument("--batch", type=positive_int, default=5, help="architectures per generation")
    p.add_argument("--population-size", type=positive_int, default=10, help="REA population")
    p.add_argument("--sample-size", type=positive_int, default=3, help="REA tournament size")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help=f"training steps per candidate ({ASK_TELL_STEPS}); hyperband: of the top rung "
        f"({HYPERBAND_STEPS})",
    )
    p.add_argument("--final-steps", type=positive_int, default=1000, help="retraining steps")
    p.add_argument("--batch-size", type=positive_int, default=100, help="training minibatch")
    p.add_argument("--learning-rate", type=positive_float, default=0.05, help="images only")
    p.add_argument("--optimizer", default="sgd", help="sgd or adamw (images only)")
    p.add_argument("--eta", type=at_least(2), default=None, help="hyperband: keep 1/eta (3)")
    rung = "hyperband: smallest rung (steps/eta^3)"
    p.add_argument("--min-steps", type=positive_int, default=None, help=rung)
    p.add_argument("--brackets", type=positive_int, default=None, help="hyperband: 1 = SH (all)")
    _size_flags(p)
    p.add_argument("--member-batch", type=positive_int, default=1, help="members vmapped together")
    p.add_argument("--max-params", type=positive_float, help="constraint: params <= this")
    p.add_argument("--max-flops", type=positive_float, help="constraint: FLOPs <= this")
    p.add_argument("--max-latency-ms", type=positive_float, help="constraint: latency here")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default="runs/search", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tensorboard_flag(p)


def _info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="exact costs (and latency) of one architecture")
    p.add_argument("--space", default="nb201", help=f"one of {', '.join(SPACES)}")
    p.add_argument("--arch", required=True, help="architecture string of the space")
    p.add_argument("--dataset", default=None, help="images: cifar10 (default) or a task")
    _size_flags(p)
    p.add_argument(
        "--latency",
        action="store_true",
        help="also measure latency (ms, median) and peak memory (MiB) on the default device",
    )
    p.add_argument("--batch-size", type=positive_int, default=1, help="examples per --latency call")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed calls for --latency")


class _Version(argparse.Action):
    """``--version``: nasjax's and JAX's versions and the devices JAX sees (on a CPU one per
    core, unless ``XLA_FLAGS`` sets a count), one line on stdout, then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and devices, then exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from nasjax import __version__

        devices = jax.devices()
        kind = f"{len(devices)} {devices[0].platform} device{'s' * (len(devices) > 1)}"
        print(f"nasjax {__version__} (jax {jax.__version__}, {kind})")
        parser.exit()


def _report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild a run folder's tables, plots and report.html")
    p.add_argument("dir", help="a run folder: search, gradient, Pareto, compression or LLM")


def build_parser() -> argparse.ArgumentParser:
    """The ``nasjax`` argument parser."""
    parser = OneLineErrorParser(prog="nasjax", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _info_parser(sub)
    _report_parser(sub)
    return parser


# ----------------------------------------------------------------- typed configs
@dataclasses.dataclass(frozen=True)
class InfoConfig:
    """``nasjax info``; ``size`` holds the size flags given (the space fills the rest)."""

    space: str
    arch: str
    dataset: str | None
    size: dict[str, int]
    latency: bool
    batch_size: int
    repeats: int


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """``nasjax search``; ``size`` holds the size flags given (defaults: kind, then space)."""

    space: str
    strategy: str
    dataset: str | None
    data_dir: str | None
    text: str | None
    budget: int
    batch: int
    population_size: int
    sample_size: int
    steps: int | None
    eta: int | None
    min_steps: int | None
    brackets: int | None
    final_steps: int
    batch_size: int
    learning_rate: float
    optimizer: str
    member_batch: int
    size: dict[str, int]
    max_params: float | None
    max_flops: float | None
    max_latency_ms: float | None
    seed: int
    smoke: bool
    out: str
    resume: bool
    no_progress: bool
    tensorboard: str | None


def _config(cls: type, args: argparse.Namespace) -> Any:
    """``cls`` from the parsed flags; the size flags given go into ``size``."""
    given = {k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}
    names = [f.name for f in dataclasses.fields(cls) if f.name != "size"]
    return cls(size=given, **{k: getattr(args, k) for k in names})


# ----------------------------------------------------------------- info
def info(cfg: InfoConfig) -> dict[str, Any]:
    """``{space, arch, dataset, **size, **space.costs}`` of ``cfg.arch``; with
    ``cfg.latency`` also ``space.measure`` (latency, peak memory, device, batch size)."""
    space = make_space(cfg.space)
    kind = DATA_KINDS[space.data_kind]
    dataset = cfg.dataset or kind.info_dataset
    size = space.resolve_size(cfg.size)
    genotype = space.from_string(cfg.arch)
    # your own .npz file: its shape and classes; a name: the space checks it
    task = kind.task(dataset) if is_dataset_file(dataset) else dataset
    record = {"space": cfg.space, "arch": space.to_string(genotype), "dataset": dataset}
    record.update(size)
    record.update(space.costs(genotype, task, **size))
    if cfg.latency:
        measured = space.measure(
            genotype, task, batch_size=cfg.batch_size, repeats=cfg.repeats, **size
        )
        record.update(measured)
    return record


# ----------------------------------------------------------------- search
def _settle(cfg: SearchConfig, space: Any, kind: DataKind) -> tuple[SearchConfig, str, dict]:
    """The dataset and sizes of a search (given, else the kind's, else the space's), with
    ``--smoke``'s caps applied to run settings and sizes alike."""
    cfg = _strategy_defaults(cfg)
    dataset = cfg.dataset or kind.search_dataset
    keys = space.default_size
    size = {**{k: v for k, v in kind.search_size.items() if k in keys}, **cfg.size}
    if cfg.smoke:
        caps = {k: v for k, v in kind.smoke.items() if k not in keys}
        cfg = dataclasses.replace(cfg, **{k: min(getattr(cfg, k), v) for k, v in caps.items()})
        base = space.resolve_size(size)
        size.update({k: min(base[k], v) for k, v in kind.smoke.items() if k in keys})
    if cfg.strategy in MULTI_FIDELITY and cfg.min_steps is None:
        cfg = dataclasses.replace(cfg, min_steps=max(1, cfg.steps // cfg.eta**3))
    return cfg, dataset, space.resolve_size(size)


def _strategy_defaults(cfg: SearchConfig) -> SearchConfig:
    """``--steps`` and hyperband's ``--eta`` when not given; a hyperband flag with another
    strategy is one line."""
    if cfg.strategy not in MULTI_FIDELITY:
        given = [flag_name(k) for k in RUNG_FLAGS if getattr(cfg, k) is not None]
        if given:
            raise NasjaxError(
                f"{given[0]} applies to --strategy {' or '.join(MULTI_FIDELITY)} only, "
                f"not {cfg.strategy!r}"
            )
        return dataclasses.replace(cfg, steps=cfg.steps or ASK_TELL_STEPS)
    return dataclasses.replace(cfg, steps=cfg.steps or HYPERBAND_STEPS, eta=cfg.eta or 3)


def _validate(cfg: SearchConfig, space: Any, kind: DataKind, dataset: str, size: dict) -> Any:
    """Checks a search's settings; returns the task the space builds networks for."""
    check_choice("strategy", cfg.strategy, [*STRATEGIES, *MULTI_FIDELITY])
    if cfg.strategy in MULTI_OBJECTIVE:
        single = ", ".join(s for s in STRATEGIES if s not in MULTI_OBJECTIVE)
        raise NasjaxError(
            f"strategy {cfg.strategy!r} is multi-objective and `search` has one objective "
            f"({kind.objective}); run {kind.pareto}, or choose one of {single}"
        )
    if cfg.strategy in MULTI_FIDELITY:
        _validate_rungs(cfg, space, kind)
    task = kind.task(dataset)  # a name of kind.datasets, or a file of your own
    check_choice("optimizer", cfg.optimizer, ("sgd", "adamw"))
    require(space, "functional")  # the population trainer of every kind
    check_bounds(space, _bounds(cfg), task, size, kind.pareto)
    if cfg.strategy in MULTI_FIDELITY:
        _check_rung_memory(cfg, space, kind, task, size)
    return task


def _validate_rungs(cfg: SearchConfig, space: Any, kind: DataKind) -> None:
    """What hyperband needs: a kind that trains in rungs, no bounds, a valid schedule."""
    if kind.rungs is None:
        raise NasjaxError(
            f"--strategy {cfg.strategy} continues members' training in rungs, which "
            f"{space.data_kind} spaces such as {cfg.space!r} cannot; choose one of "
            f"{', '.join(STRATEGIES)}"
        )
    if _bounds(cfg):
        raise NasjaxError(
            f"--strategy {cfg.strategy} has no cost bounds (--max-params, --max-flops, "
            "--max-latency-ms); use an ask/tell strategy such as rea"
        )
    hyperband_schedule(cfg.min_steps, cfg.steps, cfg.eta, cfg.brackets)


def _check_rung_memory(
    cfg: SearchConfig, space: Any, kind: DataKind, task: Any, size: dict
) -> None:
    """Refuses a first rung whose members' training states need over half the memory."""
    schedule = hyperband_schedule(cfg.min_steps, cfg.steps, cfg.eta, cfg.brackets)
    train = kind.train_config(_recipe(cfg, size, cfg.steps))
    members = max(b[0].members for b in schedule)
    need, available = members * member_state_bytes(space, task, train), available_memory()
    if need > available / 2:
        raise NasjaxError(
            f"--min-steps {cfg.min_steps} with --eta {cfg.eta} starts a bracket of {members} "
            f"members whose training states need ~{need / 2**30:.1f} GiB, over half of the "
            f"{available / 2**30:.1f} GiB available; raise --min-steps or lower --steps"
        )


def _bounds(cfg: SearchConfig) -> dict[str, float]:
    return {m: float(getattr(cfg, n)) for n, m in BOUNDS.items() if getattr(cfg, n) is not None}


def _run_config(cfg: SearchConfig, dataset: str, size: dict) -> dict[str, Any]:
    """The settings that change results (compared on ``--resume``)."""
    skip = ("out", "resume", "no_progress", "size", "tensorboard")
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip}
    fields = {k: v for k, v in fields.items() if v is not None or k not in RUNG_FLAGS}
    return dict(sorted({**fields, **size, **dataset_identity(dataset)}.items()))


def _recipe(cfg: SearchConfig, size: dict, steps: int) -> Recipe:
    fields = ("batch_size", "learning_rate", "optimizer", "member_batch", "smoke")
    return Recipe(steps=steps, size=size, **{k: getattr(cfg, k) for k in fields})


class _Run(NamedTuple):
    """A search with its settings resolved and its data loaded."""

    cfg: SearchConfig
    space: Any
    kind: DataKind
    data: Any
    dataset: str
    task: Any  # what the space's networks and costs take as their dataset
    size: dict
    config: dict  # the settings that change results
    t0: float


def search(cfg: SearchConfig) -> dict[str, Any]:
    """Runs the search of ``cfg`` on any space with a population trainer (the space's data
    kind says how it trains) and returns the summary it writes."""
    space = make_space(cfg.space)
    kind = DATA_KINDS[space.data_kind]
    cfg, dataset, size = _settle(cfg, space, kind)
    task = _validate(cfg, space, kind, dataset, size)
    t0 = time.time()
    config = _run_config(cfg, dataset, size)
    RunDir.check(Path(cfg.out), config, resume=cfg.resume)  # bad --out/--resume first
    data = kind.load(dataset, cfg.seed, cfg.data_dir, cfg.text)
    run = _Run(cfg, space, kind, data, dataset, task, size, config, t0)
    return _summarise(run, *(_hyperband if cfg.strategy in MULTI_FIDELITY else _ask_tell)(run))


def _callbacks(cfg: SearchConfig) -> list:
    return tensorboard_callbacks(cfg.tensorboard)


def _ask_tell(run: _Run) -> tuple:
    """An ask/tell strategy's search (:func:`nasjax.search.run_search`): its result,
    training recipe, bounds and their costs, and no extra summary fields."""
    cfg, space, kind, out = run.cfg, run.space, run.kind, Path(run.cfg.out)
    options = {"batch_size": cfg.batch}
    if cfg.strategy == "rea":
        options.update(population_size=cfg.population_size, sample_size=cfg.sample_size)
    strategy = space.repaired_strategy(make_strategy(cfg.strategy, space, **options))
    key_search, key_train = jax.random.split(jax.random.key(cfg.seed))
    train = kind.train_config(_recipe(cfg, run.size, cfg.steps))
    evaluator = kind.evaluator(space, run.data, train, key_train)
    bounds, costs = _bounds(cfg), None
    if bounds:
        evaluator, costs = bounded_evaluator(
            evaluator,
            space,
            bounds,
            run.task,
            run.size,
            latency_file=out / LATENCY_TABLE_FILE,
            resume=cfg.resume,
        )
    generations = -(-cfg.budget // cfg.batch)
    result = run_search(
        key_search,
        space,
        strategy,
        evaluator.evaluate,
        generations,
        out,
        resume=cfg.resume,
        progress=not cfg.no_progress,
        config=run.config,
        callbacks=_callbacks(cfg),
    )
    return result, train, bounds, costs, {}


def _hyperband(run: _Run) -> tuple:
    """Hyperband's search (:func:`nasjax.search.hyperband.run_hyperband`), as
    :func:`_ask_tell`; the extra summary fields are its schedule and totals."""
    cfg = run.cfg
    key_search, _ = jax.random.split(jax.random.key(cfg.seed))
    train = run.kind.train_config(_recipe(cfg, run.size, cfg.steps))
    schedule = hyperband_schedule(cfg.min_steps, cfg.steps, cfg.eta, cfg.brackets)
    result = run_hyperband(
        key_search,
        run.space,
        run.kind.rungs(run.space, run.data, train),
        schedule,
        Path(cfg.out),
        resume=cfg.resume,
        progress=not cfg.no_progress,
        config=run.config,
        callbacks=_callbacks(cfg),
    )
    rungs = [[[r.members, r.steps] for r in bracket] for bracket in schedule]
    extra = {"eta": cfg.eta, "min_steps": cfg.min_steps, "max_steps": cfg.steps}
    return result, train, {}, None, {**extra, "schedule": rungs, **schedule_totals(schedule)}


def _summarise(
    run: _Run, result: Any, train: Any, bounds: dict, costs: Any, extra: dict
) -> dict[str, Any]:
    """Retrains the found architecture with the final recipe (every strategy alike),
    writes the search curve and ``summary.json``, and returns the summary."""
    cfg, space, kind, data, dataset = run[:5]
    size, out = run.size, Path(cfg.out)
    _, key_train = jax.random.split(jax.random.key(cfg.seed))
    final_config = kind.train_config(_recipe(cfg, size, cfg.final_steps))
    best = result.best_genotype
    summary = {
        "arch": space.to_string(best),
        "genotype": [int(v) for v in best],
        **kind.retrain(key_train, space, data, final_config, best, out=out),
        **space.costs(best, run.task, **size),
        **kind.search_fields(result.best_fitness),
        "num_evaluated": result.num_evaluated,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        **bounds_summary(bounds, costs, best),
        "seed": cfg.seed,
        "wall_s": round(time.time() - run.t0, 2),
        "space": cfg.space,
        "strategy": cfg.strategy,
        "dataset": dataset,
        "search_training": train._asdict(),
        "final_training": final_config._asdict(),
        **extra,
    }
    records = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    title = f"{cfg.strategy} on {cfg.space} / {dataset} (seed {cfg.seed})"
    plot_search_curve(records, out / "search_curve.png", title, ylabel=kind.fitness)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _report(summary: dict[str, Any]) -> str:
    kind = DATA_KINDS[make_space(summary["space"]).data_kind]
    found, wall = f"found      {summary['arch']}", f"wall time  {summary['wall_s']:.0f} s"
    return "\n".join([found, *kind.report(summary), wall])


# ----------------------------------------------------------------- scripts and main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status: 0; 2 and one ``nasjax: error:`` line
    for bad input (flags checked at parse time, then names, files, the run folder); 130 and
    one line on Ctrl-C (the run folder is kept: ``--resume`` continues it)."""
    parsed: list[argparse.Namespace] = []

    def body() -> None:
        args = build_parser().parse_args(argv)
        parsed.append(args)
        if args.command == "info":
            print(json.dumps(info(_config(InfoConfig, args))))
        elif args.command == "report":
            done = write_report(args.dir)
            print(f"{done['kind']} run, {done['evaluations']} evaluations; wrote", end=" ")
            print(", ".join(done["files"]))
        else:
            summary = search(_config(SearchConfig, args))
            print(_report(summary))
            print(f"summary: {Path(args.out) / 'summary.json'}")

    resumable = lambda: bool(parsed) and parsed[0].command == "search"
    return run_entry(body, prefix="nasjax: ", resumable=resumable)
