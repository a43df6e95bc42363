"""The DARTS search supernet as pure functions of explicit parameters.

Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (``cnn/model_search.py``
of the reference code); the ``pcdarts`` mode follows Xu et al., "PC-DARTS: Partial Channel
Connections for Memory-Efficient Architecture Search", ICLR 2020.

The network is the evaluation network's topology (:mod:`nasjax.spaces.darts_net`; 8 cells,
C=16 for search) with every cell edge ``j -> i`` a mixed op over all of
:data:`~nasjax.spaces.darts_net.OPS` (:func:`nasjax.nets.mixed.mixed_op`). As in the
reference search network, every BatchNorm in a cell has no affine parameters (pools are
followed by one), and all BatchNorms use batch statistics, so ``apply`` is stateless.

``alpha`` is ``float[2, E, 8]``: cell type (0 normal, 1 reduction), edge, op. Edges are
numbered node by node, node ``i``'s ``i + 2`` inputs in state order (``E = 14`` for 4
nodes: node 0 has edges 0-1, node 1 edges 2-4, node 2 edges 5-8, node 3 edges 9-13).
``beta`` is ``float[2, E]``, PC-DARTS's edge-normalisation logits, a softmax over each
node's incoming edges. ``pcdarts`` edges run their ops on ``C / K`` channels; the other
channels bypass the edge (through a 2x2 stride-2 max-pool on reduction edges, as the
PC-DARTS code does) before the channel shuffle.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice
from nasjax.nets.layers import avg_pool_window, conv, depthwise_conv, max_pool
from nasjax.nets.mixed import MIXED_MODES, edge_normalised_sum, mixed_op
from nasjax.nets.relaxed import ArchWeights, RelaxedNetwork
from nasjax.spaces.darts_net import OPS, STEM_MULTIPLIER, shift_by_one
from nasjax.tasks import get_task

_EPSILON = 1e-5
_NONE = OPS.index("none")


def num_edges(nodes: int) -> int:
    """Relaxed edges per cell: node ``i`` has ``i + 2`` inputs."""
    return sum(i + 2 for i in range(nodes))


def check_alpha(alpha: Any, beta: Any = None, nodes: int = 4) -> None:
    """Raises ``NasjaxError`` unless ``alpha`` is ``[2, E, 8]`` and ``beta`` (if given)
    ``[2, E]``, with ``E`` the edges of a cell of ``nodes`` nodes (14 for 4)."""
    e = num_edges(nodes)
    for name, value, shape, what in (
        ("alpha", alpha, (2, e, len(OPS)), "cell type (normal, reduce), edge, op"),
        ("beta", beta, (2, e), "cell type (normal, reduce), edge"),
    ):
        if value is None:
            continue
        got = tuple(np.shape(value))
        if got != shape:
            raise NasjaxError(
                f"{name} has shape {got}; the DARTS space with {nodes} nodes expects "
                f"{shape} ({what}; ops {', '.join(OPS)})"
            )


# ------------------------------------------------------------------ parameter specs


class _Leaf(NamedTuple):
    """How to initialise one parameter: ``fan_in`` > 0 truncated normal (LeCun, flax's
    default), 0 zeros, -1 ones; ``depthwise`` kernels have fan-in ``window``."""

    shape: tuple[int, ...]
    fan_in: int


def _kernel(ndim: int, k: int, cin: int, cout: int) -> _Leaf:
    return _Leaf((k,) * ndim + (cin, cout), k**ndim * cin)


def _depthwise(ndim: int, k: int, c: int) -> _Leaf:
    return _Leaf((k,) * ndim + (c,), k**ndim)


def _reduce_spec(ndim: int, cin: int, cout: int) -> dict[str, _Leaf]:
    return {
        "conv_1": _kernel(ndim, 1, cin, cout // 2),
        "conv_2": _kernel(ndim, 1, cin, cout - cout // 2),
    }


def _op_spec(op: str, c: int, stride: int, ndim: int) -> dict[str, _Leaf]:
    if op == "skip_connect" and stride == 2:
        return _reduce_spec(ndim, c, c)
    if op.startswith("sep_conv_"):
        k = int(op[-1])
        return {
            "dw1": _depthwise(ndim, k, c),
            "pw1": _kernel(ndim, 1, c, c),
            "dw2": _depthwise(ndim, k, c),
            "pw2": _kernel(ndim, 1, c, c),
        }
    if op.startswith("dil_conv_"):
        return {"dw": _depthwise(ndim, int(op[-1]), c), "pw": _kernel(ndim, 1, c, c)}
    return {}


class _CellShape(NamedTuple):
    c: int
    reduction: bool
    reduction_prev: bool


def _cells(channels: int, layers: int) -> list[_CellShape]:
    shapes, c, prev = [], channels, False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if reduction else c
        shapes.append(_CellShape(c, reduction, prev))
        prev = reduction
    return shapes


def _spec(
    cin: int, num_classes: int, cells: list[_CellShape], nodes: int, k: int, ndim: int
) -> dict[str, Any]:
    stem = STEM_MULTIPLIER * cells[0].c
    spec: dict[str, Any] = {
        "stem": {
            "kernel": _kernel(ndim, 3, cin, stem),
            "scale": _Leaf((stem,), -1),
            "bias": _Leaf((stem,), 0),
        }
    }
    c_pp, c_p = stem, stem
    for i, cell in enumerate(cells):
        c = cell.c
        pre0 = (
            _reduce_spec(ndim, c_pp, c)
            if cell.reduction_prev
            else {"kernel": _kernel(ndim, 1, c_pp, c)}
        )
        cell_spec = {"preprocess0": pre0, "preprocess1": {"kernel": _kernel(ndim, 1, c_p, c)}}
        e = 0
        for node in range(nodes):
            for j in range(node + 2):
                stride = 2 if cell.reduction and j < 2 else 1
                cell_spec[f"edge_{e}"] = {op: _op_spec(op, c // k, stride, ndim) for op in OPS}
                e += 1
        spec[f"cell_{i}"] = cell_spec
        c_pp, c_p = c_p, nodes * c
    spec["classifier"] = {
        "kernel": _Leaf((c_p, num_classes), c_p),
        "bias": _Leaf((num_classes,), 0),
    }
    return spec


def _init_from_spec(spec: dict[str, Any], key: jax.Array) -> dict[str, Any]:
    """One truncated-normal draw for all kernels, sliced into the leaves of ``spec``."""
    leaves, treedef = jax.tree_util.tree_flatten(spec, is_leaf=lambda v: isinstance(v, _Leaf))
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    draw = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32)
    out, start = [], 0
    for leaf, size in zip(leaves, sizes):
        if leaf.fan_in > 0:
            std = math.sqrt(1.0 / leaf.fan_in) / 0.87962566103423978
            out.append(std * draw[start : start + size].reshape(leaf.shape))
        else:
            out.append(jnp.full(leaf.shape, 1.0 if leaf.fan_in < 0 else 0.0, jnp.float32))
        start += size
    return jax.tree_util.tree_unflatten(treedef, out)


# ------------------------------------------------------------------ forward pieces


def batch_norm(x: jnp.ndarray, scale: Any = None, bias: Any = None) -> jnp.ndarray:
    """Training-mode BatchNorm with batch statistics only (biased variance, eps 1e-5)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    y = (x - mean) * jax.lax.rsqrt(var + _EPSILON)
    if scale is not None:
        y = y * scale + bias
    return y


