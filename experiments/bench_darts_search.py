"""Search-step speed of the gradient methods, with a PyTorch eager DARTS peer side by side.

Times one search epoch (alternating architecture and weight steps over the two halves of
MNIST-1D's training set) of each method on NAS-Bench-201's search network
(:mod:`nasjax.spaces.nb201_search_net`), each epoch one compiled ``lax.scan``; and the same
first-order DARTS epoch in PyTorch eager, the way NASLib / AutoDL-Projects run it (a
``torch.nn`` supernet computing every op on every edge, affine-free BN, Adam on alpha,
SGD on the weights). Prints seconds per epoch, compile times, and the ratios
``pytorch / nasjax`` for darts1 and ``method / darts1`` for the others.

Command::

    python experiments/bench_darts_search.py --out runs/bench_darts.json

Expected runtime: about 5 minutes on a 2-core CPU (most of it compiling darts2).
``--smoke`` times one tiny epoch of each for tests. On a GPU the same script runs
unchanged (the PyTorch peer stays on the CPU).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from nasjax.devices import use_cpu_cores, without_compilation_cache

use_cpu_cores(1)  # before JAX starts: XLA:CPU's faster compiles; one device (one search)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nasjax.data import batch_indices, load_dataset  # noqa: E402
from nasjax.flags import (  # noqa: E402
    OneLineErrorParser,
    nonneg_int,
    positive_int,
    run_script,
)
from nasjax.objectives import device_name  # noqa: E402
from nasjax.relaxation.methods import METHODS, init_state, method_config, search_epoch  # noqa: E402
from nasjax.rundir import check_out_file, write_json_atomic  # noqa: E402
from nasjax.search.gradient import split_halves  # noqa: E402
from nasjax.spaces import NB201Space  # noqa: E402
from nasjax.spaces.nb201_net import EDGES, OPS  # noqa: E402

SMOKE = {"channels": 4, "cells": 1, "epochs": 1, "steps": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--channels", type=positive_int, default=16)
    p.add_argument("--cells", type=positive_int, default=1, help="NB201 cells per stage")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--steps", type=nonneg_int, default=0, help="steps per epoch (0: full epoch)")
    p.add_argument("--epochs", type=positive_int, default=2, help="timed epochs after compile")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--out", help="JSON file for the figures")
    p.add_argument("--smoke", action="store_true")
    return p.parse_args(argv)


def time_nasjax(method: str, args: argparse.Namespace, data: Any) -> dict[str, float]:
    """Compile time and seconds per epoch of ``method`` (its own jitted epoch)."""
    space = NB201Space()
    net = space.relaxed(
        data.name, METHODS[method], channels=args.channels, cells_per_stage=args.cells
    )
    halves = split_halves(data)
    n = halves[0].shape[0]
    steps = args.steps
    config = method_config(method, steps * (args.epochs + 1), arch_warmup_steps=0)
    state = init_state(jax.random.key(0), net, config)

    def indices(epoch: int) -> tuple:
        k1, k2 = jax.random.split(jax.random.key(epoch))
        return batch_indices(k1, n, args.batch_size, steps), batch_indices(
            k2, n, args.batch_size, steps
        )

    start = time.perf_counter()
    state, _ = search_epoch(net, config, state, jax.random.key(0), halves, indices(0))
    jax.block_until_ready(state)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        state, _ = search_epoch(net, config, state, jax.random.key(epoch), halves, indices(epoch))
    jax.block_until_ready(state)
    per_epoch = (time.perf_counter() - start) / args.epochs
    return {"s_per_epoch": per_epoch, "compile_s": max(first - per_epoch, 0.0)}


def torch_darts1_epoch_s(args: argparse.Namespace, data: Any) -> float:
    """Seconds per first-order DARTS epoch of the PyTorch eager supernet."""
    import torch
    from torch import nn

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)

    def relu_conv_bn(c: int, k: int) -> nn.Module:
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(c, c, k, padding=k // 2, bias=False),
            nn.BatchNorm1d(c, affine=False),
        )

    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mul(0.0)

    class MixedEdge(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            pool = nn.AvgPool1d(3, 1, 1, count_include_pad=False)
            self.ops = nn.ModuleList(
                [Zero(), nn.Identity(), relu_conv_bn(c, 1), relu_conv_bn(c, 3), pool]
            )

        def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return sum(wk * op(x) for wk, op in zip(w, self.ops))

    class Cell(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.edges = nn.ModuleList([MixedEdge(c) for _ in EDGES])

        def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            nodes = [x]
            for node in range(1, 4):
                terms = [
                    self.edges[e](nodes[s], weights[e])
                    for e, (s, d) in enumerate(EDGES)
                    if d == node
                ]
                nodes.append(sum(terms))
            return nodes[-1]

    class Reduction(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.a = nn.Sequential(
                nn.ReLU(), nn.Conv1d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm1d(cout)
            )
            self.b = nn.Sequential(
                nn.ReLU(), nn.Conv1d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm1d(cout)
            )
            self.short = nn.Sequential(nn.AvgPool1d(2, 2), nn.Conv1d(cin, cout, 1, bias=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.short(x) + self.b(self.a(x))

    class Supernet(nn.Module):
        def __init__(self, c: int, n: int, classes: int) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv1d(1, c, 3, padding=1, bias=False), nn.BatchNorm1d(c))
            layers: list[nn.Module] = []
            cin = c
            for stage in range(3):
                f = c * 2**stage
                if stage:
                    layers.append(Reduction(cin, f))
                layers += [Cell(f) for _ in range(n)]
                cin = f
            self.layers = nn.ModuleList(layers)
            self.last = nn.BatchNorm1d(cin)
            self.classifier = nn.Linear(cin, classes)
            self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = torch.softmax(self.alpha, dim=-1)
            x = self.stem(x)
            for layer in self.layers:
                x = layer(x, w) if isinstance(layer, Cell) else layer(x)
            return self.classifier(torch.relu(self.last(x)).mean(-1))

    net = Supernet(args.channels, args.cells, data.num_classes)
    weights = [p for name, p in net.named_parameters() if name != "alpha"]
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam([net.alpha], lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    halves = [np.asarray(a) for a in split_halves(data)]
    xt, yt = (
        torch.from_numpy(np.swapaxes(halves[0], 1, 2).copy()),
        torch.from_numpy(halves[1].copy()).long(),
    )
    xv, yv = (
        torch.from_numpy(np.swapaxes(halves[2], 1, 2).copy()),
        torch.from_numpy(halves[3].copy()).long(),
    )
    loss_fn = nn.functional.cross_entropy
    rng = np.random.default_rng(0)

    def step() -> None:
        t = torch.from_numpy(rng.choice(len(xt), args.batch_size, replace=False))
        v = torch.from_numpy(rng.choice(len(xv), args.batch_size, replace=False))
        a_opt.zero_grad()
        loss_fn(net(xv[v]), yv[v]).backward()
        a_opt.step()
        w_opt.zero_grad()
        loss_fn(net(xt[t]), yt[t]).backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.epochs * args.steps):
        step()
    return (time.perf_counter() - start) / args.epochs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Times every method and the PyTorch peer; returns the figures."""
    if args.out:
        check_out_file(args.out)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        method_config(m, 1)  # a clear error for unknown names
    data = load_dataset("mnist1d", seed=0)
    if args.steps <= 0:
        args.steps = (data.x_train.shape[0] // 2) // args.batch_size
    figures: dict[str, Any] = {
        "device": device_name(),
        "network": {"channels": args.channels, "cells_per_stage": args.cells},
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps,
        "nasjax": {},
    }
    for m in methods:
        figures["nasjax"][m] = time_nasjax(m, args, data)
        print(
            f"nasjax {m}: {figures['nasjax'][m]['s_per_epoch']:.3f} s/epoch "
            f"(compile {figures['nasjax'][m]['compile_s']:.1f} s)",
            flush=True,
        )
    base = figures["nasjax"].get("darts1", {}).get("s_per_epoch")
    if base:
        figures["ratio_to_darts1"] = {
            m: v["s_per_epoch"] / base for m, v in figures["nasjax"].items()
        }
    if not args.no_torch and base:
        torch_s = torch_darts1_epoch_s(args, data)
        figures["pytorch_darts1_s_per_epoch"] = torch_s
        figures["pytorch_over_nasjax_darts1"] = torch_s / base
        print(
            f"PyTorch eager darts1: {torch_s:.3f} s/epoch; pytorch / nasjax = "
            f"{torch_s / base:.2f}x",
            flush=True,
        )
    if args.out:
        write_json_atomic(args.out, figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit code 2 on bad input."""
    return run_script(parse_args, run, argv)


if __name__ == "__main__":
    without_compilation_cache()  # the compile times are compiles, not cache loads
    raise SystemExit(main())
