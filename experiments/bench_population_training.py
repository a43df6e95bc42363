"""Benchmark: training a population of different NB201 networks, nasjax vs PyTorch eager.

Same work for all three: ``--population`` random NB201 cells (seed 0) in the 1D
NAS-Bench-201 network (C=16, N=1: three cells and two residual reductions) on MNIST-1D,
each trained for one epoch (``ceil(train / batch)`` steps of batch 100, the same minibatch
indices for every implementation), SGD with Nesterov momentum 0.9, cosine learning rate
from 0.05, weight decay 5e-4; then accuracy on the valid and test splits. One invocation:

(a) ``nasjax_vmap``: the whole population in one compiled call
    (:func:`nasjax.evaluation.training.compile_population`), sharded over every device:
    on a CPU one host device per core, members looped with ``lax.map`` and each edge's
    ``lax.switch`` running only the chosen op; ``--member-batch k`` vmaps k members
    together (for accelerators). ``compile_s``: trace + compile; ``peak_mem_mb``: XLA's
    memory analysis of that program (per device and per member).
(b) ``nasjax_loop``: the same trainer compiled for one member on one device, called once
    per architecture (compile excluded).
(c) ``pytorch_eager``: a specialised ``torch.nn`` network built per architecture (only
    the chosen ops exist), trained in an eager Python loop, the way NASLib-style code runs
    (``requirements-bench.txt``: torch==2.13.0, its CPU build on these machines).

``--populations 8,32,128`` adds a sweep: (a) compiled and run at each population size P
(P random cells, seed 0; the ``--population`` entry is (a) itself), reporting its
``compile_s``, seconds per architecture-epoch of the first call (as (a)) and of a second
call (a search calls the same program every generation; the first call also pays one-time
set-up of the program's kernels, about 1-2 s here, which weighs most at small P) and the
ratio to (c); PyTorch is measured once, on the ``--population`` cells, since it trains
one architecture after another (linear in P).

It checks the three did the same work: mean test accuracy of (a) equals (b) per member
(same program) and (a) vs (c) agree within ``4 * sqrt(se_a^2 + se_c^2) + 0.02`` (different
initialisations, so per-member values differ); prints the ratios ``pytorch_eager /
nasjax_vmap`` and ``nasjax_loop / nasjax_vmap`` and writes the JSON to ``--out``.

Command::

    python experiments/bench_population_training.py --population 32 --out runs/bench_pop.json
    python experiments/bench_population_training.py --populations 8,32,128  # and the sweep

Figures measured on the 2-core CPU are in the README. Exit 1 if the work disagrees.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from nasjax.devices import use_cpu_cores, without_compilation_cache

use_cpu_cores()  # before JAX starts: one host device per core

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nasjax.data import batch_indices, load_dataset  # noqa: E402
from nasjax.errors import NasjaxError  # noqa: E402
from nasjax.evaluation.training import (  # noqa: E402
    TrainConfig,
    compile_population,
    population_mesh,
)
from nasjax.flags import (  # noqa: E402
    OneLineErrorParser,
    at_least,
    list_of,
    positive_int,
    run_script,
)
from nasjax.rundir import check_out_file, write_json_atomic  # noqa: E402
from nasjax.spaces.nb201 import NB201Space  # noqa: E402
from nasjax.spaces.nb201_functional import TRUNCATED_NORMAL_STD  # noqa: E402
from nasjax.spaces.nb201_net import EDGES, OPS  # noqa: E402

# ---------------------------------------------------------------------------------------
# The PyTorch peer: a specialised network per architecture, trained eagerly.
# ---------------------------------------------------------------------------------------


def torch_network(
    genotype: np.ndarray, channels: int, cells_per_stage: int, classes: int, ndim: int = 1
):
    """The NB201 network of ``genotype`` in PyTorch: only the chosen ops are built.

    ``ndim`` 1 for signals ``[B, 1, L]`` (MNIST-1D), 2 for RGB images ``[B, 3, H, W]``
    (CIFAR). Module names: ``body`` (stem conv, stem BN, then the cells and reductions in
    order), ``last_bn``, ``classifier``; a cell's ``edges[str(e)]`` is ``ReLU, Conv, BN``
    for a convolution op; a reduction has ``conv_a``, ``conv_b`` (``ReLU, Conv, BN``) and
    ``shortcut`` (pool, 1x1 conv).
    """
    import torch
    from torch import nn

    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d}[ndim]
    bn_cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[ndim]
    pool_cls = {1: nn.AvgPool1d, 2: nn.AvgPool2d}[ndim]

    def relu_conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
        conv = conv_cls(cin, cout, kernel, stride, kernel // 2, bias=False)
        return nn.Sequential(nn.ReLU(), conv, bn_cls(cout))

    def make_op(op: str, c: int) -> nn.Module:
        if op == "skip_connect":
            return nn.Identity()
        if op == "avg_pool_3x3":
            return pool_cls(3, 1, 1, count_include_pad=False)
        return relu_conv_bn(c, c, 1 if op == "nor_conv_1x1" else 3)

    class Cell(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            chosen = {e: OPS[int(op)] for e, op in enumerate(genotype) if OPS[int(op)] != "none"}
            self.edges = nn.ModuleDict({str(e): make_op(op, c) for e, op in chosen.items()})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nodes = [x]
            for node in range(1, 4):
                total = torch.zeros_like(x)
                for e, (src, dst) in enumerate(EDGES):
                    if dst == node and str(e) in self.edges:
                        total = total + self.edges[str(e)](nodes[src])
                nodes.append(total)
            return nodes[-1]

    class Reduction(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv_a = relu_conv_bn(cin, cout, 3, 2)
            self.conv_b = relu_conv_bn(cout, cout, 3)
            self.shortcut = nn.Sequential(pool_cls(2, 2), conv_cls(cin, cout, 1, bias=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shortcut(x) + self.conv_b(self.conv_a(x))

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [
                conv_cls(1 if ndim == 1 else 3, channels, 3, 1, 1, bias=False),
                bn_cls(channels),
            ]
            c = channels
            for stage in range(3):
                if stage > 0:
                    layers.append(Reduction(c, channels * 2**stage))
                    c = channels * 2**stage
                layers += [Cell(c) for _ in range(cells_per_stage)]
            self.body = nn.Sequential(*layers)
            self.last_bn = bn_cls(c)
            self.classifier = nn.Linear(c, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.last_bn(self.body(x)))
            return self.classifier(x.flatten(2).mean(-1))

    return Network()


SMOKE_STEPS = 6
"""``--smoke`` (for tests): at most this many steps, and C=4: with ``--population 2`` the
recipe of ``python -m nasjax search --smoke``, so a test shares its compiled programs."""


def torch_train(genotype, data, indices: np.ndarray, config: TrainConfig, seed: int) -> dict:
    """Trains one architecture with the recipe of ``config``; returns accuracies."""
    import torch

    torch.manual_seed(seed)
    as_ncl = lambda a: torch.from_numpy(np.array(np.swapaxes(a, 1, 2)))  # writable copy
    x_train, y_train = as_ncl(data.x_train), torch.from_numpy(data.y_train).long()
    net = torch_network(genotype, config.channels, config.cells_per_stage, data.num_classes)
    for module in net.modules():  # nasjax's (flax's) init: lecun normal kernels, zero bias
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Linear)):
            fan_in = module.weight[0].numel()
            std = 1.0 / math.sqrt(fan_in) / TRUNCATED_NORMAL_STD
            torch.nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=config.learning_rate,
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    net.train()
    for batch in indices:
        batch = torch.from_numpy(np.array(batch))
        loss = torch.nn.functional.cross_entropy(net(x_train[batch]), y_train[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        accuracy = lambda x, y: float((net(as_ncl(x)).argmax(-1).numpy() == y).mean())
        return {
            "valid_accuracy": accuracy(data.x_valid, data.y_valid),
            "test_accuracy": accuracy(data.x_test, data.y_test),
        }


# ---------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    data = load_dataset("mnist1d", seed=0)
    steps = -(-data.x_train.shape[0] // args.batch_size)  # one epoch
    if args.smoke:
        steps = min(steps, SMOKE_STEPS)
    config = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        channels=args.channels,
        cells_per_stage=args.cells_per_stage,
        member_batch=args.member_batch,
    )
    space = NB201Space()
    genotypes = np.asarray(space.sample(jax.random.key(0), args.population))
    key = jax.random.key(1)
    member_keys = jax.random.split(key, args.population)
    print(
        f"population {args.population}, {steps} steps of batch {args.batch_size} (one epoch), "
        f"C={args.channels} N={args.cells_per_stage}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)",
        flush=True,
    )

    # (c) PyTorch eager, a specialised network per architecture, same minibatches. It runs
    # first, before XLA's thread pools have work (their idle threads would slow it).
    torch_results, start = [], time.perf_counter()
    for i in range(args.population):
        key_data = jax.random.split(member_keys[i])[1]  # train_member's minibatch key
        indices = np.asarray(
            batch_indices(key_data, data.x_train.shape[0], config.batch_size, config.steps)
        )
        torch_results.append(torch_train(genotypes[i], data, indices, config, seed=i))
    torch_s = time.perf_counter() - start
    print(f"(c) PyTorch eager: run {torch_s:.2f} s", flush=True)

    # (a) the whole population in one compiled call, over every device.
    program = compile_population(genotypes, data, space, config)
    start = time.perf_counter()
    vmap = program.run(key, genotypes)
    vmap_s = time.perf_counter() - start
    print(f"(a) nasjax population: compile {program.compile_s:.1f} s, run {vmap_s:.2f} s")

    # (b) one member at a time on one device, compiled once.
    one_device = population_mesh(jax.devices()[:1])
    solo = compile_population(genotypes[:1], data, space, config, mesh=one_device)
    loop_results, start = [], time.perf_counter()
    for i in range(args.population):
        out = solo.run(member_keys[i : i + 1], genotypes[i : i + 1], split=False)
        loop_results.append({k: float(v[0]) for k, v in out.items() if v.ndim == 1})
    loop_s = time.perf_counter() - start
    print(f"(b) nasjax one at a time: compile {solo.compile_s:.1f} s, run {loop_s:.2f} s")

    per_arch = lambda seconds: seconds / args.population  # one epoch each
    sweep = scaling(args, data, space, config, per_arch(torch_s), program, vmap_s)
    sec = {
        "nasjax_vmap": per_arch(vmap_s),
        "nasjax_loop": per_arch(loop_s),
        "pytorch_eager": per_arch(torch_s),
    }
    acc_vmap = np.asarray(vmap["test_accuracy"])
    acc_loop = np.array([r["test_accuracy"] for r in loop_results])
    acc_torch = np.array([r["test_accuracy"] for r in torch_results])
    (m_a, se_a), (m_c, se_c) = _mean_se(acc_vmap), _mean_se(acc_torch)
    tolerance = 4 * math.hypot(se_a, se_c) + 0.02
    agree_loop = bool(np.allclose(acc_vmap, acc_loop, atol=2e-3))
    agree_torch = bool(abs(m_a - m_c) < tolerance)
    return {
        "population": args.population,
        "steps_per_epoch": steps,
        "batch_size": args.batch_size,
        "channels": args.channels,
        "cells_per_stage": args.cells_per_stage,
        "member_batch": args.member_batch,
        "platform": jax.devices()[0].platform,
        "num_devices": jax.device_count(),
        "torch_version": torch.__version__,
        "sec_per_arch_epoch": sec,
        "speedup_vs_pytorch": sec["pytorch_eager"] / sec["nasjax_vmap"],
        "speedup_vs_loop": sec["nasjax_loop"] / sec["nasjax_vmap"],
        "compile_s": program.compile_s,
        "compile_s_one_member": solo.compile_s,
        "peak_mem_mb": {
            "population_program_per_device": program.memory_mb["peak"],
            "per_member": program.memory_mb["per_member"],
            "one_member_program": solo.memory_mb["peak"],
        },
        "test_accuracy_mean": {
            "nasjax_vmap": m_a,
            "nasjax_loop": float(acc_loop.mean()),
            "pytorch_eager": m_c,
        },  # fmt: skip
        "agreement": {
            "vmap_equals_loop": agree_loop,
            "vmap_vs_pytorch_tolerance": tolerance,
            "vmap_vs_pytorch": agree_torch,
        },
        "scaling": sweep,
        "genotypes": genotypes.tolist(),
    }


def scaling(
    args: argparse.Namespace,
    data,
    space: NB201Space,
    config: TrainConfig,
    torch_per_arch: float,
    program,
    run_s: float,
) -> dict:
    """(a) at each P of ``--populations``: compile_s, s per architecture-epoch and the ratio
    to PyTorch's per-architecture time; ``program`` and ``run_s`` are (a) at ``--population``."""
    out = {}
    for size in args.populations or []:
        genotypes = np.asarray(space.sample(jax.random.key(0), size))
        sized, seconds = program, run_s
        if size != args.population:
            sized = compile_population(genotypes, data, space, config)
            seconds = _timed(sized, genotypes)
        again = _timed(sized, genotypes)
        out[str(size)] = {
            "compile_s": sized.compile_s,
            "sec_per_arch_epoch": seconds / size,
            "sec_per_arch_epoch_second_call": again / size,
            "speedup_vs_pytorch": torch_per_arch * size / seconds,
        }
        print(
            f"(a) at P={size}: compile {sized.compile_s:.1f} s, {seconds / size:.3f} s per "
            f"architecture-epoch ({torch_per_arch * size / seconds:.2f}x PyTorch eager), "
            f"{again / size:.3f} s on a second call",
            flush=True,
        )
    return out


