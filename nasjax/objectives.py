"""Efficiency metrics of a decoded network: parameters, MACs, FLOPs, latency and memory.

Counting conventions (those of NAS-Bench-201, Dong & Yang, ICLR 2020, whose tables come
from the profiler ``get_model_infos`` of its ``xautodl`` code):

* ``params`` counts every trainable scalar (BatchNorm scale and bias included, running
  statistics not); the benchmark reports it / 1e6 ("MB").
* ``macs`` counts the multiply-accumulates of one example's forward pass through the
  network's matrix products, found by tracing the network abstractly (no FLOPs are spent)
  and reading the shapes of every ``dot_general`` (our convolutions are im2col products;
  dense layers) and ``conv_general_dilated`` (``flax.linen.Conv``) in its jaxpr: per output
  element, ``kernel_size_product * in_channels / groups``.
* ``flops`` is the profiler's FLOP count: the MACs of every convolution and dense layer plus,
  for the layers that have a bias, one addition per output element (``out_channels`` per
  output position). A "layer with a bias" is a Flax module whose own parameters hold both a
  ``kernel`` and a ``bias`` (``nn.Dense``, ``nn.Conv`` and kin; BatchNorm has no kernel).
  Pooling, BatchNorm, activations and additions are not counted: the profiler records
  pooling FLOPs but never sums them. The benchmark reports this number / 1e6 ("M FLOPs").
  In the NB201 network only the classifier has a bias, so FLOPs = MACs + ``num_classes``.

``nb201_cost_table`` gives any of the three counts for all 15,625 NB201 cells at once: each
count is exactly additive over the cell's edges, so it is the all-``none`` network's count
plus, per edge, the extra count of its op, found once by counting one-edge probe networks.

``measure_latency_ms`` and ``peak_memory_mb`` measure the compiled inference program on the
current default device (wall-clock median, and XLA's ``memory_analysis``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxprs_in_params

from nasjax.errors import NasjaxError, check_choice
from nasjax.tasks import get_task

COST_METRICS: tuple[str, ...] = ("params", "macs", "flops")
"""The counts of ``network_cost`` and ``nb201_cost_table``."""


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


def init_abstract(module: nn.Module, input_shape: tuple[int, ...], *args: Any) -> Any:
    """The variables of ``module`` as shapes only (``jax.eval_shape``), for one example."""
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), x, *args))


def _matmul_macs(eqn: Any) -> int:
    """MACs of one ``dot_general`` or ``conv_general_dilated`` equation."""
    out = eqn.outvars[0].aval.shape
    if eqn.primitive.name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return math.prod(out) * math.prod(lhs[d] for d in contract)
    # conv: each output element sums kernel window x (in_channels / groups) products.
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return math.prod(out) * (math.prod(rhs) // out_features)


def _dot_macs(jaxpr: Any) -> int:
    """MACs of every matrix product in ``jaxpr``; a ``scan`` body counts ``length`` times,
    a ``cond``/``switch`` its most expensive branch (an upper bound)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            total += _matmul_macs(eqn)
        elif name == "while":
            raise ValueError("cannot count MACs through a while loop of unknown length")
        else:
            subs = [_dot_macs(sub) for sub in jaxprs_in_params(eqn.params)]
            if name == "cond":
                total += max(subs, default=0)
            else:
                total += sum(subs) * (eqn.params["length"] if name == "scan" else 1)
    return total


def _has_bias(module: nn.Module, method: str) -> bool:
    """Capture filter: ``__call__`` of a layer whose own parameters are a kernel and a bias."""
    return (
        method == "__call__"
        and module.has_variable("params", "kernel")
        and module.has_variable("params", "bias")
    )


def _trace_costs(
    module: nn.Module, variables: Any, input_shape: tuple[int, ...]
) -> tuple[int, int]:
    """(MACs, bias additions) of one example, from one abstract trace of the forward pass."""
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)

    def forward(v: Any, x: jax.Array) -> Any:
        return module.apply(v, x, capture_intermediates=_has_bias, mutable=["intermediates"])

    closed, (_, state) = jax.make_jaxpr(forward, return_shape=True)(variables, x)
    outputs = jax.tree_util.tree_leaves(state.get("intermediates", {}))
    return _dot_macs(closed.jaxpr), int(sum(math.prod(o.shape) for o in outputs))


