"""One-shot weight sharing: a supernet trained by uniform single-path sampling, candidates
scored with inherited weights.

Single Path One-Shot (SPOS; Guo et al., "Single Path One-Shot Neural Architecture Search
with Uniform Sampling", ECCV 2020) and random search with weight sharing (RSPS; Li &
Talwalkar, "Random Search and Reproducibility for Neural Architecture Search", UAI 2019)
train one network holding every op of every edge, one uniformly sampled path per step, and
then rank candidates by their accuracy with the supernet's weights.

Here the supernet *is* the population trainer's network (``space.functional``, e.g.
:class:`~nasjax.spaces.nb201_functional.NB201Functional`): each edge is a ``lax.switch``
over the op table with every op's parameters present, so a training step on a sampled
genotype runs only the sampled ops, forward and backward.

* :func:`train_supernet` -- ``steps`` SGD steps, each on a path drawn by ``space.sample``
  (uniform over each decision), inside chunks of a compiled ``lax.scan`` (tqdm between
  chunks). Only the sampled path's parameters move: the optimiser's update and state are
  kept for the ops not sampled (:func:`path_mask`), as a PyTorch optimiser skips a
  parameter with no gradient, so weight decay and momentum do not drift idle ops. With
  ``devices``, each step trains one path per device, each on its own minibatch, in one
  update: every parameter's gradient is averaged over the paths that use it
  (:func:`mean_over_paths`, one all-reduce per step), so an op sampled by one path moves
  as in a single-path step and the shared layers see every path's batch. Still uniform
  single-path sampling per path; D devices train D paths per step. Measured on the 2-core
  CPU (C=16, N=1, MNIST-1D, batch 100 per path, compiled): 300 steps on one host device
  2.4 s (one path each), on both 3.0 s (two paths each), 1.6x the paths per second on an
  idle machine; with another job holding one core the two devices' per-step rendezvous
  loses the gain (~10 ms per path either way). An earlier variant split one path's
  minibatch over the devices instead: 6.6 s against 3.0 s.
* :func:`recalibrate` -- SPOS's BatchNorm recalibration: every BN's running statistics
  reset and recomputed for the candidate as the average over ``K`` training batches of the
  batch mean and (biased) variance (PyTorch's ``momentum=None`` cumulative average).
* :func:`score_population` -- recalibration and validation accuracy of P genotypes with the
  inherited weights in one compiled call (``lax.map`` over the members, as population
  training: each switch runs only the member's op; ``member_batch`` vmaps them).
* :func:`oneshot_evaluator` -- the scoring as an :class:`Evaluator` for
  :func:`nasjax.search.run_search` (fitness = inherited validation accuracy, maximised).

The path mask is for NB201's parameter layout (``edge_{e}`` / op name), whatever the
dataset's shape and the cells per stage.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from nasjax.data import Dataset, batch_indices
from nasjax.evaluation.training import Evaluator, accuracies
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201_forward import Layers, Params, State, forward
from nasjax.spaces.nb201_net import OPS
from nasjax.training_recipe import TrainConfig, make_optimizer


class Supernet(NamedTuple):
    """A trained supernet: ``net`` (the functional network), its parameters, the BN
    statistics of training (scoring recalibrates them per candidate) and the loss per step."""

    net: Any
    params: Params
    state: State
    loss_curve: np.ndarray


def path_mask(params: Params, genotype: jnp.ndarray) -> Any:
    """``params``' tree of boolean scalars: True for the shared layers and for the op
    ``genotype`` chooses on each cell edge, False for every other op."""

    def chosen(path: tuple, leaf: Any) -> jnp.ndarray:
        keys = [getattr(k, "key", None) for k in path]
        for i, name in enumerate(keys[:-1]):
            if isinstance(name, str) and name.startswith("edge_") and keys[i + 1] in OPS:
                return genotype[int(name[5:])] == OPS.index(keys[i + 1])
        return jnp.asarray(True)

    return jax.tree_util.tree_map_with_path(chosen, params)


def single_path_step(
    net: Any, tx: optax.GradientTransformation, carry: tuple, genotype: jnp.ndarray,
    xb: jnp.ndarray, yb: jnp.ndarray, axis_name: str | None = None,
) -> tuple[tuple, jnp.ndarray]:  # fmt: skip
    """One SGD step of the path ``genotype`` on ``(xb, yb)``: ``carry`` is ``(params, BN
    state, optimiser state)``; parameters and optimiser state of the ops not on the path
    are returned unchanged (bit for bit). Returns the new carry and the loss.

    With ``axis_name`` (inside ``shard_map``, or ``vmap`` with that axis name), each
    device holds its own path and its own minibatch, and the step trains all of them
    together (:func:`mean_over_paths`): each parameter's gradient, and each BN's running
    statistics, are averaged over the devices whose path uses it (the shared stem,
    reductions and classifier: over all devices, as data-parallel training; an op on one
    device's path: that device's gradient alone, as a single-path step); an op on any of
    the paths moves, the others stay bit for bit. The loss is averaged."""
    params, state, opt_state = carry

    def loss_fn(p: Params) -> tuple[jnp.ndarray, State]:
        logits, new_state = net.apply(p, state, xb, genotype, True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), new_state

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    mask = path_mask(params, genotype)
    keep = lambda m, new, old: jnp.where(m, new, old)
    if axis_name is not None:
        (grads, new_state), (mask, state_used), loss = mean_over_paths(
            (grads, new_state), (mask, path_mask(state, genotype)), loss, axis_name
        )
        new_state = jax.tree.map(keep, state_used, new_state, state)
    updates, new_opt = tx.update(grads, opt_state, params)
    params = jax.tree.map(keep, mask, optax.apply_updates(params, updates), params)
    opt_mask = optax.tree_utils.tree_map_params(
        tx, lambda _, m: m, opt_state, mask, transform_non_params=lambda _: jnp.asarray(True)
    )
    return (params, new_state, jax.tree.map(keep, opt_mask, new_opt, opt_state)), loss


def mean_over_paths(
    values: Any, masks: Any, loss: jnp.ndarray, axis_name: str
) -> tuple[Any, Any, jnp.ndarray]:
    """Each leaf of ``values`` averaged over the devices of ``axis_name`` whose boolean
    scalar in ``masks`` (a tree of the same structure, e.g. :func:`path_mask`) is True,
    zero where none is; the masks' union (True where any device's is); ``loss`` averaged
    over all devices. One all-reduce (every leaf, count and the loss flattened into one
    vector: XLA:CPU runs each collective as a rendezvous of the device threads)."""
    used = jax.tree.map(lambda m, v: jnp.where(m, v, jnp.zeros_like(v)), masks, values)
    counts = jax.tree.map(lambda m: m.astype(jnp.float32), masks)
    flat, unravel = ravel_pytree((used, counts, loss))
    total, counts, loss_sum = unravel(jax.lax.psum(flat, axis_name))
    mean = jax.tree.map(lambda t, c: t / jnp.maximum(c, 1.0), total, counts)
    devices = jax.lax.psum(1, axis_name)
    return mean, jax.tree.map(lambda c: c > 0, counts), loss_sum / devices


DATA_AXIS = "data"
"""Name of the mesh axis the supernet's minibatch is split over."""