def _factorized_reduce(p: dict[str, jnp.ndarray], x: jnp.ndarray) -> jnp.ndarray:
    x = jax.nn.relu(x)
    a = conv(x, p["conv_1"], stride=2)
    b = conv(shift_by_one(x), p["conv_2"], stride=2)
    return batch_norm(jnp.concatenate([a, b], axis=-1))


def _dil_conv(dw: jnp.ndarray, pw: jnp.ndarray, x: jnp.ndarray, stride: int, dilation: int):
    k = dw.shape[0]
    pad = dilation * (k - 1) // 2
    x = depthwise_conv(jax.nn.relu(x), dw, stride, pad, dilation)
    return batch_norm(conv(x, pw))


def _op(op: str, p: dict[str, jnp.ndarray], stride: int):  # noqa: ANN202
    """``x -> y`` of candidate ``op`` with parameters ``p`` (search-network semantics)."""
    if op == "none":
        return lambda x: jnp.zeros_like(
            x[(slice(None),) + (slice(None, None, stride),) * (x.ndim - 2)]
        )
    if op == "max_pool_3x3":
        return lambda x: batch_norm(max_pool(x, 3, stride, 1))
    if op == "avg_pool_3x3":
        return lambda x: batch_norm(avg_pool_window(x, 3, stride, 1))
    if op == "skip_connect":
        return (lambda x: x) if stride == 1 else (lambda x: _factorized_reduce(p, x))
    if op.startswith("sep_conv_"):
        return lambda x: _dil_conv(
            p["dw2"], p["pw2"], _dil_conv(p["dw1"], p["pw1"], x, stride, 1), 1, 1
        )
    return lambda x: _dil_conv(p["dw"], p["pw"], x, stride, 2)


