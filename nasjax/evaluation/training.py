"""Training evaluator: train a population of different architectures in one compiled call.

Each member is the space's functional network (``space.functional``: every op has
parameters, the genotype is a traced ``int32`` array), so every edge runs only its chosen
op (``lax.switch``). The population axis is sharded over the devices of a 1D mesh
(``shard_map``; several processes after ``jax.distributed.initialize``). On each device,
members run under ``jax.lax.map`` with ``batch_size=member_batch``: ``1`` loops over
members inside the compiled program (the fastest on CPUs, where only the chosen branch
executes), larger values ``vmap`` members in chunks (wide accelerators, where the switch
becomes a select over all ops). The step loop is a ``lax.scan``; optimiser: SGD with
Nesterov momentum and a cosine schedule, or AdamW, from optax. Fitness is the validation
accuracy (a fraction, maximised).

Why this formulation (measured on a 2-core CPU, ``experiments/bench_population_training.py``
and the notes in the README): an NB201 member's chosen-op work is small GEMMs, so stacking
members into batched GEMMs (``vmap``) or computing every op (a masked supernet) multiplies
the work without making any GEMM larger; looping members with one host device per core
(``nasjax.devices.use_cpu_cores``) wins there.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nasjax.data import Dataset, batch_indices
from nasjax.spaces.base import SearchSpace
from nasjax.training_recipe import TrainConfig, make_optimizer


def accuracies(
    apply_fn: Any,
    variables: Any,
    arch: jnp.ndarray,
    sets: Sequence[tuple[jnp.ndarray, jnp.ndarray]],
    chunk: int,
) -> list[jnp.ndarray]:
    """Accuracy on each ``(x, y)`` set in inference mode, ``chunk`` examples at a time.

    All sets go through one ``lax.map`` (one compiled forward pass, not one per set).
    """
    chunk = min(chunk, max(x.shape[0] for x, _ in sets))
    xs, ys, spans = [], [], []
    for x, y in sets:
        num_chunks = -(-x.shape[0] // chunk)
        pad = num_chunks * chunk - x.shape[0]
        xs.append(jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)))
        ys.append(jnp.pad(y, (0, pad), constant_values=-1))  # padding never counts
        start = spans[-1][1] if spans else 0
        spans.append((start, start + num_chunks))
    x_all = jnp.concatenate(xs).reshape((-1, chunk) + sets[0][0].shape[1:])
    y_all = jnp.concatenate(ys).reshape(-1, chunk)

    def correct(batch: tuple[jnp.ndarray, jnp.ndarray]) -> jnp.ndarray:
        xb, yb = batch
        logits, _ = apply_fn(variables[0], variables[1], xb, arch, False)
        return jnp.sum(jnp.argmax(logits, -1) == yb)

    counts = jax.lax.map(correct, (x_all, y_all))
    return [jnp.sum(counts[a:b]) / x.shape[0] for (a, b), (x, _) in zip(spans, sets)]


class MemberState(NamedTuple):
    """One member's training state, the point a later call continues from: the network's
    parameters, its BatchNorm statistics and the optimiser state (whose step count drives
    the learning-rate schedule)."""

    params: Any
    batch_stats: Any
    opt_state: Any


def _network(space: SearchSpace, task: Any, config: TrainConfig) -> Any:
    return space.functional(task, channels=config.channels, cells_per_stage=config.cells_per_stage)


def _init_state(key: jax.Array, task: Any, space: SearchSpace, config: TrainConfig) -> Any:
    params, batch_stats = _network(space, task, config).init(jax.random.split(key)[0])
    return MemberState(params, batch_stats, make_optimizer(config).init(params))


def init_member(
    key: jax.Array, data: Dataset, space: SearchSpace, config: TrainConfig
) -> MemberState:
    """The state :func:`train_member` starts from with ``key`` (before its first step)."""
    return _init_state(key, data.task, space, config)


def member_state_bytes(space: SearchSpace, task: Any, config: TrainConfig) -> int:
    """Bytes of one member's :class:`MemberState` for ``task`` (traced, not computed)."""
    shapes = jax.eval_shape(lambda k: _init_state(k, task, space, config), jax.random.key(0))
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(shapes))


