"""A per-op latency lookup table for NAS-Bench-201 cells on the current device.

The latency predictor of hardware-aware NAS (the lookup table of Once-for-All, Cai et al.,
ICLR 2020, and ProxylessNAS; the per-device measurements that HELP, Lee et al., NeurIPS 2021,
builds on): measure each candidate op once where it sits in the network, then predict a
network's latency as the sum of its ops' entries plus the fixed part of the network, with
no network compiled or run.

What is measured, for a batch of ``batch_size`` examples:

* ``fixed_ms``: the whole decoded network with every edge ``none`` (stem, the two residual
  reductions, the classifier head, and one program dispatch).
* ``op_ms[s, o]``: op ``o`` on one edge of a cell of stage ``s``, as a compiled program
  ``x + op(x)`` (the op and the addition that merges it into its node's sum) less a program
  that only reads and writes the same feature map (``-x``: dispatch and one elementwise
  pass), clipped at zero; ``none`` is 0 (a ``none`` edge has no module).
  Every edge of an NB201 cell maps the cell's input shape to itself, so the entries are the
  same on all six edges of a stage; per ``(stage, op)`` is therefore enough.

``predict(g) = fixed_ms + sum_e live_e(g) * edge_ms[e, g_e]`` with
``edge_ms[e, o] = cells_per_stage * sum_s op_ms[s, o]``, where ``live_e(g)`` drops the edges
whose output never reaches the cell's output (an edge into node 1 or 2 when every path on
from that node is ``none``): XLA removes such dead code from the compiled network, whereas
the benchmark's FLOPs (``nasjax.objectives``) count it, as its PyTorch profiler does. The
sum ignores what XLA fuses across ops and what runs concurrently, which
``evaluate_latency_table`` quantifies against real measurements (Spearman rank correlation
and mean relative error).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_positive
from nasjax.objectives import benchmark_variables, device_name, measure_latency_ms
from nasjax.rundir import read_json_record, write_json_atomic
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.nb201_net import Cell, Edge
from nasjax.stats import spearman
from nasjax.tasks import get_task

FORMAT = "nasjax.latency_table"
VERSION = 1
_NUM_STAGES = 3


class LatencyTable(NamedTuple):
    """Per-op latencies (ms) of NB201 cells on one device; see the module docstring."""

    op_ms: np.ndarray  # float64[stages, ops]: one edge of one cell of each stage
    fixed_ms: float
    ops: tuple[str, ...]
    dataset: str
    channels: int
    cells_per_stage: int
    batch_size: int
    device: str
    repeats: int

    def edge_ms(self) -> np.ndarray:
        """``float64[6, ops]``: the latency an edge adds to the network with each op."""
        per_op = self.cells_per_stage * np.asarray(self.op_ms).sum(axis=0)
        return np.tile(per_op, (6, 1))

    def predict(self, genotypes: Any) -> Any:
        """Predicted latency (ms) of genotypes ``int[..., 6]``: ``fixed_ms`` plus the sum of
        their live edges' entries (``live_edges``). A ``jax.Array`` (traced or not) gives a
        ``jnp`` result."""
        if isinstance(genotypes, jax.Array):
            xp, g = jnp, genotypes
        else:
            xp, g = np, np.asarray(genotypes)
            bad = g.shape[-1:] != (6,) or not np.issubdtype(g.dtype, np.integer)
            if bad or g.min(initial=0) < 0 or g.max(initial=0) >= len(self.ops):
                raise NasjaxError(
                    f"genotypes must be integers in 0..{len(self.ops) - 1} of shape [..., 6], "
                    f"got shape {g.shape} and dtype {g.dtype}"
                )
        edge_ms = xp.asarray(self.edge_ms())[xp.arange(6), g]
        return self.fixed_ms + xp.where(live_edges(g), edge_ms, 0.0).sum(axis=-1)

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the table to ``path`` atomically (a temporary file, then ``os.replace``)."""
        record = {"format": FORMAT, "version": VERSION, **self._asdict()}
        record["op_ms"] = np.asarray(self.op_ms).tolist()
        record["ops"] = list(self.ops)
        write_json_atomic(path, record, indent=1)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LatencyTable:
        """Reads a table written by ``to_json``; a clear error for other files."""
        fields = read_json_record(path, FORMAT, VERSION, cls._fields, "latency table")
        fields["op_ms"] = np.asarray(fields["op_ms"], np.float64)
        fields["ops"] = tuple(fields["ops"])
        return cls(**fields)


def live_edges(genotypes: Any) -> Any:
    """``bool[..., 6]``: the edges of NB201 genotypes ``int[..., 6]`` that are not ``none``
    and whose output reaches the cell's output node 3 (numpy or ``jnp``, like the input).

    Edges, in the official order: ``0->1, 0->2, 1->2, 0->3, 1->3, 2->3``; op 0 is ``none``.
    """
    xp = jnp if isinstance(genotypes, jax.Array) else np
    used = xp.asarray(genotypes) != 0
    node2 = used[..., 5]  # node 2 feeds node 3 only through edge 2->3
    node1 = used[..., 4] | (used[..., 2] & node2)
    out = xp.ones_like(node1)
    return used & xp.stack([node1, node2, node2, out, out, out], axis=-1)