def _bypass(x: jnp.ndarray) -> jnp.ndarray:
    """PC-DARTS's bypass on reduction edges: 2x2 max-pool with stride 2."""
    return max_pool(x, 2, 2)


# ------------------------------------------------------------------ the relaxed network


def darts_relaxed_network(
    dataset: str,
    mode: str,
    channels: int = 16,
    layers: int = 8,
    nodes: int = 4,
    partial_k: int = 4,
) -> RelaxedNetwork:
    """The DARTS search supernet for gradient search under ``mode``.

    Args:
      dataset: one of ``nasjax.tasks.TASKS`` (input channels, classes, 1D or 2D).
      mode: one of :data:`nasjax.nets.mixed.MIXED_MODES`.
      channels: ``C`` of the first stage (16 in the paper's search).
      layers: number of cells (8 in the paper's search); reductions at ``layers//3`` and
        ``2*layers//3``.
      nodes: intermediate nodes per cell (4).
      partial_k: PC-DARTS's ``K`` (``pcdarts`` only); every cell's ``C`` must be a
        multiple of it.

    Returns:
      A :class:`~nasjax.nets.relaxed.RelaxedNetwork` with ``alpha_shape=(2, E, 8)`` and
      ``beta_shape=(2, E)`` (``E = 14`` for 4 nodes); ``apply(params, x, arch)`` takes
      ``arch.weights`` ``[2, E, 8]`` (and ``arch.index`` ``int32[2, E]`` for ``gdas``,
      ``arch.beta`` ``[2, E]`` for ``pcdarts``); ``discretize(alpha, beta)`` gives an
      ``int32[8 * nodes]`` genotype of :class:`nasjax.spaces.darts.DartsSpace`.
    """
    check_choice("mixed-op mode", mode, MIXED_MODES)
    for name, value in (("channels", channels), ("layers", layers), ("nodes", nodes)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise NasjaxError(f"{name} must be an integer >= 1, got {value!r}")
    k = partial_k if mode == "pcdarts" else 1
    if not isinstance(k, (int, np.integer)) or k < 1 or channels % k:
        raise NasjaxError(
            f"partial_k={partial_k!r} must be an integer >= 1 that divides channels={channels}"
        )
    task = get_task(dataset)
    ndim = task.ndim
    cells = _cells(channels, layers)
    spec = _spec(task.input_shape[-1], task.num_classes, cells, nodes, k, ndim)
    e = num_edges(nodes)

    def init(key: jax.Array) -> dict[str, Any]:
        return _init_from_spec(spec, key)

    def cell_forward(p: dict, shape: _CellShape, s0, s1, w, index, beta):  # noqa: ANN001, ANN202
        if shape.reduction_prev:
            s0 = _factorized_reduce(p["preprocess0"], s0)
        else:
            s0 = batch_norm(conv(jax.nn.relu(s0), p["preprocess0"]["kernel"]))
        s1 = batch_norm(conv(jax.nn.relu(s1), p["preprocess1"]["kernel"]))
        states, offset = [s0, s1], 0
        for _ in range(nodes):
            outs = []
            for j, h in enumerate(states):
                edge = offset + j
                stride = 2 if shape.reduction and j < 2 else 1
                ops = [_op(op, p[f"edge_{edge}"][op], stride) for op in OPS]
                outs.append(
                    mixed_op(
                        mode,
                        h,
                        ops,
                        w[edge],
                        None if index is None else index[edge],
                        k=k,
                        bypass=_bypass if stride == 2 else None,
                    )
                )
            if mode == "pcdarts":
                states.append(edge_normalised_sum(outs, beta[offset : offset + len(outs)]))
            else:
                states.append(sum(outs[1:], outs[0]))
            offset += len(outs)
        return jnp.concatenate(states[2:], axis=-1)

    def apply(params: dict[str, Any], x: jnp.ndarray, arch: ArchWeights) -> jnp.ndarray:
        _check_arch(arch, mode, nodes)
        stem = params["stem"]
        s = batch_norm(conv(x, stem["kernel"], padding=1), stem["scale"], stem["bias"])
        s0 = s1 = s
        for i, shape in enumerate(cells):
            r = int(shape.reduction)
            index = None if mode != "gdas" else arch.index[r]
            beta = None if mode != "pcdarts" else arch.beta[r]
            s0, s1 = (
                s1,
                cell_forward(params[f"cell_{i}"], shape, s0, s1, arch.weights[r], index, beta),
            )
        out = jnp.mean(s1, axis=tuple(range(1, 1 + ndim)))
        return out @ params["classifier"]["kernel"] + params["classifier"]["bias"]

    def discretize(alpha: Any, beta: Any = None) -> np.ndarray:
        return discretize_alpha(alpha, beta if mode == "pcdarts" else None, nodes)

    return RelaxedNetwork(mode, init, apply, (2, e, len(OPS)), (2, e), discretize)


def _check_arch(arch: ArchWeights, mode: str, nodes: int) -> None:
    check_alpha(arch.weights, arch.beta, nodes)
    e = num_edges(nodes)
    if mode == "gdas":
        if arch.index is None or tuple(np.shape(arch.index)) != (2, e):
            got = None if arch.index is None else tuple(np.shape(arch.index))
            raise NasjaxError(
                f"gdas needs arch.index, the sampled op of each edge, int32 shape (2, {e}); "
                f"got {got}"
            )
    if mode == "pcdarts" and arch.beta is None:
        raise NasjaxError(
            f"pcdarts needs arch.beta, the edge-normalisation logits of shape (2, {e}); "
            "pass zeros for uniform edge weights"
        )


def discretize_alpha(alpha: Any, beta: Any = None, nodes: int = 4) -> np.ndarray:
    """The DARTS rule: the genotype of op logits ``alpha`` ``[2, E, 8]``.

    Per node, the 2 incoming edges whose strongest non-``none`` op weight (softmax over
    the edge's ops) is largest are kept, strongest first (ties: the lower input state);
    each keeps its strongest non-``none`` op (ties: the earlier op). With ``beta``
    (PC-DARTS), each edge's weights are first scaled by the softmax of ``beta`` over its
    node's incoming edges, as in the PC-DARTS code.

    Returns:
      ``np.int32[8 * nodes]`` in :class:`nasjax.spaces.darts.DartsSpace`'s layout.
    """
    check_alpha(alpha, beta, nodes)
    a = np.asarray(alpha, np.float64)
    w = np.exp(a - a.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    genotype = []
    for cell in range(2):
        offset = 0
        for node in range(nodes):
            n = node + 2
            wn = w[cell, offset : offset + n].copy()
            if beta is not None:
                b = np.asarray(beta, np.float64)[cell, offset : offset + n]
                b = np.exp(b - b.max())
                wn *= (b / b.sum())[:, None]
            real = np.delete(wn, _NONE, axis=1)  # the non-`none` ops
            strength = real.max(axis=1)
            for j in np.argsort(-strength, kind="stable")[:2]:
                genotype += [int(j), int(np.argmax(real[j]))]
            offset += n
    return np.asarray(genotype, np.int32)
