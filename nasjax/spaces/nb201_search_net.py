"""NAS-Bench-201's search network with relaxed edges (the benchmark's DARTS/GDAS supernet).

The walk of :func:`nasjax.spaces.nb201_forward.forward` (stem, three stages of ``N``
cells, residual reduction blocks, classifier), with every cell edge a mixed op over the five
candidate ops (:mod:`nasjax.nets.mixed`). As in the benchmark's weight-sharing
baselines (Dong & Yang, ICLR 2020, ``TinyNetworkDarts`` / ``TinyNetworkGDAS``), the ops'
BatchNorm has no affine parameters and always uses batch statistics, so the network is
stateless; the stem, reduction blocks and final BN keep theirs.

PC-DARTS (Xu et al., ICLR 2020) builds the edge convs for ``C/K`` channels; a node then
sums its incoming edges weighted by ``softmax(beta)`` of that node (edge normalisation).
``discretize`` picks the strongest op of every edge (all six edges are kept in NB201).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice
from nasjax.nets.layers import BN_EPSILON, conv
from nasjax.nets.mixed import MIXED_MODES, edge_normalised_sum, mixed_op
from nasjax.nets.relaxed import ArchWeights, Params, RelaxedNetwork
from nasjax.spaces.nb201_forward import Layers, Site, State, avg_pool_3x3, forward
from nasjax.spaces.nb201_functional import NB201Functional
from nasjax.spaces.nb201_net import EDGES, OPS
from nasjax.tasks import get_task


def normalise(x: jnp.ndarray) -> jnp.ndarray:
    """BatchNorm without affine parameters, with the batch's statistics (search mode)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
    return (x - mean) * jax.lax.rsqrt(var + BN_EPSILON)


def _edge_ops(p: Params) -> list:
    """The five candidate ops of one edge (``OPS`` order) as callables of the input."""

    def relu_conv_bn(kernel: jnp.ndarray):  # noqa: ANN202 - a closure
        return lambda h: normalise(conv(jax.nn.relu(h), kernel, 1, kernel.shape[0] // 2))

    ops = {
        "none": jnp.zeros_like,
        "skip_connect": lambda h: h,
        "nor_conv_1x1": relu_conv_bn(p["nor_conv_1x1"]),
        "nor_conv_3x3": relu_conv_bn(p["nor_conv_3x3"]),
        "avg_pool_3x3": avg_pool_3x3,
    }
    return [ops[name] for name in OPS]


def _init(net: NB201Functional, partial_k: int, key: jax.Array) -> Params:
    """The functional network's parameters with affine-free, ``C/K``-channel edge convs."""
    params, _ = net.init(key)
    for name, cell in params.items():
        if not name.startswith("cell_"):
            continue
        for edge, ops in cell.items():
            kept = {}
            for op, q in ops.items():
                k = q["kernel"]
                part = k.shape[-1] // partial_k
                # Same lecun-normal scale at the smaller fan-in.
                kept[op] = k[..., :part, :part] * math.sqrt(partial_k)
            cell[edge] = kept
    return params


class _RelaxedLayers(Layers):
    """The walk's hooks for the search network: BN on batch statistics, mixed-op edges."""

    def __init__(self, mode: str, k: int) -> None:
        super().__init__(train=True)
        self.mode, self.k = mode, k

    def edge(
        self, h: jnp.ndarray, arch: ArchWeights, e: int, p: Params, s: State, site: Site
    ) -> tuple[jnp.ndarray, State]:
        """Edge ``e`` as the mode's mixed op over the five candidate ops."""
        index = None if arch.index is None else arch.index[e]
        return mixed_op(self.mode, h, _edge_ops(p), arch.weights[e], index, self.k), s

    def node_sum(
        self, outputs: Sequence[jnp.ndarray], arch: ArchWeights, edges: Sequence[int]
    ) -> jnp.ndarray:
        """PC-DARTS weighs a node's incoming edges by ``softmax(beta)``; others add them."""
        if self.mode == "pcdarts":
            return edge_normalised_sum(outputs, arch.beta[jnp.asarray(edges)])
        return super().node_sum(outputs, arch, edges)


def _apply(
    net: NB201Functional, mode: str, k: int, params: Params, x: jnp.ndarray, arch: ArchWeights
) -> jnp.ndarray:
    # Search BN uses batch statistics; the running ones it would update are discarded.
    s = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: net.init(jax.random.key(0))[1]))
    return forward(_RelaxedLayers(mode, k), params, s, x, arch, net.cells_per_stage)[0]


def discretize(alpha: np.ndarray, beta: np.ndarray | None = None) -> np.ndarray:
    """The NB201 genotype of ``alpha`` ``[6, 5]``: the strongest op of every edge.

    ``beta`` scales whole edges and cannot change an edge's argmax; NB201 keeps all edges.
    """
    del beta
    return np.asarray(np.argmax(np.asarray(alpha), axis=-1), np.int32)


def nb201_relaxed_network(
    dataset: str,
    mode: str,
    channels: int = 16,
    cells_per_stage: int = 5,
    partial_k: int = 4,
) -> RelaxedNetwork:
    """NB201's search network for ``mode`` (``darts``, ``gdas`` or ``pcdarts``).

    Args:
      dataset: a task name (fixes the input shape and classes).
      mode: how edges mix their ops (:data:`nasjax.nets.mixed.MIXED_MODES`).
      channels: ``C`` of the first stage; a multiple of ``partial_k`` for ``pcdarts``.
      cells_per_stage: ``N``.
      partial_k: PC-DARTS's ``K`` (1/K of the channels through the mixed op).

    Returns:
      A :class:`RelaxedNetwork` with ``alpha_shape == (6, 5)`` and ``beta_shape == (6,)``.
    """
    check_choice("mixed-op mode", mode, MIXED_MODES)
    task = get_task(dataset)
    k = partial_k if mode == "pcdarts" else 1
    if channels < 1 or cells_per_stage < 1 or channels % k:
        raise NasjaxError(
            f"channels={channels} and cells_per_stage={cells_per_stage} must be >= 1"
            + (f", channels a multiple of K={k}" if k > 1 else "")
        )
    net = NB201Functional(
        task.num_classes, task.input_shape[-1], channels, cells_per_stage, task.ndim
    )
    return RelaxedNetwork(
        mode=mode,
        init=lambda key: _init(net, k, key),
        apply=lambda params, x, arch: _apply(net, mode, k, params, x, arch),
        alpha_shape=(len(EDGES), len(OPS)),
        beta_shape=(len(EDGES),),
        discretize=discretize,
    )
