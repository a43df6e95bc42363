"""The gradient-search loop: epochs of alternating steps, logs, checkpoints and resume.

Splits the training set in two halves, as DARTS does: one trains the network weights, the
other the architecture logits. Each epoch is one compiled call
(:func:`nasjax.relaxation.methods.search_epoch`); after it the loop derives the genotype
(``discretize``), the mean entropy of the op distributions and the number of parameter-free
ops chosen, appends one JSON line to ``search.jsonl`` and checkpoints the search state with
orbax, so a resumed run continues exactly where it stopped with the same result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nasjax.data import Dataset, batch_indices
from nasjax.errors import NasjaxError
from nasjax.nets.relaxed import RelaxedNetwork
from nasjax.relaxation.methods import (
    MethodConfig,
    SearchState,
    init_state,
    search_epoch,
    temperature,
)
from nasjax.rundir import RunDir
from nasjax.spaces.base import SearchSpace
from nasjax.tracking import Callback, notify_end, notify_records

LOG_FILE = "search.jsonl"
PARAMETER_FREE_OPS = frozenset({"none", "skip_connect", "avg_pool_3x3", "max_pool_3x3"})
"""Ops without weights in the NB201 and DARTS spaces (the ones DARTS collapses toward)."""


class GradientSearchResult(NamedTuple):
    """What a gradient search found, and its per-epoch log."""

    genotype: np.ndarray
    arch: str
    history: list[dict]
    state: SearchState
    search_s: float


def split_halves(data: Dataset) -> tuple[jnp.ndarray, ...]:
    """``(x_w, y_w, x_a, y_a)``: the training set's first half for the weights, the second
    for the architecture (DARTS: half of the CIFAR-10 training set each)."""
    half = data.x_train.shape[0] // 2
    if half < 1:
        raise NasjaxError(f"{data.name} has {data.x_train.shape[0]} training examples; need 2+")
    return tuple(
        jnp.asarray(a)
        for a in (
            data.x_train[:half],
            data.y_train[:half],
            data.x_train[half : 2 * half],
            data.y_train[half : 2 * half],
        )
    )


def op_entropy(alpha: np.ndarray) -> float:
    """Mean entropy (nats) of the per-edge op distributions ``softmax(alpha)``; ``log K``
    at the uniform start, 0 when every edge is certain."""
    p = np.asarray(jax.nn.softmax(jnp.asarray(alpha, jnp.float32), axis=-1))
    return float(np.mean(-np.sum(p * np.log(np.maximum(p, 1e-30)), axis=-1)))


def num_parameter_free(space: SearchSpace, genotype: np.ndarray) -> int:
    """How many of the genotype's chosen ops have no weights (skip, pooling, none)."""
    return sum(op in PARAMETER_FREE_OPS for op in space.chosen_ops(genotype))


def _rounded(values: Any) -> list:
    return np.round(np.asarray(values, np.float64), 5).tolist()


def _epoch_record(
    space: SearchSpace,
    net: RelaxedNetwork,
    config: MethodConfig,
    state: SearchState,
    epoch: int,
    metrics: dict,
    wall_s: float,
) -> dict[str, Any]:
    alpha, beta = np.asarray(state.alpha), np.asarray(state.beta)
    genotype = net.discretize(alpha, beta if config.method == "pcdarts" else None)
    record = {
        "epoch": epoch,
        "arch": space.to_string(genotype),
        "genotype": [int(v) for v in genotype],
        "alpha_entropy": op_entropy(alpha),
        "num_parameter_free": num_parameter_free(space, genotype),
        "op_weights": _rounded(jax.nn.softmax(state.alpha, axis=-1)),
        "wall_s": round(wall_s, 3),
    }
    if config.method == "pcdarts":
        record["beta"] = _rounded(beta)
    if config.method == "gdas":
        record["tau"] = float(temperature(config, state.step))
    record.update({k: float(np.mean(v)) for k, v in metrics.items()})
    return record