@functools.partial(jax.jit, static_argnames=("net", "config", "mesh"))
def _train_chunk(
    carry: tuple, paths: jnp.ndarray, indices: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray,
    net: Any, config: TrainConfig, mesh: Mesh,
) -> tuple[tuple, jnp.ndarray]:  # fmt: skip
    tx = make_optimizer(config)

    def local(carry: tuple, paths: jnp.ndarray, indices: jnp.ndarray, x: Any, y: Any) -> tuple:
        def step(carry: tuple, batch: tuple) -> tuple[tuple, jnp.ndarray]:
            genotype, rows = batch  # this device's path and minibatch
            return single_path_step(net, tx, carry, genotype, x[rows], y[rows], DATA_AXIS)

        return jax.lax.scan(step, carry, (paths[:, 0], indices[:, 0]))

    rep, split = PartitionSpec(), PartitionSpec(None, DATA_AXIS)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(rep, split, split, rep, rep),
        out_specs=(rep, rep),
        check_vma=False,  # the all-reduced values are equal on every device
    )(carry, paths, indices, x, y)


@functools.partial(jax.jit, static_argnames=("net", "space", "config", "width", "num_train"))
def _start(
    key: jax.Array, net: Any, space: SearchSpace, config: TrainConfig, width: int,
    num_train: int,
) -> tuple[tuple, jnp.ndarray, jnp.ndarray]:  # fmt: skip
    """The initial carry, the paths ``[steps, width, D]`` and the minibatch indices
    ``[steps, width, batch]`` in one compiled program (eagerly, their ~70 small programs
    took ~2 s to compile or load on every run; this one is loaded from the persistent
    cache). Step t trains ``paths[t, d]`` on minibatch ``indices[t, d]`` on device d:
    consecutive minibatches of the epochs, a fresh path each."""
    key_init, key_data, key_paths = jax.random.split(key, 3)
    params, state = net.init(key_init)
    carry = (params, state, make_optimizer(config).init(params))
    rows = batch_indices(key_data, num_train, config.batch_size, config.steps * width)
    paths = space.sample(key_paths, config.steps * width)
    return (
        carry,
        paths.reshape(config.steps, width, -1),
        rows.reshape(config.steps, width, config.batch_size),
    )


