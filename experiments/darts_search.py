"""Gradient-based architecture search (DARTS 1st/2nd order, GDAS, PC-DARTS), then retraining.

Searches the relaxed NAS-Bench-201 or DARTS space with one of the DARTS-family methods
(:mod:`nasjax.relaxation.methods`): the network weights train on one half of the training
set and the architecture logits on the other, one compiled call per epoch. Every epoch
logs the derived genotype, the mean entropy of the op distributions and the number of
parameter-free ops chosen (``OUT/search.jsonl``; checkpoints in ``OUT/checkpoints``,
``--resume`` continues). The final genotype is then retrained from scratch (its decoded
network) and tested.

NAS-Bench-201 reports that DARTS on its space collapses to the all-skip cell on CIFAR-10
(54.30 % test), while GDAS finds 93.61 %; this script shows what happens on MNIST-1D.

Command::

    python experiments/darts_search.py --space nb201 --dataset mnist1d --method darts1 \
        --out runs/darts1_nb201

Expected runtime on a 2-core CPU (NB201 space, C=16, N=1, MNIST-1D, 50 epochs of 31
steps): darts1 / gdas / pcdarts about 3-6 minutes, darts2 about three times darts1; the
retraining 1-2 minutes. ``--smoke`` runs 2 epochs of a tiny network for tests.

Writes ``OUT/result.json`` (``arch``, ``test_accuracy``, ``search_s``, per-epoch history
and settings), ``OUT/alpha.png`` (each edge's op weights over the epochs) and the
retrained network (``OUT/model.json`` + ``model.msgpack``; ``nasjax.load_result(OUT)``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from nasjax.devices import use_cpu_cores

use_cpu_cores(1)  # before JAX starts: XLA:CPU's faster compiles; one device (one search)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nasjax.data import load_dataset  # noqa: E402
from nasjax.errors import check_choice  # noqa: E402
from nasjax.evaluation.module_training import module_accuracy, train_module  # noqa: E402
from nasjax.evaluation.training import TrainConfig  # noqa: E402
from nasjax.flags import (  # noqa: E402
    OneLineErrorParser,
    positive_float,
    positive_int,
    run_script,
    seed,
    tensorboard_flag,
)
from nasjax.objectives import count_params, init_abstract  # noqa: E402
from nasjax.plots import save_figure  # noqa: E402
from nasjax.relaxation.methods import METHODS, UNROLLED, method_config  # noqa: E402
from nasjax.rundir import RunDir, flags_config, write_json_atomic  # noqa: E402
from nasjax.search.gradient import gradient_search  # noqa: E402
from nasjax.spaces import make_space  # noqa: E402
from nasjax.spaces.saved import save_model  # noqa: E402
from nasjax.tracking import tensorboard_callbacks  # noqa: E402

SPACES = ("nb201", "darts")
DATASETS = ("mnist1d", "digits", "cifar10")
SMOKE = {"epochs": 2, "channels": 4, "cells": 1, "final_steps": 20, "batch_size": 32}
# Search / evaluation network sizes per space (overridable by flags).
SEARCH_SIZE = {"nb201": {"channels": 16, "cells": 1}, "darts": {"channels": 16, "cells": 5}}
FINAL_SIZE = {"nb201": {"channels": 16, "cells": 1}, "darts": {"channels": 16, "cells": 8}}
PUBLISHED = {
    "nb201/cifar10": "NAS-Bench-201 CIFAR-10 test: DARTS-V1/V2 54.30 (all-skip), "
    "GDAS 93.61, optimum 94.37",
    "darts/cifar10": "DARTS paper CIFAR-10 test error: 3.00 % (1st order), 2.76 % (2nd); "
    "GDAS 2.82 %; PC-DARTS 2.57 % (600-epoch evaluation)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = OneLineErrorParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="nb201", help=f"one of {', '.join(SPACES)}")
    p.add_argument("--dataset", default="mnist1d", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--method", default="darts1", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--unrolled", default="exact", help=f"darts2: one of {', '.join(UNROLLED)}")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--channels", type=positive_int, help="search network C (nb201 16, darts 16)")
    p.add_argument(
        "--cells", type=positive_int, help="search size: NB201 cells per stage (1), DARTS (5)"
    )
    p.add_argument("--weight-lr", type=positive_float, help="weights' peak LR (method default)")
    p.add_argument("--arch-lr", type=positive_float, help="alpha's Adam LR (method default)")
    p.add_argument("--final-steps", type=positive_int, default=1000, help="retraining steps")
    p.add_argument("--final-channels", type=positive_int, help="retrained network C (16)")
    p.add_argument("--final-cells", type=positive_int, help="retrained: NB201 N (1), DARTS (8)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--data-dir", help="CIFAR-10 folder (cifar-10-batches-py) or its parent")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for tests")
    p.add_argument("--no-progress", action="store_true")
    tensorboard_flag(p)
    return p.parse_args(argv)


def _sizes(args: argparse.Namespace) -> None:
    """Fills unset sizes with the space's defaults (``--smoke`` shrinks everything)."""
    check_choice("space", args.space, SPACES)
    check_choice("dataset", args.dataset, DATASETS)
    check_choice("method", args.method, METHODS)
    check_choice("unrolled hypergradient", args.unrolled, UNROLLED)
    for name, value in (("channels", "channels"), ("cells", "cells")):
        if getattr(args, name) is None:
            setattr(args, name, SEARCH_SIZE[args.space][value])
        if getattr(args, f"final_{name}") is None:
            setattr(args, f"final_{name}", FINAL_SIZE[args.space][value])
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, min(getattr(args, name), value))
        args.final_channels, args.final_cells = SMOKE["channels"], SMOKE["cells"]
        if args.space == "darts":  # a DARTS network needs 3+ cells for its two reductions
            args.cells, args.final_cells = 3, 3