def train_member(
    key: jax.Array,
    genotype: jnp.ndarray,
    data: Dataset,
    space: SearchSpace,
    config: TrainConfig,
    keep_variables: bool = False,
    state: MemberState | None = None,
    window: jnp.ndarray | None = None,
) -> dict[str, Any]:
    """Trains one architecture; pure and traceable (used by the population).

    By default from scratch for ``config.steps`` steps. With ``window = [start, stop]``
    (traced ``int32``, so one compiled program serves every window) it runs only steps
    ``start .. stop - 1`` of that same run, from ``state`` (a :class:`MemberState`; default
    :func:`init_member`'s), and returns the state it reached: the minibatches and
    learning rates are those of a ``config.steps``-step run from ``key``, so training
    ``[0, k]`` and then ``[k, k + m]`` computes exactly what ``[0, k + m]`` does (the
    rungs of :mod:`nasjax.search.hyperband`).

    Args:
      key: PRNG key for initialisation and minibatch order.
      genotype: ``int32[D]``.
      data: the dataset (arrays may be traced).
      space: a space with ``functional(dataset, channels=..., cells_per_stage=...)``
        (the network as ``init(key)`` / ``apply(params, state, x, genotype, train)``).
      config: the training recipe (``steps``: the whole run's length).
      keep_variables: also return the trained ``params`` and ``batch_stats``.
      state: the state to continue from (with ``window``).
      window: ``int32[2]``, the steps to run (see above).

    Returns:
      ``valid_accuracy`` and ``test_accuracy`` (fractions) and ``loss_curve`` (per step);
      with ``window``, ``final_train_loss`` (of its last step) and ``state`` instead of
      ``loss_curve``.
    """
    net = _network(space, data.task, config)
    key_data = jax.random.split(key)[1]
    state = init_member(key, data, space, config) if state is None else state
    tx = make_optimizer(config)
    indices = batch_indices(key_data, data.x_train.shape[0], config.batch_size, config.steps)

    def loss_fn(params: Any, batch_stats: Any, xb: jnp.ndarray, yb: jnp.ndarray) -> Any:
        logits, batch_stats = net.apply(params, batch_stats, xb, genotype, True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss, batch_stats

    def step(carry: Any, batch: jnp.ndarray) -> Any:
        params, batch_stats, opt_state = carry
        xb, yb = data.x_train[batch], data.y_train[batch]
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, xb, yb
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return MemberState(optax.apply_updates(params, updates), batch_stats, opt_state), loss

    if window is None:
        state, losses = jax.lax.scan(step, state, indices)
        out: dict[str, Any] = {"loss_curve": losses}
    else:  # a traced trip count: a while loop, the same program for every window
        body = lambda t, carry: step(carry[0], indices[t])
        state, loss = jax.lax.fori_loop(window[0], window[1], body, (state, jnp.float32(0)))
        out = {"final_train_loss": loss, "state": state}
    sets = [(data.x_valid, data.y_valid), (data.x_test, data.y_test)]
    valid, test = accuracies(net.apply, state[:2], genotype, sets, config.eval_batch_size)
    out.update(valid_accuracy=valid, test_accuracy=test)
    if keep_variables:
        out.update(params=state.params, batch_stats=state.batch_stats)
    return out


POPULATION_AXIS = "population"
"""Name of the mesh axis the population is sharded over."""


def population_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1D mesh over ``devices`` (default: every device of every process) for the population."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (POPULATION_AXIS,))


@functools.partial(
    jax.jit, static_argnames=("space", "config", "name", "num_classes", "mesh", "keep")
)
def _train_population(
    key_data: jnp.ndarray,
    genotypes: jnp.ndarray,
    arrays: tuple[jnp.ndarray, ...],
    states: MemberState | None,
    window: jnp.ndarray | None,
    space: SearchSpace,
    config: TrainConfig,
    name: str,
    num_classes: int,
    mesh: Mesh,
    keep: bool = False,
) -> dict[str, jnp.ndarray]:
    def local(key_data: jnp.ndarray, genotypes: jnp.ndarray, arrays: tuple, states: Any) -> dict:
        """This device's share of the population, trained member after member."""
        data = Dataset(*arrays, num_classes=num_classes, name=name)

        def one(member: tuple) -> dict[str, Any]:
            key = jax.random.wrap_key_data(member[0])
            return train_member(key, member[1], data, space, config, keep, member[2], window)

        # batch_size=1 would vmap a size-1 axis, turning each switch into a select.
        batch_size = None if config.member_batch == 1 else config.member_batch
        out = jax.lax.map(one, (key_data, genotypes, states), batch_size=batch_size)
        # Every device (and process) gets the whole population's results.
        return jax.lax.all_gather(out, POPULATION_AXIS, tiled=True)

    sharded, replicated = PartitionSpec(POPULATION_AXIS), PartitionSpec()
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(sharded, sharded, replicated, sharded),
        out_specs=replicated,
        # A switch branch that keeps its BN statistics returns the constant initial ones
        # (the same on every device) where the chosen op's branch returns per-device ones:
        # equal types to XLA, different to shard_map's varying-axes check.
        check_vma=False,
    )(key_data, genotypes, arrays, states)