def train_supernet(
    key: jax.Array,
    space: SearchSpace,
    data: Dataset,
    config: TrainConfig,
    *,
    chunk: int = 100,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
) -> Supernet:
    """Trains the supernet of ``space`` on ``data`` by uniform single-path sampling.

    Args:
      key: PRNG key (initialisation, minibatch order, the paths).
      space: a space with ``functional`` (NB201's parameter layout, see the module doc).
      data: the dataset.
      config: the recipe (``steps`` is the number of SGD steps, each training one path
        per device; the learning rate is cosine-decayed over them; ``batch_size`` is each
        path's minibatch; ``channels`` and ``cells_per_stage`` size the net).
      chunk: steps per compiled call (a remainder compiles one more program).
      progress: show a tqdm bar.
      devices: each trains its own path on its own minibatch every step, gradients
        averaged per parameter over the paths using it (:func:`single_path_step`);
        default: the first local device, one path per step. Same key, same number of
        devices: same result.

    Returns:
      The trained :class:`Supernet`.
    """
    net = space.functional(
        data.task, channels=config.channels, cells_per_stage=config.cells_per_stage
    )
    if devices is None:
        devices = jax.local_devices()[:1]
    mesh, width = Mesh(np.array(devices), (DATA_AXIS,)), len(devices)
    carry, paths, indices = _start(key, net, space, config, width, data.x_train.shape[0])
    paths, indices = np.asarray(paths), np.asarray(indices)  # sliced per chunk on the host
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    # The carry placed as the chunks return it: one compiled program for every chunk.
    carry = jax.device_put(carry, NamedSharding(mesh, PartitionSpec()))
    losses = []
    with tqdm(total=config.steps, desc="supernet", unit="step", disable=not progress) as bar:
        for start in range(0, config.steps, chunk):
            stop = min(start + chunk, config.steps)
            carry, loss = _train_chunk(
                carry, paths[start:stop], indices[start:stop], x, y, net, config, mesh
            )
            losses.append(np.asarray(loss))
            bar.set_postfix(loss=f"{float(losses[-1][-1]):.3f}")
            bar.update(stop - start)
    # Back on one device, as the scoring and retraining programs take their inputs.
    params, state, _ = jax.device_put(carry, devices[0])
    return Supernet(net, params, state, np.concatenate(losses))


class _BatchMoments(Layers):
    """The plain network in training mode whose BatchNorms return their batch mean and
    variance as the new statistics (no running average)."""

    def bn(self, y: jnp.ndarray, params: Params, stats: State) -> tuple[jnp.ndarray, State]:
        axes = tuple(range(y.ndim - 1))
        mean = jnp.mean(y, axes)
        var = jnp.maximum(jnp.mean(jnp.square(y), axes) - jnp.square(mean), 0.0)
        out, _ = super().bn(y, params, stats)
        return out, {"mean": mean, "var": var}


