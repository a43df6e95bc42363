"""Benchmark: zero-cost proxy scoring of NB201 cells, nasjax's population program vs PyTorch eager.

Scores ``--cells`` random NAS-Bench-201 cells (distinct, seed 0: the zero-cost study's
sample, ``experiments/zero_cost_nb201.py``) at benchmark size -- the 2D CIFAR-10 network
with C=16, N=5 on 32x32x3 inputs, 10 classes -- with two proxies of
:mod:`nasjax.evaluation.proxies` (Abdelfattah et al., ICLR 2021):

* ``synflow`` (data-free; float64, BatchNorm removed, all-ones input) on every cell;
* ``snip`` (data-dependent: ``sum |theta * dL/dtheta|`` over conv/linear kernels, mean
  cross-entropy of one batch, BatchNorm on batch statistics) on the first
  ``--data-cells`` cells, with the zero-cost study's stand-in batch (``--batch`` standard-
  normal images, uniform labels; no CIFAR data is read).

Two implementations, one invocation:

(a) ``nasjax``: :func:`nasjax.evaluation.proxies.compile_scoring` -- the program
    :func:`~nasjax.evaluation.proxies.score_population` runs: every cell in one compiled
    call, members looped with ``lax.map`` and each edge's ``lax.switch`` running only the
    chosen op. ``compile_s`` is reported apart; throughput is cells/s of one call.
(b) ``pytorch_eager``: per cell, the specialised ``torch.nn`` network of
    ``experiments/bench_population_training.py`` (``torch_network``, 2D) is built, the
    same weights are copied in, and the proxy is computed eagerly (the way NASLib-style
    code scores a cell; ``requirements-bench.txt``: torch==2.13.0, CPU build).

Both use the *same weights* (nasjax shares one initialisation from ``jax.random.key(0)``
across cells; the torch network receives it), so the check is **per cell**: the relative
difference of every cell's score must be below ``1e-6`` (synflow, float64) and ``2e-3``
(snip, float32, summation order differs); the Spearman rank correlation across cells is
reported too. Exit 1 if they disagree.

Command::

    python experiments/bench_zero_cost.py --cells 1000 --out runs/bench_zero_cost.json

Runtime on the 2-core CPU: about 2-3 minutes (synflow on 1,000 cells both ways, snip on
32). Figures measured here are in the README; expected: synflow several times PyTorch
eager's cells/s (target >= 3x), compile a few seconds per proxy, every cell agreeing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nasjax.devices import use_cpu_cores, without_compilation_cache

use_cpu_cores()  # before JAX starts, as the other benchmarks (XLA -O1; one device per core)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench_population_training import torch_network  # noqa: E402
from zero_cost_nb201 import data_batch  # noqa: E402

from nasjax.errors import NasjaxError, check_choice  # noqa: E402
from nasjax.evaluation.proxies import compile_scoring  # noqa: E402
from nasjax.flags import OneLineErrorParser, int_in, positive_int, run_script  # noqa: E402
from nasjax.nets.layers import BN_EPSILON  # noqa: E402
from nasjax.rundir import check_out_file, write_json_atomic  # noqa: E402
from nasjax.spaces.nb201 import NB201Space  # noqa: E402
from nasjax.spaces.nb201_net import OPS  # noqa: E402
from nasjax.stats import spearman  # noqa: E402
from nasjax.tasks import get_task  # noqa: E402

DATASETS = ("cifar10", "cifar100", "imagenet16", "mnist1d")
TOLERANCE = {"synflow": 1e-6, "snip": 2e-3}
"""Largest relative difference of a cell's score between the two implementations."""
SMOKE = {"dataset": "mnist1d", "cells": 2, "data_cells": 2, "batch": 8, "channels": 4}
"""``--smoke``: the smallest network (MNIST-1D, C=4, N=1), test_proxies.py's program shapes."""


# ---------------------------------------------------------------------------------------
# The PyTorch peer: nasjax's shared weights in the specialised network of each cell.
# ---------------------------------------------------------------------------------------


def torch_weights(params: dict, state: dict) -> dict:
    """The functional network's weights as torch tensors, in torch's layouts: conv kernels
    ``[*window, in, out] -> [out, in, *window]``, the classifier's ``[in, out] -> [out, in]``."""
    import torch

    def convert(leaf: jax.Array) -> torch.Tensor:
        a = np.asarray(leaf)
        if a.ndim >= 2:
            a = np.transpose(a, (a.ndim - 1, a.ndim - 2, *range(a.ndim - 2)))
        return torch.from_numpy(np.array(a))  # a writable, contiguous copy

    return {"params": jax.tree.map(convert, params), "state": jax.tree.map(convert, state)}


