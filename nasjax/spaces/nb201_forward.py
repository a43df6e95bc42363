"""The NAS-Bench-201 forward pass, written once, with small explicit extension points.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020: the benchmark's ``TinyNetwork`` -- a 3x3 stem conv and BatchNorm;
three stages of ``N`` 4-node cells (6 edges, one of :data:`OPS` each) with residual
reduction blocks between them; BatchNorm, ReLU, global average pooling, a linear layer.

:func:`forward` walks that network over a parameter dict (the layout of
:class:`nasjax.spaces.nb201_functional.NB201Functional`) and calls a :class:`Layers`
object at every point where the users of the walk differ:

* ``conv``: every convolution (input, kernel, :class:`Site`, state) -- plain by default;
  fake-quantized for QAT; with per-channel scale probes for the fisher proxy.
* ``bn``: every BatchNorm with parameters (the relaxed network's ops have none).
* ``mask``: the channel mask after each layer that writes into a stage's stream (pruning).
* ``tap``: every activation entering a ReLU (NASWOT codes).
* ``dense``: the classifier.
* ``edge``: one cell edge; by default ``lax.switch`` over the ops (under ``lax.map`` only
  the chosen op runs), a relaxed network passes a mixed op.
* ``node_sum``: how a node adds its incoming edges (PC-DARTS normalises them).

Hooks thread a *state container* -- the state dict of the block they sit in (the top
level, a reduction block, a cell edge) -- so a hook may keep its own entries next to the
BatchNorm statistics (activation ranges, ReLU codes); the walk returns the updated tree.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nasjax.nets.layers import BN_EPSILON, BN_MOMENTUM, avg_pool, conv
from nasjax.spaces.nb201_net import EDGES, OPS

Params = dict[str, Any]
State = dict[str, Any]


class Site(NamedTuple):
    """Where a layer sits: its kernel's path in the parameters, its compression unit
    (``stem``, ``reduce{s}``, ``stage{s}`` or ``head``) and its stage."""

    path: tuple[str, ...]
    unit: str
    stage: int

    @property
    def layer(self) -> str:
        """The layer's own name: ``stem``, ``conv_a``, ``nor_conv_3x3``, ``classifier``..."""
        return self.path[-2] if self.path[-1] == "kernel" and len(self.path) > 1 else self.path[-1]

    def child(self, *names: str) -> Site:
        """The site ``names`` below this one."""
        return self._replace(path=self.path + names)


def batch_norm(
    x: jnp.ndarray, params: Params, state: State, train: bool
) -> tuple[jnp.ndarray, State]:
    """Flax's ``nn.BatchNorm`` over every axis but the last, as a function.

    Training mode normalises with the batch statistics (variance as E[x^2] - E[x]^2,
    flax's default) and returns the updated running statistics (PyTorch momentum 0.1).
    """
    if train:
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes)
        var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
        state = {
            "mean": BN_MOMENTUM * state["mean"] + (1 - BN_MOMENTUM) * mean,
            "var": BN_MOMENTUM * state["var"] + (1 - BN_MOMENTUM) * var,
        }
    else:
        mean, var = state["mean"], state["var"]
    # Scale folded into the per-channel factor: one full-size multiply, as flax does.
    factor = jax.lax.rsqrt(var + BN_EPSILON) * params["scale"]
    return (x - mean) * factor + params["bias"], state


def avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
    """The ``avg_pool_3x3`` op: stride 1, padding 1, padding excluded from the mean."""
    return avg_pool(x, 3, stride=1, padding=1, include_pad=False)