def _global_array(value: Any, mesh: Mesh, spec: PartitionSpec) -> jax.Array:
    """``value`` (the same on every process) as an array laid out as ``spec`` on ``mesh``."""
    value = np.asarray(value)
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _default_mesh(size: int) -> Mesh:
    devices = jax.devices()
    if size < len(devices) and jax.process_count() == 1:
        devices = devices[:size]  # fewer members than devices: no padded copies
    return population_mesh(devices)


def _program_args(
    key: jax.Array,
    genotypes: Any,
    data: Dataset,
    space: SearchSpace,
    config: TrainConfig,
    split: bool,
    mesh: Mesh | None,
    states: MemberState | None = None,
    window: Any = None,
) -> tuple[tuple, int]:
    """The arguments of ``_train_population``, padded and laid out on the mesh; and P."""
    genotypes = np.asarray(genotypes, np.int32)
    size = genotypes.shape[0]
    mesh = _default_mesh(size) if mesh is None else mesh
    keys = jax.random.split(key, size) if split else key
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    key_data = np.asarray(jax.random.key_data(keys) if typed else keys)
    padded = -(-size // mesh.size) * mesh.size
    if padded != size:
        fill = padded - size
        genotypes = np.concatenate([genotypes, np.repeat(genotypes[:1], fill, 0)])
        key_data = np.concatenate([key_data, np.repeat(key_data[:1], fill, 0)])
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], fill, 0)])
        states = jax.tree.map(lambda a: pad(np.asarray(a)), states)
    sharded, replicated = PartitionSpec(POPULATION_AXIS), PartitionSpec()
    window = None if window is None else _global_array(np.int32(window), mesh, replicated)
    args = (
        _global_array(key_data, mesh, sharded),
        _global_array(genotypes, mesh, sharded),
        tuple(_global_array(a, mesh, replicated) for a in data[:6]),
        jax.tree.map(lambda a: _global_array(a, mesh, sharded), states),
        window,
        space,
        config,
        data.name,
        data.num_classes,
        mesh,
    )
    return args, size