def count_macs(module: nn.Module, variables: Any, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one example's inference forward pass.

    Args:
      module: a decoded network, called as ``module.apply(variables, x)``.
      variables: its variables (arrays or ``ShapeDtypeStruct``s).
      input_shape: shape of one example, channels last.
    """
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, x)
    return _dot_macs(closed.jaxpr)


def count_flops(module: nn.Module, variables: Any, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one example under NAS-Bench-201's profiler convention (module docstring).

    ``kernel_size_product * in_channels * out_channels / groups`` per output position of
    every convolution and dense layer, plus ``out_channels`` per output position of those
    with a bias; pooling, BatchNorm, activations and additions count zero.

    Args:
      module: a decoded network, called as ``module.apply(variables, x)``.
      variables: its variables (arrays or ``ShapeDtypeStruct``s).
      input_shape: shape of one example, channels last.
    """
    macs, bias_adds = _trace_costs(module, variables, input_shape)
    return macs + bias_adds


def network_cost(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"params", "macs", "flops"}`` of a decoded network for one example."""
    variables = init_abstract(module, input_shape)
    macs, bias_adds = _trace_costs(module, variables, input_shape)
    return {
        "params": count_params(variables["params"]),
        "macs": macs,
        "flops": macs + bias_adds,
    }


# ---------------------------------------------------------------- NAS-Bench-201 table


def check_positive(**values: int) -> None:
    """Raises ``NasjaxError`` naming the first of ``values`` that is not an integer >= 1."""
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise NasjaxError(f"{name} must be an integer >= 1, got {value!r}")


@functools.cache
def _nb201_probe(
    dataset: str, channels: int, cells_per_stage: int, genotype: tuple[int, ...]
) -> np.ndarray:
    """``int64[3]``: params, MACs, FLOPs of one decoded NB201 network."""
    from nasjax.spaces.nb201 import NB201Space  # spaces sit above objectives

    net = NB201Space().decode(genotype, dataset, channels=channels, cells_per_stage=cells_per_stage)
    cost = network_cost(net, get_task(dataset).input_shape)
    counts = np.array([cost[m] for m in COST_METRICS], np.int64)
    counts.flags.writeable = False
    return counts


@functools.cache
def _nb201_op_costs(dataset: str, channels: int) -> np.ndarray:
    """``int64[3, 5]``: extra params, MACs, FLOPs of op ``o`` on one edge of one cell per stage.

    Probed with one-cell-per-stage networks: the all-``none`` cell, then each op alone on
    edge 0. Every edge of an NB201 cell maps the cell's input shape to itself (nodes keep
    the shape; node sums are additions, which are not counted), so an op costs the same on
    all six edges; and every cell of a stage sees the same shape, so with ``N`` cells per
    stage an edge's op costs ``N`` times this.
    """
    base = _nb201_probe(dataset, channels, 1, (0,) * 6)
    costs = np.zeros((len(COST_METRICS), 5), np.int64)
    for op in range(1, 5):
        costs[:, op] = _nb201_probe(dataset, channels, 1, (op,) + (0,) * 5) - base
    return costs


@functools.cache
def _nb201_table(metric: str, dataset: str, channels: int, cells_per_stage: int) -> np.ndarray:
    from nasjax.spaces.nb201 import NB201Space

    m = COST_METRICS.index(metric)
    base = _nb201_probe(dataset, channels, cells_per_stage, (0,) * 6)[m]
    per_op = cells_per_stage * _nb201_op_costs(dataset, channels)[m]
    genotypes = np.asarray(NB201Space().from_index(np.arange(15_625)))
    table = base + per_op[genotypes].sum(axis=-1)
    table.flags.writeable = False
    return table


def nb201_cost_table(
    metric: str, dataset: str, channels: int = 16, cells_per_stage: int = 5
) -> np.ndarray:
    """Params, MACs or FLOPs of every NAS-Bench-201 cell, exact and vectorised.

    Each count is exactly additive over the six edges: the all-``none`` network's count plus,
    for every edge, ``cells_per_stage`` times the extra count of its op in one cell of each
    stage (``none``, ``skip_connect`` and ``avg_pool_3x3`` add zero under these conventions;
    the convolutions add their kernels and products). The per-op costs come from five
    probe networks counted once per ``(dataset, channels)`` (the all-``none`` cell and each
    op alone on one edge; every edge of a cell has the same shape); tables are cached.

    Args:
      metric: one of ``"params"``, ``"macs"``, ``"flops"`` (conventions in the module doc).
      dataset: a name of ``nasjax.tasks.TASKS``.
      channels: ``C`` of the first stage (16 in the benchmark).
      cells_per_stage: ``N`` (5 in the benchmark).

    Returns:
      Read-only ``int64[15625]``; row ``i`` is the cell ``NB201Space().from_index(i)``.
    """
    check_choice("metric", metric, COST_METRICS)
    get_task(dataset)
    check_positive(channels=channels, cells_per_stage=cells_per_stage)
    return _nb201_table(metric, dataset, int(channels), int(cells_per_stage))


def nb201_edge_costs(
    metric: str, dataset: str, channels: int = 16, cells_per_stage: int = 5
) -> np.ndarray:
    """``float64[6, 5]``: what op ``o`` on edge ``e`` adds to an NB201 network's count.

    The additive decomposition behind :func:`nb201_cost_table` (every edge of every cell
    costs the same per op), as the per-edge, per-op cost matrix a relaxed cell needs for
    :func:`expected_cost`. For latency, :meth:`nasjax.latency.LatencyTable.edge_ms` is the
    same matrix measured on a device.
    """
    check_choice("metric", metric, COST_METRICS)
    get_task(dataset)
    check_positive(channels=channels, cells_per_stage=cells_per_stage)
    per_op = cells_per_stage * _nb201_op_costs(dataset, int(channels))[COST_METRICS.index(metric)]
    return np.tile(per_op.astype(np.float64), (6, 1))


def expected_cost(logits: jax.Array, edge_costs: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Differentiable cost of a relaxed cell: ``sum_e sum_o softmax(logits_e / T)_o * c[e, o]``.

    The expected cost under the DARTS-style mixture (Liu et al., ICLR 2019) used as a
    resource term in the architecture loss, as FBNet (Wu et al., CVPR 2019) and ProxylessNAS
    (Cai et al., ICLR 2019) do with latency: ``loss = task_loss + lambda * expected_cost``.
    Its gradient moves probability toward cheaper ops on every edge. The gradient methods
    of :mod:`nasjax.relaxation` search for accuracy alone; this is the term a
    resource-aware variant adds to their architecture loss.

    Args:
      logits: ``float[E, K]`` architecture parameters (one row per edge).
      edge_costs: ``float[E, K]`` cost of each op on each edge (e.g.
        :func:`nb201_edge_costs`, or a latency table's ``edge_ms()``); normalise it so
        ``lambda`` has a sensible scale.
      temperature: softmax temperature ``T > 0``.

    Raises:
      NasjaxError: for mismatched shapes or a non-positive temperature.
    """
    if jnp.shape(logits) != jnp.shape(edge_costs) or jnp.ndim(logits) != 2:
        raise NasjaxError(
            f"logits and edge_costs must both be [edges, ops]; got {jnp.shape(logits)} "
            f"and {jnp.shape(edge_costs)}"
        )
    if not temperature > 0:
        raise NasjaxError(f"temperature must be > 0, got {temperature}")
    weights = jax.nn.softmax(jnp.asarray(logits) / temperature, axis=-1)
    return jnp.sum(weights * jnp.asarray(edge_costs, weights.dtype))


