"""The DARTS evaluation network as Flax modules (Liu et al., ICLR 2019).

Follows the reference implementation's ``NetworkCIFAR`` (``cnn/model.py`` and
``cnn/operations.py`` of the DARTS code), so that parameter counts match it exactly:

* stem: 3x3 conv to ``3C`` channels and BatchNorm;
* ``layers`` cells, reduction cells (stride 2, channels doubled) at ``layers//3`` and
  ``2*layers//3``; each cell preprocesses its two inputs to ``C`` channels (ReLU, 1x1
  conv, BN; ``FactorizedReduce`` for the older input when the previous cell reduced) and
  outputs the concatenation of its intermediate nodes (``nodes * C`` channels);
* ops: ``sep_conv_kxk`` is (ReLU, depthwise kxk, pointwise 1x1, BN) twice, the first
  depthwise conv strided; ``dil_conv_kxk`` is ReLU, depthwise kxk with dilation 2,
  pointwise 1x1, BN; ``skip_connect`` is the identity, or ``FactorizedReduce`` (ReLU, two
  1x1 stride-2 convs on the input and on it shifted by one pixel, concatenated, BN) on
  stride-2 edges; pools are 3x3 with padding 1 (``avg_pool`` excludes the padding);
* global average pooling and a linear classifier; optionally the auxiliary head after
  the second reduction cell (ReLU, 5x5 average pool with stride 3, 1x1 conv to 128, BN,
  ReLU, conv to 768 over the remaining window, BN, ReLU, linear).

Convolutions have no bias, BatchNorm is affine with running statistics (PyTorch's
momentum 0.1 and epsilon 1e-5). ``ndim=1`` builds the same network for 1D signals.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasjax.nets.layers import Conv, DepthwiseConv, ReLUConvBN, avg_pool, batch_norm, max_pool

OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""Candidate ops of a relaxed edge, in the reference order (``PRIMITIVES``)."""

GENOTYPE_OPS: tuple[str, ...] = OPS[1:]
"""Ops a discrete genotype can choose (all but ``none``); genotype op values index this."""

STEM_MULTIPLIER = 3
AUX_NAME = "auxiliary_head"


def shift_by_one(x: jnp.ndarray) -> jnp.ndarray:
    """``x[:, 1:, 1:]`` (every spatial axis), zero-padded at the end back to even size, so
    that both halves of ``FactorizedReduce`` have ``ceil(size / 2)`` positions."""
    ndim = x.ndim - 2
    x = x[(slice(None),) + (slice(1, None),) * ndim]
    pad = [(0, 0)] + [(0, (n + 1) % 2) for n in x.shape[1:-1]] + [(0, 0)]
    return jnp.pad(x, pad)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs of ``features // 2`` channels."""

    features: int
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.relu(x)
        half = self.features // 2
        a = Conv(half, 1, 2, ndim=self.ndim, name="conv_1")(x)
        b = Conv(self.features - half, 1, 2, ndim=self.ndim, name="conv_2")(shift_by_one(x))
        return batch_norm(train)(jnp.concatenate([a, b], axis=-1))