def _network_size(space: str, channels: int, cells: int) -> dict[str, int]:
    if space == "nb201":
        return {"channels": channels, "cells_per_stage": cells}
    return {"channels": channels, "layers": cells}


def plot_alpha(history: list[dict], path: Path, title: str, ops: tuple[str, ...]) -> Path:
    """One panel per edge: each op's softmax weight (``ops`` order) over the epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray([h["op_weights"] for h in history])  # [T, ..., E, K]
    weights = weights.reshape(len(history), -1, weights.shape[-1])
    num_edges = weights.shape[1]
    cols = min(num_edges, 7)
    rows = -(-num_edges // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.8 * rows + 0.6), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for e, ax in enumerate(axes.flat):
        if e >= num_edges:
            ax.axis("off")
            continue
        for k in range(weights.shape[-1]):
            ax.plot(epochs, weights[:, e, k], label=ops[k])
        ax.set_title(f"edge {e}", fontsize=8)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Searches, retrains the found genotype and writes ``result.json`` and ``alpha.png``."""
    _sizes(args)
    out = Path(args.out)
    # --resume with another --method, --seed... is refused (where logs go changes nothing)
    run_config = flags_config(args)
    RunDir.check(out, run_config, resume=args.resume)
    data = load_dataset(args.dataset, seed=args.seed, data_dir=args.data_dir)
    space = make_space(args.space)
    mode = METHODS[args.method]
    net = space.relaxed(args.dataset, mode, **_network_size(args.space, args.channels, args.cells))
    steps = (data.x_train.shape[0] // 2) // args.batch_size
    overrides: dict[str, Any] = {"unrolled": args.unrolled}
    for name in ("weight_lr", "arch_lr"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = method_config(args.method, args.epochs * steps, **overrides)
    key_search, key_final = jax.random.split(jax.random.key(args.seed))
    found = gradient_search(
        key_search,
        space,
        net,
        config,
        data,
        args.epochs,
        args.batch_size,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        run_config=run_config,
        callbacks=tensorboard_callbacks(args.tensorboard, args.method),
    )
    t0 = time.time()
    final_size = _network_size(args.space, args.final_channels, args.final_cells)
    module = space.decode(found.genotype, args.dataset, **final_size)
    final_config = TrainConfig(steps=args.final_steps, batch_size=args.batch_size)
    final = train_module(key_final, module, data, final_config, keep_variables=True)
    trained = final["variables"]
    model_acc = module_accuracy(
        module, trained, data.x_test, data.y_test, final_config.eval_batch_size
    )
    saved = save_model(
        out, space, found.genotype, data.task, final_size, trained, summary_file="result.json"
    )
    variables = init_abstract(module, data.input_shape)
    last = found.history[-1]
    result = {
        "arch": found.arch,
        "genotype": found.genotype.tolist(),
        "test_accuracy": final["test_accuracy"],
        "valid_accuracy": final["valid_accuracy"],
        "model_test_accuracy": model_acc,
        **saved,
        "params": count_params(variables["params"]),
        "search_s": found.search_s,
        "search_s_per_epoch": found.search_s / len(found.history),
        "retrain_s": round(time.time() - t0, 2),
        "alpha_entropy": last["alpha_entropy"],
        "num_parameter_free": last["num_parameter_free"],
        "num_edges_chosen": len(space.chosen_ops(found.genotype)),
        "published": PUBLISHED.get(f"{args.space}/{args.dataset}", "-"),
        "history": [{k: v for k, v in h.items() if k != "op_weights"} for h in found.history],
        "space": args.space,
        "dataset": args.dataset,
        "method": args.method,
        "method_config": config._asdict(),
        "search_network": _network_size(args.space, args.channels, args.cells),
        "final_network": final_size,
        "final_training": final_config._asdict(),
        "seed": args.seed,
    }
    if args.method != "darts2":
        result["method_config"].pop("unrolled")
    title = f"{args.method} on {args.space} / {args.dataset}: {found.arch}"
    title = title if len(title) < 120 else title[:117] + "..."
    plot_alpha(found.history, out / "alpha.png", title, space.ops)
    write_json_atomic(out / "result.json", result)
    return result


def report(result: dict[str, Any]) -> str:
    """The lines the script prints."""
    return "\n".join(
        [
            f"arch: {result['arch']}",
            f"test accuracy {result['test_accuracy']:.4f} (valid {result['valid_accuracy']:.4f}), "
            f"{result['params']:,} params",
            f"parameter-free ops chosen: {result['num_parameter_free']} of "
            f"{result['num_edges_chosen']}; alpha entropy {result['alpha_entropy']:.3f}",
            f"search {result['search_s']:.1f} s ({result['search_s_per_epoch']:.2f} s/epoch), "
            f"retrain {result['retrain_s']:.1f} s",
            f"published: {result['published']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit code 2 on bad input."""
    return run_script(parse_args, lambda a: print(report(run(a))), argv)


if __name__ == "__main__":
    raise SystemExit(main())