class Layers:
    """The extension points of :func:`forward`; this base class is the plain network.

    Attributes:
      train: BatchNorm normalises with (and updates) batch statistics.
    """

    def __init__(self, train: bool) -> None:
        self.train = train

    def conv(
        self, x: jnp.ndarray, kernel: jnp.ndarray, site: Site, s: State, signed: bool, stride: int
    ) -> tuple[jnp.ndarray, State]:
        """A convolution (``signed``: its input did not come through a ReLU)."""
        del site, signed
        return conv(x, kernel, stride, kernel.shape[0] // 2), s

    def bn(self, y: jnp.ndarray, params: Params, stats: State) -> tuple[jnp.ndarray, State]:
        """A BatchNorm with parameters ``params`` and running statistics ``stats``."""
        return batch_norm(y, params, stats, self.train)

    def mask(self, y: jnp.ndarray, site: Site, inner: bool = False) -> jnp.ndarray:
        """Channel mask of a layer writing the stream of ``site.stage`` (``inner``: a
        reduction block's internal channels)."""
        del site, inner
        return y

    def tap(self, x: jnp.ndarray, site: Site, s: State) -> State:
        """Sees ``x`` before it enters the ReLU of the layer at ``site``."""
        del x, site
        return s

    def dense(
        self, x: jnp.ndarray, params: Params, site: Site, s: State
    ) -> tuple[jnp.ndarray, State]:
        """The classifier."""
        del site
        return x @ params["kernel"] + params["bias"], s

    def edge(
        self, h: jnp.ndarray, arch: Any, e: int, p: Params, s: State, site: Site
    ) -> tuple[jnp.ndarray, State]:
        """Edge ``e`` of a cell, ``arch`` an ``int32[6]`` genotype: ``lax.switch``."""
        return switch_edge(self, h, arch[e], p, s, site)

    def node_sum(self, outputs: Sequence[jnp.ndarray], arch: Any, edges: Sequence[int]) -> Any:
        """A node: the sum of its incoming edges' outputs (in edge order)."""
        del arch, edges
        return sum(outputs[1:], outputs[0])


class CachedLayers(Layers):
    """:class:`Layers` whose edges are traced once per shape (a nested ``jax.jit``), which
    shortens tracing of the whole network; the plain network's fast path."""

    def edge(
        self, h: jnp.ndarray, arch: Any, e: int, p: Params, s: State, site: Site
    ) -> tuple[jnp.ndarray, State]:
        """Edge ``e`` through the cached, plain ``lax.switch``."""
        del site
        return _cached_edge(h, arch[e], p, s, self.train)


@functools.partial(jax.jit, static_argnames="train")
def _cached_edge(
    h: jnp.ndarray, op: jnp.ndarray, p: Params, s: State, train: bool
) -> tuple[jnp.ndarray, State]:
    return switch_edge(Layers(train), h, op, p, s, Site((), "", 0))


def relu_conv_bn(
    layers: Layers, x: jnp.ndarray, kernel: jnp.ndarray, bn: tuple[Params, State], site: Site,
    s: State, stride: int = 1,
) -> tuple[jnp.ndarray, State, State]:  # fmt: skip
    """ReLU -> Conv -> BatchNorm; returns the output, its BN statistics and ``s``."""
    s = layers.tap(x, site, s)
    y, s = layers.conv(jax.nn.relu(x), kernel, site, s, False, stride)
    y, stats = layers.bn(y, *bn)
    return y, stats, s


def switch_edge(
    layers: Layers, h: jnp.ndarray, op: jnp.ndarray, p: Params, s: State, site: Site
) -> tuple[jnp.ndarray, State]:
    """One edge: ``lax.switch`` on ``op`` (an index into ``OPS``); a conv op moves its own
    BatchNorm statistics (and whatever the hooks keep in ``s``), the others keep ``s``."""

    def conv_op(name: str) -> Any:
        def run(h: jnp.ndarray) -> tuple[jnp.ndarray, State]:
            where = site.child(name, "kernel")
            y, stats, new = relu_conv_bn(layers, h, p[name]["kernel"], (p[name], s[name]), where, s)
            return layers.mask(y, site), {**new, name: stats}

        return run

    branches = {
        "none": lambda h: (jnp.zeros_like(h), s),
        "skip_connect": lambda h: (h, s),
        "nor_conv_1x1": conv_op("nor_conv_1x1"),
        "nor_conv_3x3": conv_op("nor_conv_3x3"),
        "avg_pool_3x3": lambda h: (avg_pool_3x3(h), s),
    }
    return jax.lax.switch(op, [branches[name] for name in OPS], h)


def reduction(
    layers: Layers, x: jnp.ndarray, p: Params, s: State, stage: int
) -> tuple[jnp.ndarray, State]:
    """The benchmark's ``ResNetBasicblock`` with stride 2 before stage ``stage``."""
    site = Site((f"reduction_{stage}",), f"reduce{stage}", stage)
    y, bn_a, s = relu_conv_bn(
        layers, x, p["conv_a"], (p["bn_a"], s["bn_a"]), site.child("conv_a"), s, 2
    )
    y = layers.mask(y, site, inner=True)
    y, bn_b, s = relu_conv_bn(
        layers, y, p["conv_b"], (p["bn_b"], s["bn_b"]), site.child("conv_b"), s
    )
    short = avg_pool(x, 2, stride=2)
    short, s = layers.conv(short, p["downsample"], site.child("downsample"), s, True, 1)
    return layers.mask(short + y, site), {**s, "bn_a": bn_a, "bn_b": bn_b}


def cell(
    layers: Layers, x: jnp.ndarray, p: Params, s: State, arch: Any, site: Site
) -> tuple[jnp.ndarray, State]:
    """A 4-node cell; node ``j`` sums ``op(node i)`` over its incoming edges ``i -> j``."""
    nodes, new = [x], dict(s)
    for node in range(1, 4):
        outputs, edges = [], []
        for e, (src, dst) in enumerate(EDGES):
            if dst == node:
                name = f"edge_{e}"
                out, new[name] = layers.edge(
                    nodes[src], arch, e, p[name], s[name], site.child(name)
                )
                outputs.append(out)
                edges.append(e)
        nodes.append(layers.node_sum(outputs, arch, edges))
    return nodes[-1], new


def forward(
    layers: Layers, params: Params, state: State, x: jnp.ndarray, arch: Any, cells_per_stage: int
) -> tuple[jnp.ndarray, State]:
    """Logits of the NB201 network for ``arch`` (what the edges read) and the new state.

    Args:
      layers: the extension points (:class:`Layers` is the plain network).
      params: parameters in :class:`NB201Functional`'s layout.
      state: BatchNorm statistics in the same layout, plus whatever the hooks keep.
      x: channels-last inputs ``[B, *spatial, C]``.
      arch: passed to ``layers.edge`` and ``layers.node_sum`` (e.g. ``int32[6]``).
      cells_per_stage: ``N``.
    """
    s = dict(state)
    stem = Site(("stem",), "stem", 0)
    y, s = layers.conv(x, params["stem"], stem, s, True, 1)
    y, s["stem_bn"] = layers.bn(y, params["stem_bn"], state["stem_bn"])
    x = layers.mask(y, stem)
    for stage in range(3):
        if stage > 0:
            name = f"reduction_{stage}"
            x, s[name] = reduction(layers, x, params[name], s[name], stage)
        for i in range(cells_per_stage):
            name = f"cell_{stage}_{i}"
            site = Site((name,), f"stage{stage}", stage)
            x, s[name] = cell(layers, x, params[name], s[name], arch, site)
    x, s["last_bn"] = layers.bn(x, params["last_bn"], state["last_bn"])
    s = layers.tap(x, Site(("last_bn",), "head", 2), s)
    x = jnp.mean(jax.nn.relu(x), axis=tuple(range(1, x.ndim - 1)))
    return layers.dense(x, params["classifier"], Site(("classifier", "kernel"), "head", 2), s)
