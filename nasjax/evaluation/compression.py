"""Population QAT evaluator: train differently compressed networks in one call, score them.

Each member is trained by :func:`nasjax.evaluation.training.train_population` on the
compressed network (:mod:`nasjax.compression.nb201_qat`): ``space.float_steps`` steps at
full precision, then quantization-aware training with the member's bit-widths and pruning
masks for the remaining steps (the short QAT fine-tune of HAQ, Wang et al., CVPR 2019, and
APQ, Wang et al., CVPR 2020). Fitness for NSGA-II is ``(valid accuracy, -bits_total /
bits_dense)``, both MAXIMISED.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.data import Dataset
from nasjax.evaluation.training import Evaluator, TrainConfig, train_population

COST_KEYS = ("bits_total", "bitops", "mac_fraction_removed")


def population_costs(space: Any, genotypes: Any, dataset: str, config: TrainConfig) -> dict:
    """``bits_total``, ``bitops``, ``mac_fraction_removed`` and ``bits_dense`` per member."""
    rows = [
        space.compression_costs(
            g, dataset, channels=config.channels, cells_per_stage=config.cells_per_stage
        )
        for g in np.asarray(genotypes)
    ]
    return {k: np.array([r[k] for r in rows], np.float64) for k in COST_KEYS + ("bits_dense",)}


def train_padded(
    key: jax.Array,
    genotypes: Any,
    data: Dataset,
    space: Any,
    config: TrainConfig,
    chunk: int,
) -> dict[str, np.ndarray]:
    """``train_population`` over ``chunk``-sized slices (the last padded with copies of its
    first member), so every call has one shape and reuses one compiled program."""
    genotypes = np.asarray(genotypes, np.int32)
    n = len(genotypes)
    keys = jax.random.split(key, n)
    outs = []
    for start in range(0, n, chunk):
        g, k = genotypes[start : start + chunk], keys[start : start + chunk]
        fill = chunk - len(g)
        if fill:
            g = np.concatenate([g, np.repeat(g[:1], fill, 0)])
            k = jnp.concatenate([k, jnp.repeat(k[:1], fill, 0)])
        out = train_population(k, g, data, space, config, split=False)
        outs.append({name: v[: chunk - fill] for name, v in out.items()})
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


def compression_evaluator(
    space: Any,
    data: Dataset,
    config: TrainConfig,
    *,
    train_space: Any | None = None,
    to_train: Any = None,
) -> Evaluator:
    """NSGA-II evaluator ``(key, population) -> ([valid acc, -bits/bits_dense], metrics)``.

    Args:
      space: the searched ``CompressedSpace`` (its genotypes are what the strategy asks).
      data: the dataset.
      config: the training recipe (``steps`` in all, ``space.float_steps`` of them float).
      train_space: the space whose network trains (default ``space``); with ``to_train``
        (``int32[P, D] -> int32[P, D']``) a fixed-architecture search can train through
        the joint space's compiled program.
    """
    train_space = space if train_space is None else train_space

    def evaluate(key: jax.Array, population: jax.Array) -> tuple[jax.Array, dict]:
        population = np.asarray(population)
        trained = population if to_train is None else to_train(population)
        out = train_population(key, trained, data, train_space, config)
        costs = population_costs(space, population, data.task, config)
        size = costs["bits_total"] / costs["bits_dense"]
        fitness = np.stack([out["valid_accuracy"], -size], 1)
        metrics = {
            "valid_accuracy": out["valid_accuracy"],
            "test_accuracy": out["test_accuracy"],
            **{k: costs[k] for k in COST_KEYS},
        }
        return jnp.asarray(fitness, jnp.float32), metrics

    return Evaluator(evaluate)