def load_weights(net, weights: dict, genotype: np.ndarray, cells_per_stage: int) -> None:
    """Copies :func:`torch_weights` into ``torch_network(genotype, ...)`` (chosen ops only)."""
    import torch

    p, s = weights["params"], weights["state"]

    def bn(module, params: dict, stats: dict) -> None:
        module.weight.copy_(params["scale"])
        module.bias.copy_(params["bias"])
        module.running_mean.copy_(stats["mean"])
        module.running_var.copy_(stats["var"])

    with torch.no_grad():
        body = list(net.body)
        body[0].weight.copy_(p["stem"])
        bn(body[1], p["stem_bn"], s["stem_bn"])
        names = []
        for stage in range(3):
            names += [f"reduction_{stage}"] if stage > 0 else []
            names += [f"cell_{stage}_{i}" for i in range(cells_per_stage)]
        for name, module in zip(names, body[2:]):
            if name.startswith("reduction_"):
                rp, rs = p[name], s[name]
                module.conv_a[1].weight.copy_(rp["conv_a"])
                bn(module.conv_a[2], rp["bn_a"], rs["bn_a"])
                module.conv_b[1].weight.copy_(rp["conv_b"])
                bn(module.conv_b[2], rp["bn_b"], rs["bn_b"])
                module.shortcut[1].weight.copy_(rp["downsample"])
                continue
            for e, op in enumerate(genotype):
                if OPS[int(op)] in ("nor_conv_1x1", "nor_conv_3x3"):
                    q, stats = (
                        p[name][f"edge_{e}"][OPS[int(op)]],
                        s[name][f"edge_{e}"][OPS[int(op)]],
                    )
                    module.edges[str(e)][1].weight.copy_(q["kernel"])
                    bn(module.edges[str(e)][2], q, stats)
        bn(net.last_bn, p["last_bn"], s["last_bn"])
        net.classifier.weight.copy_(p["classifier"]["kernel"])
        net.classifier.bias.copy_(p["classifier"]["bias"])


def _kernel_saliency(net) -> float:
    """``sum |w * dw|`` over every conv and linear weight (not biases, not BatchNorm)."""
    import torch

    total = 0.0
    for module in net.modules():
        layer = isinstance(module, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear))
        if layer and module.weight.grad is not None:  # None: the output ignores this layer
            total += float((module.weight.detach() * module.weight.grad).abs().sum())
    return total


def torch_scores(proxy: str, genotypes: np.ndarray, weights: dict, args, x, y) -> np.ndarray:
    """``proxy`` of each cell in an eager loop: build, copy the weights in, score."""
    import torch

    task = get_task(args.dataset)
    if proxy == "synflow":
        x_t = torch.ones((1, task.input_shape[-1], *task.input_shape[:-1]), dtype=torch.float64)
    else:
        x_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))  # channels first
        y_t = torch.from_numpy(np.asarray(y)).long()
    batch_norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    scores = []
    for g in genotypes:
        net = torch_network(g, args.channels, args.cells_per_stage, task.num_classes, task.ndim)
        load_weights(net, weights, g, args.cells_per_stage)
        if proxy == "synflow":  # the reference: |theta|, float64, BatchNorm as identity
            net = net.double().eval()
            with torch.no_grad():
                for param in net.parameters():
                    param.abs_()
                for module in net.modules():
                    if isinstance(module, batch_norms):
                        module.running_mean.zero_()
                        module.running_var.fill_(1.0 - BN_EPSILON)
            net(x_t).sum().backward()
        else:
            net.train()
            torch.nn.functional.cross_entropy(net(x_t), y_t).backward()
        scores.append(_kernel_saliency(net))
    return np.asarray(scores, np.float64)


# ---------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------


def _agreement(proxy: str, ours: np.ndarray, theirs: np.ndarray) -> dict:
    rel = np.abs(ours - theirs) / np.maximum(np.maximum(np.abs(ours), np.abs(theirs)), 1e-300)
    rho = spearman(ours, theirs) if len(ours) >= 2 else float("nan")
    finite = bool(np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs)))
    return {
        "max_rel_diff": float(rel.max()),
        "median_rel_diff": float(np.median(rel)),
        "tolerance": TOLERANCE[proxy],
        "spearman": float(rho),
        "ok": finite and bool(rel.max() <= TOLERANCE[proxy]),
    }