def _run_epoch(
    space: SearchSpace,
    net: RelaxedNetwork,
    config: MethodConfig,
    state: SearchState,
    halves: tuple[jnp.ndarray, ...],
    batch_size: int,
    key: jax.Array,
    epoch: int,
    t0: float,
) -> tuple[SearchState, dict[str, Any]]:
    """Epoch ``epoch`` (from 0) of the search keyed by ``key``: the state and log record."""
    key_epoch, key_w, key_a = jax.random.split(jax.random.fold_in(key, epoch), 3)
    n = halves[0].shape[0]
    steps = n // batch_size
    indices = (
        batch_indices(key_w, n, batch_size, steps),
        batch_indices(key_a, n, batch_size, steps),
    )
    state, metrics = search_epoch(net, config, state, key_epoch, halves, indices)
    return state, _epoch_record(space, net, config, state, epoch + 1, metrics, time.time() - t0)


def gradient_search(
    key: jax.Array,
    space: SearchSpace,
    net: RelaxedNetwork,
    config: MethodConfig,
    data: Dataset,
    epochs: int,
    batch_size: int,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    run_config: dict | None = None,
    callbacks: Sequence[Callback] = (),
) -> GradientSearchResult:
    """Runs ``epochs`` epochs of ``config.method`` over ``net`` and derives a genotype.

    Args:
      key: PRNG key of the whole search (initialisation, minibatches, Gumbel samples).
      space: the space whose genotypes ``net.discretize`` returns (for arch strings).
      net: the space's relaxed network in the method's mixed-op mode.
      config: the method's settings (``total_steps`` must be ``epochs * steps/epoch``).
      data: the dataset; its training split is halved between weights and architecture.
      epochs: search epochs.
      batch_size: examples per step in each half.
      out_dir: the run folder (:class:`nasjax.rundir.RunDir`: ``search.jsonl``,
        ``checkpoints/``, ``run_config.json``); ``None`` keeps nothing.
      resume: continue from the last checkpoint in ``out_dir`` (the history is re-read
        from its log); refused if ``run_config`` differs from the run's.
      progress: show a tqdm bar.
      run_config: every setting that changes the results (e.g. the script's flags),
        stored with the first checkpoint and compared on ``resume``; ``None``: unchecked.
      callbacks: :class:`nasjax.tracking.Callback` s, told each epoch's record (step: the
        epoch, from 1) and, at the end, the search's wall time.

    Returns:
      The final genotype and arch string, the per-epoch log, the state and the wall time.
    """
    halves = split_halves(data)
    steps = halves[0].shape[0] // batch_size
    if steps < 1 or epochs < 1:
        raise NasjaxError(
            f"batch_size={batch_size} and epochs={epochs}: need epochs >= 1 and batch_size "
            f"<= {halves[0].shape[0]} (half of {data.name}'s training set)"
        )
    if config.total_steps != epochs * steps:
        raise NasjaxError(
            f"config.total_steps={config.total_steps} but the search runs {epochs} x {steps} "
            "steps; build the config with method_config(method, epochs * steps)"
        )
    key_init, key_loop = jax.random.split(key)
    state = init_state(key_init, net, config)
    with RunDir.open(out_dir, run_config, resume=resume, log_name=LOG_FILE, unit="epoch") as run:
        start, state = run.restore(state)
        history = run.read_log()
        t0 = time.time() - (history[-1]["wall_s"] if history else 0.0)
        with tqdm(
            total=epochs, initial=start, desc=config.method, unit="epoch", disable=not progress
        ) as bar:
            for epoch in range(start, epochs):
                state, record = _run_epoch(
                    space, net, config, state, halves, batch_size, key_loop, epoch, t0
                )
                history.append(record)
                run.append([record])
                notify_records(callbacks, [record], epoch + 1)
                run.save(epoch + 1, state)
                bar.set_postfix(
                    entropy=f"{record['alpha_entropy']:.3f}", free=record["num_parameter_free"]
                )
                bar.update(1)
    genotype = np.asarray(history[-1]["genotype"], np.int32)
    notify_end(callbacks, {"search_s": history[-1]["wall_s"]})
    return GradientSearchResult(
        genotype=genotype,
        arch=history[-1]["arch"],
        history=history,
        state=state,
        search_s=history[-1]["wall_s"],
    )
