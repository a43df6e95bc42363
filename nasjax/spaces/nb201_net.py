"""The NAS-Bench-201 network as Flax modules: decoded (chosen ops only) and supernet.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020. The topology follows the benchmark's ``TinyNetwork``: a 3x3 stem conv
and BatchNorm; three stages of ``N`` cells with ``C``, ``2C``, ``4C`` channels separated by
residual reduction blocks; BatchNorm, ReLU, global average pooling and a linear classifier.
Convolution ops are ReLU -> Conv (no bias) -> BatchNorm; ``avg_pool_3x3`` excludes padding
from the average, as PyTorch's ``count_include_pad=False`` does. ``ndim=1`` builds the
same topology for 1D signals (MNIST-1D) with 1D kernels.

One module class serves three uses, and parameter names are the same in all of them
(``cell_{stage}_{i}/edge_{e}/{op}/...``), so a decoded network's parameters are a subset of
the supernet's:

* ``genotype`` given: the decoded network, only the chosen ops exist (``none`` edges have
  no module at all), as in the benchmark's ``InferCell``.
* ``genotype=None`` and ``arch`` float ``[6, 5]`` weights: every candidate op on every edge,
  summed with those weights (the DARTS-style relaxation; one-hot weights = a genotype).
* ``genotype=None`` and ``arch`` an ``int32[6]`` genotype: each edge runs only its chosen op
  through ``lax.switch``. Under ``lax.map`` this executes one branch (specialised cost);
  under ``vmap`` it becomes a select over all branches.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from nasjax.nets.layers import Conv, ReLUConvBN, avg_pool, batch_norm

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""Candidate operations in the benchmark's official order."""

EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""(from node, to node) of the six cell edges, in the official string order."""


def _conv(features: int, kernel: int, stride: int, ndim: int, name: str | None = None) -> Conv:
    return Conv(features, kernel, stride=stride, padding=kernel // 2, ndim=ndim, name=name)


def avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 (or 3) average pooling, stride 1, padding 1, padding excluded from the mean."""
    return avg_pool(x, 3, stride=1, padding=1, include_pad=False)


class Edge(nn.Module):
    """One cell edge holding the candidate ops ``ops`` (a subset of ``OPS``)."""

    ops: tuple[str, ...]
    features: int
    ndim: int = 2

    def setup(self) -> None:
        if "nor_conv_1x1" in self.ops:
            self.nor_conv_1x1 = ReLUConvBN(self.features, 1, ndim=self.ndim)
        if "nor_conv_3x3" in self.ops:
            self.nor_conv_3x3 = ReLUConvBN(self.features, 3, ndim=self.ndim)

    def apply_op(self, op: str, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Applies candidate op ``op`` to ``x``."""
        if op == "none":
            return jnp.zeros_like(x)
        if op == "skip_connect":
            return x
        if op == "avg_pool_3x3":
            return avg_pool_3x3(x)
        return getattr(self, op)(x, train)

    def __call__(
        self, x: jnp.ndarray, train: bool, selection: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        """Output of the edge.

        Args:
          x: input feature map.
          train: BatchNorm uses batch statistics (and updates running ones) if True.
          selection: ``None`` for a single-op (decoded) edge; float weights ``[len(ops)]``
            for a weighted sum of all ops; an int32 scalar to run only that op.
        """
        if selection is None:
            (op,) = self.ops
            return self.apply_op(op, x, train)
        if jnp.issubdtype(selection.dtype, jnp.integer):
            if self.is_initializing():  # create every op's variables, pick one output
                outputs = jnp.stack([self.apply_op(op, x, train) for op in self.ops])
                return outputs[selection]
            branches = [lambda mdl, x, op=op: mdl.apply_op(op, x, train) for op in self.ops]
            return nn.switch(selection, branches, self, x)
        out = jnp.zeros_like(x)
        for k, op in enumerate(self.ops):
            if op != "none":  # w * 0 adds nothing; skip the work
                out = out + selection[k].astype(x.dtype) * self.apply_op(op, x, train)
        return out


class Cell(nn.Module):
    """A 4-node NAS-Bench-201 cell; node ``i`` sums its incoming edges."""

    features: int
    genotype: tuple[int, ...] | None = None
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, arch: jnp.ndarray | None = None) -> jnp.ndarray:
        nodes = [x]
        for node in range(1, 4):
            total = jnp.zeros_like(x)
            for e, (src, dst) in enumerate(EDGES):
                if dst != node:
                    continue
                if self.genotype is None:
                    edge = Edge(OPS, self.features, self.ndim, name=f"edge_{e}")
                    total = total + edge(nodes[src], train, arch[e])
                elif OPS[self.genotype[e]] != "none":
                    edge = Edge(
                        (OPS[self.genotype[e]],), self.features, self.ndim, name=f"edge_{e}"
                    )
                    total = total + edge(nodes[src], train)
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's ``ResNetBasicblock`` with stride 2 between stages."""

    features: int
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = ReLUConvBN(self.features, 3, stride=2, ndim=self.ndim, name="conv_a")(x, train)
        y = ReLUConvBN(self.features, 3, stride=1, ndim=self.ndim, name="conv_b")(y, train)
        shortcut = avg_pool(x, 2, stride=2)
        shortcut = _conv(self.features, 1, 1, self.ndim, name="downsample")(shortcut)
        return shortcut + y


class NB201Network(nn.Module):
    """The NAS-Bench-201 network (``TinyNetwork``); see the module docstring for its modes.

    Attributes:
      num_classes: classifier outputs.
      genotype: chosen op per edge (a decoded network) or ``None`` (the supernet).
      channels: ``C`` of the first stage (16 in the benchmark).
      cells_per_stage: ``N`` (5 in the benchmark).
      ndim: 2 for images ``[B, H, W, C]``, 1 for signals ``[B, L, C]``.
    """

    num_classes: int
    genotype: tuple[int, ...] | None = None
    channels: int = 16
    cells_per_stage: int = 5
    ndim: int = 2

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, arch: jnp.ndarray | None = None, train: bool = False
    ) -> jnp.ndarray:
        """Logits for a batch ``x``.

        Args:
          x: inputs, channels last.
          arch: supernet only: float ``[6, 5]`` op weights or an ``int32[6]`` genotype.
          train: use batch statistics in BatchNorm and update the running ones.
        """
        if (self.genotype is None) != (arch is not None):
            raise ValueError("pass `arch` to the supernet (genotype=None) and only to it")
        x = _conv(self.channels, 3, 1, self.ndim, name="stem_conv")(x)
        x = batch_norm(train, name="stem_bn")(x)
        for stage in range(3):
            features = self.channels * 2**stage
            if stage > 0:
                x = ResidualReduction(features, self.ndim, name=f"reduction_{stage}")(x, train)
            for i in range(self.cells_per_stage):
                cell = Cell(features, self.genotype, self.ndim, name=f"cell_{stage}_{i}")
                x = cell(x, train, arch)
        x = nn.relu(batch_norm(train, name="last_bn")(x))
        x = jnp.mean(x, axis=tuple(range(1, 1 + self.ndim)))
        return nn.Dense(self.num_classes, name="classifier")(x)