def bench_proxy(proxy: str, genotypes: np.ndarray, args, x, y, key, weights: dict) -> dict:
    """One proxy both ways on ``genotypes``: times, throughput and agreement."""
    n = len(genotypes)
    start = time.perf_counter()
    theirs = torch_scores(proxy, genotypes, weights, args, x, y)
    torch_s = time.perf_counter() - start
    options = {"channels": args.channels, "cells_per_stage": args.cells_per_stage}
    program = compile_scoring(proxy, n, args.dataset, x, y, key, **options)
    start = time.perf_counter()
    ours = program.run(genotypes)
    nasjax_s = time.perf_counter() - start
    result = {
        "cells": n,
        "nasjax": {"compile_s": program.compile_s, "run_s": nasjax_s, "cells_per_s": n / nasjax_s},
        "pytorch_eager": {"run_s": torch_s, "cells_per_s": n / torch_s},
        "speedup_vs_pytorch": torch_s / nasjax_s,
        "agreement": _agreement(proxy, ours, theirs),
    }
    print(
        f"{proxy}: nasjax {n / nasjax_s:.2f} cells/s (compile {program.compile_s:.1f} s), "
        f"PyTorch eager {n / torch_s:.2f} cells/s: {result['speedup_vs_pytorch']:.2f}x; "
        f"max relative difference {result['agreement']['max_rel_diff']:.1e}",
        flush=True,
    )
    return result


def run(args: argparse.Namespace) -> dict:
    """Both proxies, both implementations, on the same cells and weights."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    space = NB201Space()
    key_sample, key_init = jax.random.split(jax.random.key(args.seed))
    codes = np.asarray(jax.random.choice(key_sample, space.size, (args.cells,), replace=False))
    genotypes = np.asarray(space.from_index(codes))
    x, y, source = data_batch(args.dataset, None, args.seed)
    x, y = x[: args.batch], y[: args.batch]
    net = space.functional(
        args.dataset, channels=args.channels, cells_per_stage=args.cells_per_stage
    )
    weights = torch_weights(*jax.jit(net.init)(key_init))
    print(
        f"{args.cells} cells (snip on {args.data_cells}, batch {args.batch}), {args.dataset} "
        f"network C={args.channels} N={args.cells_per_stage}, {jax.devices()[0].platform}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        flush=True,
    )
    proxies = {
        "synflow": bench_proxy("synflow", genotypes, args, x, y, key_init, weights),
        "snip": bench_proxy("snip", genotypes[: args.data_cells], args, x, y, key_init, weights),
    }
    proxies["snip"]["batch"] = args.batch
    proxies["snip"]["data"] = source
    return {
        "cells": args.cells,
        "seed": args.seed,
        "network": {
            "dataset": args.dataset,
            "channels": args.channels,
            "cells_per_stage": args.cells_per_stage,
            "input_shape": list(get_task(args.dataset).input_shape),
        },
        "platform": jax.devices()[0].platform,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "proxies": proxies,
        "genotypes": genotypes.tolist(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring); PyTorch must be installed."""
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int_in(2, NB201Space().size), default=1000)
    p.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-cells", type=positive_int, default=32, help="cells snip scores")
    p.add_argument("--batch", type=int_in(2, 64), default=64, help="snip's minibatch")
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)
    p.add_argument("--channels", type=positive_int, default=16)
    p.add_argument("--cells-per-stage", type=positive_int, default=5)
    p.add_argument("--out", default="runs/bench_zero_cost.json", help="JSON output")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (2 MNIST-1D cells, C=4, N=1)")
    args = p.parse_sized(argv, {**SMOKE, "cells_per_stage": 1})
    check_choice("dataset", args.dataset, DATASETS)
    args.data_cells = min(args.data_cells, args.cells)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise NasjaxError(
            "PyTorch is not installed; pip install -r requirements-bench.txt"
        ) from None
    check_out_file(args.out)
    return args


def report(args: argparse.Namespace, result: dict) -> int:
    """Writes ``--out`` and prints the summary; 1 if a proxy disagrees, else 0."""
    write_json_atomic(Path(args.out), result)
    bad = {p: r["agreement"] for p, r in result["proxies"].items() if not r["agreement"]["ok"]}
    if bad:
        print(f"scores disagree: {bad}", file=sys.stderr)
        return 1
    print(f"every cell agrees; wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0; 1 if the scores disagree; 2 and one line on bad input; 130 on Ctrl-C."""
    report_run = lambda args: report(args, run(args))
    return run_script(parse_args, report_run, argv, status_from_run=True)


if __name__ == "__main__":
    without_compilation_cache()  # the compile times are compiles, not cache loads
    raise SystemExit(main())
