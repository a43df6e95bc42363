"""``python -m nasjax {info,search} --space transformer``: the LM space's command-line branch.

``info`` prints the decoder (non-embedding), embedding and total parameter counts and the
forward FLOPs per token at ``--context`` of one architecture string
(:mod:`nasjax.transformer_costs`); with ``--latency`` also the measured latency of a
forward pass over the context, ms per generated token with a KV cache, and XLA's peak
memory. ``search`` trains every candidate for ``--steps`` steps on byte-level text
(``--text FILE`` or CPython's ``pydoc_data``), fitness = minus the validation bits per
byte (maximised), then retrains the best for ``--final-steps``. Training is AdamW at the
LM defaults of :class:`nasjax.evaluation.lm_training.LMTrainConfig` (the NB201 flags
``--learning-rate``, ``--optimizer``, ``--channels`` do not apply); ``--batch-size`` is
the number of windows per step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.evaluation.lm_training import LMTrainConfig, train_lm_population
from nasjax.objectives import device_name
from nasjax.rundir import RunDir, flags_config, write_json_atomic
from nasjax.search import run_search
from nasjax.spaces.transformer import TransformerSpace
from nasjax.strategies import make_strategy
from nasjax.text import load_text
from nasjax.transformer_costs import (
    forward_latency_ms,
    generate_latency_ms,
    peak_memory_mb,
    training_free_costs,
)

DEFAULT_CONTEXT = 64
SMOKE = {"budget": 4, "batch": 2, "steps": 3, "final_steps": 3, "batch_size": 2, "context": 16}


def _context(args: argparse.Namespace) -> int:
    context = getattr(args, "context", None)
    return DEFAULT_CONTEXT if context is None else context


def transformer_info(args: argparse.Namespace) -> dict[str, Any]:
    """The ``info`` record of ``args.arch`` (see the module docstring)."""
    space = TransformerSpace()
    genotype = space.from_string(args.arch)
    spec = space.spec(genotype)
    context = _context(args)
    record = {
        "space": "transformer",
        "arch": space.to_string(genotype),
        "context": context,
        **training_free_costs(spec, context),
    }
    if args.latency:
        if args.batch_size < 1 or args.repeats < 1:
            raise NasjaxError(
                f"--batch-size and --repeats must be >= 1, got {args.batch_size}, {args.repeats}"
            )
        record["latency_ms"] = forward_latency_ms(spec, context, args.batch_size, args.repeats)
        half = max(1, context // 2)
        record["generate_ms_per_token"] = (
            generate_latency_ms(
                spec, context - half, half, args.batch_size, max(1, args.repeats // 2)
            )
            if context > 1
            else None  # no room for a prompt and a generated token
        )
        record["peak_mem_mb"] = peak_memory_mb(spec, context, args.batch_size)
        record["device"] = device_name()
        record["batch_size"] = args.batch_size
    return record


def _config(args: argparse.Namespace, steps: int, mode: str) -> LMTrainConfig:
    return LMTrainConfig(steps=steps, batch_size=args.batch_size, context=_context(args), mode=mode)


def transformer_search(args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``search --space transformer`` and returns the summary it writes."""
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, min(getattr(args, name) or value, value))
    bounds = [n for n in ("max_params", "max_flops", "max_latency_ms") if getattr(args, n)]
    if bounds:
        raise NasjaxError(
            f"--{bounds[0].replace('_', '-')} is not supported with --space transformer; run "
            "experiments/transformer_pareto.py for bits per byte against latency"
        )
    if args.strategy == "nsga2":
        raise NasjaxError(
            "strategy 'nsga2' is multi-objective and `search` has one objective; run "
            "experiments/transformer_pareto.py, or choose one of random, rea, reinforce"
        )
    for name in ("budget", "batch", "steps", "final_steps"):
        if getattr(args, name) < 1:
            raise NasjaxError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    t0 = time.time()
    space = TransformerSpace()
    data = load_text(getattr(args, "text", None))
    run_config = flags_config(args)  # a changed --seed etc. is refused on --resume
    RunDir.check(Path(args.out), run_config, resume=args.resume)
    mode = "elastic" if args.smoke else "decoded"  # smoke: one compile for every model
    config = _config(args, args.steps, mode)
    options: dict[str, Any] = {"batch_size": args.batch}
    if args.strategy == "rea":
        options.update(population_size=args.population_size, sample_size=args.sample_size)
    strategy = space.repaired_strategy(make_strategy(args.strategy, space, **options))
    key_search, key_train = jax.random.split(jax.random.key(args.seed))

    def evaluate(key: jax.Array, population: jax.Array) -> tuple[jax.Array, dict]:
        trained = train_lm_population(key_train, np.asarray(population), data, space, config)
        metrics = {k: trained[k] for k in ("valid_bpb", "valid_ppl", "train_bpb")}
        return -trained["valid_bpb"], metrics

    result = run_search(
        key_search,
        space,
        strategy,
        evaluate,
        -(-args.budget // args.batch),
        Path(args.out),
        resume=args.resume,
        progress=not args.no_progress,
        config=run_config,
    )
    final_config = _config(args, args.final_steps, mode)
    final = train_lm_population(key_train, result.best_genotype[None], data, space, final_config)
    summary = {
        "arch": space.to_string(result.best_genotype),
        "genotype": [int(v) for v in result.best_genotype],
        "valid_bpb": float(final["valid_bpb"][0]),
        "valid_ppl": float(final["valid_ppl"][0]),
        "search_valid_bpb": -result.best_fitness,
        **training_free_costs(space.spec(result.best_genotype), config.context),
        "num_evaluated": result.num_evaluated,
        "seed": args.seed,
        "wall_s": round(time.time() - t0, 2),
        "space": "transformer",
        "strategy": args.strategy,
        "text": data.source,
        "search_training": config._asdict(),
        "final_training": final_config._asdict(),
    }
    write_json_atomic(Path(args.out) / "summary.json", summary)
    return summary


def transformer_report(summary: dict[str, Any]) -> str:
    """The lines ``search`` prints for a transformer summary."""
    return "\n".join(
        [
            f"found      {summary['arch']}",
            f"valid      {summary['valid_bpb']:.3f} bits per byte (perplexity "
            f"{summary['valid_ppl']:.2f} per byte) on {summary['text']}",
            f"params     {summary['decoder_params']:,} decoder, {summary['total_params']:,} "
            f"total; {summary['flops_per_token']:,} FLOPs per token",
            f"wall time  {summary['wall_s']:.0f} s",
        ]
    )
