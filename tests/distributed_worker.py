"""One process of a sharded population evaluation; run by tests/test_sharding.py.

``python tests/distributed_worker.py [COORDINATOR NUM_PROCESSES PROCESS_ID]`` trains
``POPULATION`` with the ``CONFIG`` recipe over every device of every process and prints
one JSON line: the device and process counts and each member's results.
``python tests/distributed_worker.py --proxies`` prints the zero-cost scores of
``POPULATION`` (:func:`proxy_scores`) instead, ``--supernet`` how far the one-shot
supernet trained on two devices is from the same steps on one (:func:`supernet_gap`).
"""

import json
import sys

import jax
import numpy as np

from nasjax.data import load_dataset
from nasjax.evaluation import oneshot, proxies
from nasjax.evaluation.training import TrainConfig, train_population
from nasjax.spaces import NB201Space
from nasjax.training_recipe import make_optimizer

CONFIG = TrainConfig(steps=6, batch_size=100, learning_rate=0.05, channels=4, cells_per_stage=1)
# Three members: not a multiple of 2 or 4 devices, so the padding path runs too.
POPULATION = np.array([[3, 3, 3, 1, 3, 2], [1, 4, 2, 0, 3, 0], [2, 2, 4, 1, 0, 3]], np.int32)
SEED = 0


def evaluate() -> dict:
    """The population's results on every visible device, as plain lists."""
    out = train_population(
        jax.random.key(SEED), POPULATION, load_dataset("mnist1d", seed=0), NB201Space(), CONFIG
    )
    return {name: np.asarray(value).tolist() for name, value in out.items()}


def proxy_scores() -> dict:
    """synflow and snip of ``POPULATION`` (tiny MNIST-1D network) on the visible devices."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 40, 1)).astype(np.float32), np.arange(8) % 10
    tiny = dict(channels=4, cells_per_stage=1)
    key = jax.random.key(SEED)
    return {
        proxy: proxies.score_population(proxy, POPULATION, "mnist1d", x, y, key, **tiny).tolist()
        for proxy in ("synflow", "snip")
    }


def supernet_gap(steps: int = 3) -> dict:
    """The supernet trained on the first two devices (``shard_map``, one path each per
    step) against the same paths and minibatches with a named ``vmap`` axis standing for
    the devices, on one: the largest difference of a weight or statistic, relative to
    ``1 + |value|`` (BatchNorm variances reach ~10)."""
    space, data = NB201Space(), load_dataset("mnist1d", seed=0)
    config = CONFIG._replace(steps=steps, batch_size=16)
    key, devices = jax.random.key(SEED), jax.local_devices()[:2]
    got = oneshot.train_supernet(
        key, space, data, config, chunk=steps, progress=False, devices=devices
    )
    net = got.net
    carry, paths, rows = oneshot._start(key, net, space, config, 2, len(data.y_train))
    tx = make_optimizer(config)
    step = jax.jit(
        jax.vmap(
            lambda c, g, xb, yb: oneshot.single_path_step(net, tx, c, g, xb, yb, "data"),
            in_axes=(None, 0, 0, 0),
            axis_name="data",
        )
    )
    x, y = jax.numpy.asarray(data.x_train), jax.numpy.asarray(data.y_train)
    for t in range(steps):
        carry, _ = step(carry, paths[t], x[rows[t]], y[rows[t]])
        carry = jax.tree.map(lambda v: v[0], carry)  # both stand-in devices agree
    gaps = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.subtract(a, b)) / (1 + np.abs(np.asarray(b))))),
        (got.params, got.state),
        carry[:2],
    )
    return {"max_gap": max(jax.tree.leaves(gaps)), "num_devices": len(devices)}


def main(argv: list[str]) -> None:
    if argv == ["--proxies"]:
        print(json.dumps({**proxy_scores(), "num_devices": jax.device_count()}), flush=True)
        return
    if argv == ["--supernet"]:
        print(json.dumps(supernet_gap()), flush=True)
        return
    if argv:
        coordinator, num_processes, process_id = argv[0], int(argv[1]), int(argv[2])
        jax.distributed.initialize(coordinator, num_processes, process_id)
    result = evaluate()
    result.update(num_devices=jax.device_count(), num_processes=jax.process_count())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