class _EdgeProbe(nn.Module):
    """``x + op(x)`` for one NB201 op at one edge's shape; ``op=None``: ``-x`` (baseline)."""

    op: str | None
    features: int
    ndim: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.op is None:
            return -x
        return x + Edge((self.op,), self.features, self.ndim, name="edge")(x, False)


def _stage_shapes(space: NB201Space, dataset: str, channels: int) -> list[tuple[int, ...]]:
    """One example's feature-map shape in each stage (a cell's input and output)."""
    net = space.decode((0,) * 6, dataset, channels=channels, cells_per_stage=1)
    x = jnp.zeros((1,) + get_task(dataset).input_shape, jnp.float32)
    is_cell = lambda mdl, method: isinstance(mdl, Cell) and method == "__call__"

    def forward() -> Any:
        variables = net.init(jax.random.key(0), x)
        return net.apply(variables, x, capture_intermediates=is_cell, mutable=["intermediates"])

    _, state = jax.eval_shape(forward)
    cells = state["intermediates"]
    return [cells[f"cell_{s}_0"]["__call__"][0].shape[1:] for s in range(_NUM_STAGES)]


def _check_space(space: SearchSpace) -> NB201Space:
    if not isinstance(space, NB201Space):
        raise NasjaxError(f"latency tables support the NB201 space only, got {space!r}")
    return space


def build_latency_table(
    space: SearchSpace,
    dataset: str,
    channels: int = 16,
    cells_per_stage: int = 5,
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 50,
) -> LatencyTable:
    """Micro-benchmarks every NB201 op in every stage, and the fixed part of the network.

    Args:
      space: an ``NB201Space``.
      dataset: a name of ``nasjax.tasks.TASKS``; sets the input shape and classes.
      channels: ``C`` of the first stage.
      cells_per_stage: ``N``.
      batch_size: examples per call.
      warmup: untimed calls before each measurement.
      repeats: timed calls per measurement (medians are used).

    Returns:
      A ``LatencyTable`` for the current default device.
    """
    space = _check_space(space)
    check_positive(channels=channels, cells_per_stage=cells_per_stage, batch_size=batch_size)
    base = space.decode((0,) * 6, dataset, channels=channels, cells_per_stage=cells_per_stage)
    input_shape = get_task(dataset).input_shape
    timing = {"batch_size": batch_size, "warmup": warmup, "repeats": repeats}
    fixed = measure_latency_ms(base, benchmark_variables(base, input_shape), input_shape, **timing)
    op_ms = np.zeros((_NUM_STAGES, len(space.ops)))
    for stage, shape in enumerate(_stage_shapes(space, dataset, channels)):
        ndim = len(shape) - 1
        reference = None
        for op in (None,) + space.ops[1:]:
            probe = _EdgeProbe(op, shape[-1], ndim)
            variables = benchmark_variables(probe, shape)
            ms = measure_latency_ms(probe, variables, shape, **timing)
            if op is None:
                reference = ms
            else:
                op_ms[stage, space.ops.index(op)] = max(ms - reference, 0.0)
    return LatencyTable(
        op_ms=op_ms,
        fixed_ms=fixed,
        ops=tuple(space.ops),
        dataset=dataset,
        channels=channels,
        cells_per_stage=cells_per_stage,
        batch_size=batch_size,
        device=device_name(),
        repeats=repeats,
    )


def evaluate_latency_table(
    key: jax.Array,
    table: LatencyTable,
    space: SearchSpace,
    num_archs: int = 20,
    warmup: int = 3,
    repeats: int = 20,
) -> dict[str, Any]:
    """Compares the table's predictions with measured latencies of random networks.

    Samples ``num_archs`` genotypes with ``key``, decodes them at the table's dataset,
    channels and cells per stage, and times each with ``measure_latency_ms`` at the table's
    batch size on the current default device (which must be the table's).

    Returns:
      ``{"spearman", "mean_relative_error", "predicted_ms", "measured_ms", "archs",
      "device"}``; the error is ``mean(|predicted - measured| / measured)``.
    """
    space = _check_space(space)
    if table.device != device_name():
        raise NasjaxError(
            f"latency table measured on {table.device!r}, but the default device is "
            f"{device_name()!r}; build a table on this device"
        )
    if num_archs < 2:
        raise NasjaxError(f"num_archs must be >= 2, got {num_archs}")
    genotypes = np.asarray(space.sample(key, num_archs))
    input_shape = get_task(table.dataset).input_shape
    measured = []
    for g in genotypes:
        net = space.decode(
            g, table.dataset, channels=table.channels, cells_per_stage=table.cells_per_stage
        )
        variables = benchmark_variables(net, input_shape)
        ms = measure_latency_ms(
            net, variables, input_shape, table.batch_size, warmup=warmup, repeats=repeats
        )
        measured.append(ms)
    measured = np.asarray(measured)
    predicted = np.asarray(table.predict(genotypes), np.float64)
    return {
        "spearman": spearman(predicted, measured),
        "mean_relative_error": float(np.mean(np.abs(predicted - measured) / measured)),
        "predicted_ms": predicted.tolist(),
        "measured_ms": measured.tolist(),
        "archs": [space.to_string(g) for g in genotypes],
        "device": table.device,
    }