def _timed(program, genotypes: np.ndarray) -> float:
    """Seconds of one ``program.run`` on ``genotypes`` (key 1, as (a))."""
    start = time.perf_counter()
    program.run(jax.random.key(1), genotypes)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring); PyTorch must be installed."""
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=at_least(2), default=32, help="architectures (P)")
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--channels", type=positive_int, default=16)
    p.add_argument("--cells-per-stage", type=positive_int, default=1)
    p.add_argument("--member-batch", type=positive_int, default=1, help="members vmapped together")
    p.add_argument(
        "--populations", type=list_of(at_least(2)), default=None, help="sweep: P values, 8,32,128"
    )
    p.add_argument("--out", default="runs/bench_population.json", help="JSON output")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (C=4, 6 steps)")
    args = p.parse_sized(argv, {"channels": 4})
    try:
        import torch  # noqa: F401
    except ImportError:
        raise NasjaxError(
            "PyTorch is not installed; pip install -r requirements-bench.txt"
        ) from None
    check_out_file(args.out)
    return args


def report(args: argparse.Namespace, result: dict) -> int:
    """Writes ``--out`` and prints the figures; 1 if the work disagrees, else 0."""
    write_json_atomic(Path(args.out), result)
    sec = result["sec_per_arch_epoch"]
    print("s per architecture-epoch: " + ", ".join(f"{k} {v:.3f}" for k, v in sec.items()))
    print(
        f"nasjax population is {result['speedup_vs_pytorch']:.2f}x PyTorch eager and "
        f"{result['speedup_vs_loop']:.2f}x nasjax one-at-a-time; compile "
        f"{result['compile_s']:.1f} s; peak memory {result['peak_mem_mb']['per_member']:.1f} MB "
        f"per member"
    )
    acc = result["test_accuracy_mean"]
    print("mean test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    agreement = result["agreement"]
    if not (agreement["vmap_equals_loop"] and agreement["vmap_vs_pytorch"]):
        print(f"work disagrees: {agreement}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0; 1 if the work disagrees; 2 and one line on bad input; 130 on Ctrl-C."""
    report_run = lambda args: report(args, run(args))
    return run_script(parse_args, report_run, argv, status_from_run=True)


if __name__ == "__main__":
    without_compilation_cache()  # the compile times are compiles, not cache loads
    raise SystemExit(main())