def recalibrate(net: Any, params: Params, genotype: jnp.ndarray, batches: jnp.ndarray) -> State:
    """BN statistics of ``genotype`` with the supernet's ``params``, as SPOS recalibrates
    them: the average over ``batches`` (``[K, B, ...]`` training inputs) of each BN's batch
    mean and biased variance (the network in training mode). BNs of ops the genotype does
    not choose get zeros (they are not used)."""
    shapes = jax.eval_shape(net.init, jax.random.key(0))[1]
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    layers = _BatchMoments(True)

    def add(total: State, xb: jnp.ndarray) -> tuple[State, None]:
        _, moments = forward(layers, params, zeros, xb, genotype, net.cells_per_stage)
        return jax.tree.map(jnp.add, total, moments), None

    total, _ = jax.lax.scan(add, zeros, batches)
    return jax.tree.map(lambda t: t / batches.shape[0], total)


def inherited_accuracy(
    net: Any, params: Params, genotype: jnp.ndarray, batches: jnp.ndarray,
    sets: list[tuple[jnp.ndarray, jnp.ndarray]], eval_batch_size: int = 500,
) -> list[jnp.ndarray]:  # fmt: skip
    """Accuracy on each ``(x, y)`` of ``sets`` of ``genotype`` with inherited weights and
    BN statistics recalibrated on ``batches`` (:func:`recalibrate`)."""
    state = recalibrate(net, params, genotype, batches)
    return accuracies(net.apply, (params, state), genotype, sets, eval_batch_size)


def calibration_batches(
    key: jax.Array, data: Dataset, num_batches: int, batch_size: int
) -> jnp.ndarray:
    """``[num_batches, batch_size, ...]`` training inputs for recalibration (drawn without
    replacement within an epoch; the same for every candidate)."""
    rows = batch_indices(key, data.x_train.shape[0], batch_size, num_batches)
    return jnp.asarray(data.x_train)[rows]


@functools.partial(jax.jit, static_argnames=("net", "member_batch", "eval_batch_size"))
def _score(
    params: Params, genotypes: jnp.ndarray, batches: jnp.ndarray, x: jnp.ndarray,
    y: jnp.ndarray, net: Any, member_batch: int, eval_batch_size: int,
) -> jnp.ndarray:  # fmt: skip
    def one(genotype: jnp.ndarray) -> jnp.ndarray:
        return inherited_accuracy(net, params, genotype, batches, [(x, y)], eval_batch_size)[0]

    # batch_size=1 would vmap a size-1 axis, turning each switch into a select.
    return jax.lax.map(one, genotypes, batch_size=None if member_batch == 1 else member_batch)


def score_population(
    supernet: Supernet,
    genotypes: Any,
    batches: jnp.ndarray,
    x: Any,
    y: Any,
    *,
    member_batch: int = 1,
    eval_batch_size: int = 500,
) -> np.ndarray:
    """Inherited accuracy on ``(x, y)`` of each of ``genotypes`` (``int32[P, D]``), every
    member's BN statistics recalibrated on ``batches``; one compiled call for P members.

    ``member_batch`` members are vmapped together inside the ``lax.map`` (1 = loop).
    """
    genotypes = jnp.asarray(np.asarray(genotypes, np.int32))
    out = _score(
        supernet.params, genotypes, batches, jnp.asarray(x), jnp.asarray(y),
        supernet.net, member_batch, eval_batch_size,
    )  # fmt: skip
    return np.asarray(out)


def oneshot_evaluator(
    supernet: Supernet, data: Dataset, batches: jnp.ndarray, *, member_batch: int = 1
) -> Evaluator:
    """Scores a population by inherited validation accuracy (recalibrated BN), the
    fitness (maximised) of a one-shot search; no training."""

    def evaluate(key: jax.Array, population: jnp.ndarray) -> tuple[np.ndarray, dict]:
        del key
        valid = score_population(
            supernet, population, batches, data.x_valid, data.y_valid, member_batch=member_batch
        )
        return valid, {"inherited_valid_accuracy": valid}

    return Evaluator(evaluate)