# ---------------------------------------------------------------- measured on a device


def device_name() -> str:
    """``platform:device_kind`` of the current default device, e.g. ``gpu:NVIDIA H200``."""
    device = jax.config.jax_default_device
    if not isinstance(device, jax.Device):
        device = jax.devices(device)[0] if device else jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def benchmark_variables(module: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> Any:
    """Concrete stand-in variables for timing ``module``, made on the host.

    Shapes come from an abstract ``init``; values are drawn with numpy instead of running
    the initialisers (compiling the RNG of every kernel costs far more than the network):
    kernels ``N(0, 1/fan_in)``, BatchNorm scales and running variances one, biases and
    running means zero. Values have realistic magnitudes (no denormals), which is all that
    latency depends on.
    """
    rng = np.random.default_rng(seed)

    def fill(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> jax.Array:
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            value = np.ones(leaf.shape)
        elif name in ("bias", "mean"):
            value = np.zeros(leaf.shape)
        else:
            fan_in = math.prod(leaf.shape[:-1]) or 1
            value = rng.standard_normal(leaf.shape) / math.sqrt(fan_in)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, init_abstract(module, input_shape))


def _apply(module: nn.Module, variables: Any, x: jax.Array) -> Any:
    return module.apply(variables, x)


_apply_jit = jax.jit(_apply, static_argnums=0)  # one compile per (module, shapes)


def _inference(module: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> Any:
    """The jitted inference program of ``module`` (``fn(variables, x)``) and its input shape.

    A hashable module (any decoded network) is a static argument of one shared ``jit``, so
    ``measure_latency_ms`` and ``peak_memory_mb`` of the same network compile it once.
    """
    check_positive(batch_size=batch_size)
    shape = (batch_size,) + tuple(input_shape)
    try:
        hash(module)
    except TypeError:
        return jax.jit(functools.partial(_apply, module)), shape
    return _Bound(module), shape


class _Bound:
    """``_apply_jit`` with its static module bound; callable and lowerable like a jit."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, variables: Any, x: Any) -> Any:
        return _apply_jit(self.module, variables, x)

    def lower(self, variables: Any, x: Any) -> Any:
        return _apply_jit.lower(self.module, variables, x)


def measure_latency_ms(
    module: nn.Module,
    variables: Any,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 20,
) -> float:
    """Median wall time of the compiled inference forward pass, in milliseconds.

    The program is jitted, run ``warmup`` times (at least once: compilation is never
    timed), then timed
    ``repeats`` times on the current default device, each call waited for with
    ``block_until_ready``; inputs are a fixed standard-normal batch.

    Args:
      module: called as ``module.apply(variables, x)``.
      variables: concrete arrays (e.g. ``benchmark_variables``).
      input_shape: one example, channels last.
      batch_size: examples per call.
      warmup: untimed calls first.
      repeats: timed calls; the median is returned.
    """
    check_positive(repeats=repeats)
    if warmup < 0:
        raise NasjaxError(f"warmup must be >= 0, got {warmup!r}")
    if any(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree_util.tree_leaves(variables)):
        raise NasjaxError("measure_latency_ms needs concrete variables; see benchmark_variables")
    fn, shape = _inference(module, input_shape, batch_size)
    variables = jax.device_put(variables)
    x = jax.device_put(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    for _ in range(max(warmup, 1)):  # at least one call, so compilation is never timed
        jax.block_until_ready(fn(variables, x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(variables, x))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def peak_memory_mb(
    module: nn.Module, variables: Any, input_shape: tuple[int, ...], batch_size: int = 1
) -> float:
    """Device memory of the compiled inference program, in MiB.

    XLA's ``memory_analysis()`` of the program: temporaries + arguments (variables and
    input) + outputs, less buffers aliased between arguments and outputs. ``variables`` may
    be arrays or ``ShapeDtypeStruct``s; nothing runs.
    """
    fn, shape = _inference(module, input_shape, batch_size)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return compiled_memory_mb(fn.lower(variables, x).compile())


def compiled_memory_mb(compiled: Any) -> float:
    """MiB a compiled program needs by XLA's ``memory_analysis()``: temporaries + arguments
    + outputs - buffers aliased between arguments and outputs."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise NasjaxError(f"the backend of device {device_name()} reports no memory analysis")
    total = (
        stats.temp_size_in_bytes
        + stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return total / 2**20