def train_population(
    key: jax.Array,
    genotypes: jnp.ndarray,
    data: Dataset,
    space: SearchSpace,
    config: TrainConfig,
    *,
    split: bool = True,
    mesh: Mesh | None = None,
    keep_variables: bool = False,
    states: MemberState | None = None,
    window: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Trains P different architectures in one compiled call, sharded over devices.

    The population axis is split over the devices of ``mesh`` (default: all devices of
    all processes, with ``jax.distributed.initialize`` that spans hosts; in one process,
    only the first P devices when there are fewer members than devices). P is padded to
    a multiple of the device count with copies of the first member, whose results are
    dropped. Member ``i`` uses ``jax.random.split(key, P)[i]`` (or ``key[i]`` when
    ``split`` is False and ``key`` holds P keys), so it computes what that key and
    genotype would alone, on any number of devices. Every process must call this with
    the same arguments.

    Args:
      key: PRNG key.
      genotypes: ``int32[P, D]``.
      data: the dataset.
      space: the search space (static).
      config: the training recipe (static).
      split: split ``key`` into P member keys (else ``key`` is already ``[P]`` keys).
      mesh: a 1D mesh with axis ``"population"`` (see :func:`population_mesh`).
      keep_variables: also return the trained ``params`` and ``batch_stats`` of every
        member (pytrees of ``[P, ...]`` arrays; another compiled program).
      states: the members' :class:`MemberState` stacked on a leading ``[P]`` axis, to
        continue from (with ``window``; default :func:`init_population`'s).
      window: ``[start, stop]``: run only these steps of each member's ``config.steps``
        run and return the states reached (:func:`train_member`); one compiled program
        serves every window.

    Returns:
      Dict of ``valid_accuracy[P]``, ``test_accuracy[P]``, ``loss_curve[P, steps]``;
      with ``window``, ``final_train_loss[P]`` and ``state`` (``[P]``-stacked) instead of
      ``loss_curve``.
    """
    args, size = _program_args(key, genotypes, data, space, config, split, mesh, states, window)
    return _host(_train_population(*args, keep=keep_variables), size)


def _host(out: dict[str, Any], size: int) -> dict[str, Any]:
    """The program's outputs as NumPy arrays, without the padded members."""
    return jax.tree.map(lambda v: np.asarray(v)[:size], out)


@functools.partial(jax.jit, static_argnames=("space", "config", "name", "num_classes"))
def _init_population(
    key_data: jnp.ndarray,
    arrays: tuple,
    space: SearchSpace,
    config: TrainConfig,
    name: str,
    num_classes: int,
) -> MemberState:
    data = Dataset(*arrays, num_classes=num_classes, name=name)
    init = lambda k: init_member(jax.random.wrap_key_data(k), data, space, config)
    return jax.lax.map(init, key_data)


def init_population(
    key: jax.Array,
    size: int,
    data: Dataset,
    space: SearchSpace,
    config: TrainConfig,
    *,
    split: bool = True,
) -> MemberState:
    """The initial :class:`MemberState` of ``size`` members (``[size]``-stacked NumPy
    arrays): member ``i``'s is what :func:`train_population` starts it from with the same
    ``key`` (and ``split``). A small program of its own (no training step in it)."""
    keys = jax.random.split(key, size) if split else key
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    key_data = np.asarray(jax.random.key_data(keys) if typed else keys)
    out = _init_population(key_data, tuple(data[:6]), space, config, data.name, data.num_classes)
    return jax.tree.map(np.asarray, out)


class PopulationProgram(NamedTuple):
    """A population trainer compiled ahead of time, with its compile time and memory.

    ``run(key, genotypes)`` trains a population of the size it was compiled for, as
    :func:`train_population` does, without compiling again.
    """

    compiled: Any
    size: int
    data: Dataset
    space: SearchSpace
    config: TrainConfig
    mesh: Mesh | None
    compile_s: float
    memory_mb: dict[str, float]

    def run(
        self,
        key: jax.Array,
        genotypes: Any,
        *,
        split: bool = True,
        states: MemberState | None = None,
        window: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Trains ``genotypes`` (``int32[size, D]``) from ``key`` (or ``size`` keys); a
        program compiled with ``states`` and ``window`` takes them (any window)."""
        args, size = _program_args(
            key, genotypes, self.data, self.space, self.config, split, self.mesh, states, window
        )
        if size != self.size:
            raise ValueError(f"this program trains {self.size} members, got {size}")
        return _host(self.compiled(*args[:5]), size)


def compile_population(
    genotypes: Any,
    data: Dataset,
    space: SearchSpace,
    config: TrainConfig,
    *,
    mesh: Mesh | None = None,
    states: MemberState | None = None,
    window: Sequence[int] | None = None,
) -> PopulationProgram:
    """Traces and compiles the population trainer for ``genotypes``' population size
    (with ``states`` and ``window``: the program that continues them, for any window).

    ``memory_mb`` is XLA's memory analysis of the compiled program on one device:
    ``temp`` (activations, optimiser state and other scratch), ``argument``, ``output``,
    their sum ``peak``, and ``per_member`` = peak divided by the members on that device.
    """
    start = time.perf_counter()
    key = jax.random.key(0)
    args, size = _program_args(key, genotypes, data, space, config, True, mesh, states, window)
    compiled = _train_population.lower(*args).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    mb = 1024.0**2
    memory = {
        "temp": stats.temp_size_in_bytes / mb,
        "argument": stats.argument_size_in_bytes / mb,
        "output": stats.output_size_in_bytes / mb,
    }
    memory["peak"] = memory["temp"] + memory["argument"] + memory["output"]
    members_per_device = args[0].shape[0] // args[-1].size
    memory["per_member"] = memory["peak"] / members_per_device
    return PopulationProgram(compiled, size, data, space, config, mesh, compile_s, memory)


class Evaluator(NamedTuple):
    """``evaluate(key, population) -> (fitness[P], metrics)``; fitness is maximised."""

    evaluate: Any


def training_evaluator(space: SearchSpace, data: Dataset, config: TrainConfig) -> Evaluator:
    """Scores a population by training each member; fitness = validation accuracy."""

    def evaluate(key: jax.Array, population: jnp.ndarray) -> tuple[jnp.ndarray, dict]:
        out = train_population(key, population, data, space, config)
        metrics = {
            "valid_accuracy": out["valid_accuracy"],
            "test_accuracy": out["test_accuracy"],
            "final_train_loss": out["loss_curve"][:, -1],
        }
        return out["valid_accuracy"], metrics

    return Evaluator(evaluate)