class DilConv(nn.Module):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BatchNorm."""

    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        padding = self.dilation * (self.kernel - 1) // 2
        x = DepthwiseConv(self.kernel, self.stride, padding, self.dilation, self.ndim)(nn.relu(x))
        x = Conv(self.features, 1, ndim=self.ndim)(x)
        return batch_norm(train)(x)


class SepConv(nn.Module):
    """Two ``DilConv`` blocks without dilation; only the first is strided."""

    features: int
    kernel: int
    stride: int = 1
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = DilConv(x.shape[-1], self.kernel, self.stride, 1, self.ndim)(x, train)
        return DilConv(self.features, self.kernel, 1, 1, self.ndim)(x, train)


def op_module(op: str, features: int, stride: int, ndim: int, name: str) -> nn.Module | None:
    """The Flax module of a parametric op, or ``None`` for a parameter-free one."""
    if op == "skip_connect":
        return FactorizedReduce(features, ndim, name=name) if stride == 2 else None
    if op.startswith("sep_conv_"):
        return SepConv(features, int(op[-1]), stride, ndim, name=name)
    if op.startswith("dil_conv_"):
        return DilConv(features, int(op[-1]), stride, 2, ndim, name=name)
    return None


def pool_op(op: str, x: jnp.ndarray, stride: int) -> jnp.ndarray:
    """``max_pool_3x3`` / ``avg_pool_3x3`` (padding 1, excluded from the average)."""
    if op == "max_pool_3x3":
        return max_pool(x, 3, stride, 1)
    return avg_pool(x, 3, stride, 1, include_pad=False)


def drop_path(x: jnp.ndarray, rate: float | jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Drops whole examples' paths with probability ``rate``, scaling the kept ones."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class EvalCell(nn.Module):
    """One cell of the evaluation network with the ops of ``pairs``.

    Attributes:
      pairs: ``2 * nodes`` ``(op name, input state)`` pairs.
      features: ``C`` of this cell (doubled in reduction cells by the caller).
      reduction: stride 2 on the edges from the two input states.
      reduction_prev: the previous cell reduced (state 0 has twice the resolution).
      ndim: spatial dimensions.
    """

    pairs: tuple[tuple[str, int], ...]
    features: int
    reduction: bool
    reduction_prev: bool
    ndim: int = 2

    @nn.compact
    def __call__(
        self, s0: jnp.ndarray, s1: jnp.ndarray, train: bool, drop_rate: Any = 0.0
    ) -> jnp.ndarray:
        c = self.features
        if self.reduction_prev:
            s0 = FactorizedReduce(c, self.ndim, name="preprocess0")(s0, train)
        else:
            s0 = ReLUConvBN(c, ndim=self.ndim, name="preprocess0")(s0, train)
        s1 = ReLUConvBN(c, ndim=self.ndim, name="preprocess1")(s1, train)
        states = [s0, s1]
        dropping = train and not (isinstance(drop_rate, (int, float)) and drop_rate == 0)
        for node in range(len(self.pairs) // 2):
            total = 0.0
            for j in range(2):
                op, src = self.pairs[2 * node + j]
                stride = 2 if self.reduction and src < 2 else 1
                module = op_module(op, c, stride, self.ndim, f"node_{node}_{j}_{op}")
                x = states[src]
                if module is not None:
                    h = module(x, train)
                elif op == "skip_connect":
                    h = x
                else:
                    h = pool_op(op, x, stride)
                if dropping and not (op == "skip_connect" and stride == 1):
                    h = drop_path(h, drop_rate, self.make_rng("dropout"))
                total = total + h
            states.append(total)
        return jnp.concatenate(states[2:], axis=-1)


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier (``AuxiliaryHeadCIFAR``), for any input resolution."""

    num_classes: int
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.relu(x)
        if min(x.shape[1:-1]) >= 5:
            x = avg_pool(x, 5, stride=3)
        x = nn.relu(batch_norm(train)(Conv(128, 1, ndim=self.ndim)(x)))
        window = x.shape[1]  # square inputs: the remaining window (2 for CIFAR-10)
        x = nn.relu(batch_norm(train)(Conv(768, window, ndim=self.ndim)(x)))
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class DartsNetwork(nn.Module):
    """The DARTS evaluation network of one genotype.

    Called as ``apply(variables, x, train=False, drop_rate=0.0)`` and returns logits. With
    ``auxiliary`` and ``train``, the auxiliary logits are sown as
    ``intermediates/auxiliary_logits`` (pass ``mutable=["batch_stats", "intermediates"]``);
    the auxiliary head's parameters live under ``auxiliary_head`` and are excluded from
    the parameter count (:func:`count_params_no_aux`), as in the paper. ``drop_rate`` > 0
    in training applies drop-path to every non-identity op (needs a ``dropout`` rng).

    Attributes:
      num_classes: classifier outputs.
      genotype: the ``int32[8 * nodes]`` genotype of :class:`DartsSpace` as a tuple.
      channels: ``C`` of the first stage (36 in the paper).
      layers: number of cells (20 in the paper).
      auxiliary: build the auxiliary head.
      nodes: intermediate nodes per cell.
      ndim: 2 for images ``[B, H, W, C]``, 1 for signals ``[B, L, C]``.
    """

    num_classes: int
    genotype: tuple[int, ...]
    channels: int = 36
    layers: int = 20
    auxiliary: bool = False
    nodes: int = 4
    ndim: int = 2

    @property
    def cells_per_stage(self) -> int | None:
        """``N`` when ``layers = 3N + 2`` (N normal cells per stage), else ``None``."""
        return (self.layers - 2) // 3 if self.layers % 3 == 2 else None

    def _pairs(self, cell: int) -> tuple[tuple[str, int], ...]:
        n = 4 * self.nodes
        g = self.genotype[cell * n : (cell + 1) * n]
        return tuple((GENOTYPE_OPS[g[k + 1]], g[k]) for k in range(0, n, 2))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, drop_rate: Any = 0.0) -> jnp.ndarray:
        """Logits for a batch ``x`` (channels last)."""
        c = STEM_MULTIPLIER * self.channels
        s = batch_norm(train, name="stem_bn")(Conv(c, 3, 1, 1, self.ndim, name="stem_conv")(x))
        s0 = s1 = s
        c = self.channels
        reduction_prev = False
        reductions = (self.layers // 3, 2 * self.layers // 3)
        for i in range(self.layers):
            reduction = i in reductions
            c = 2 * c if reduction else c
            cell = EvalCell(
                self._pairs(int(reduction)),
                c,
                reduction,
                reduction_prev,
                self.ndim,
                name=f"cell_{i}",
            )
            s0, s1 = s1, cell(s0, s1, train, drop_rate)
            reduction_prev = reduction
            if self.auxiliary and i == reductions[1]:
                head = AuxiliaryHead(self.num_classes, self.ndim, name=AUX_NAME)
                if train or self.is_initializing():
                    self.sow("intermediates", "auxiliary_logits", head(s1, train))
        out = jnp.mean(s1, axis=tuple(range(1, 1 + self.ndim)))
        return nn.Dense(self.num_classes, name="classifier")(out)


def count_params_no_aux(params: Any) -> int:
    """Parameters of a ``DartsNetwork`` without the auxiliary head (the paper's count)."""
    params = {k: v for k, v in params.items() if k != AUX_NAME}
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)))
