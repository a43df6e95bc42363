"""Convolution written as slices and one matrix product (im2col); separable pooling.

Why not ``flax.linen.Conv``: on XLA:CPU a native convolution inside a loop body
(``lax.scan``, ``lax.map``, ``fori_loop``) runs several times slower than the same
convolution at the top level of a program (jax-ml/jax#12868; measured here: 3.8 ms vs
0.55 ms for a 3-tap conv step), and nasjax trains every network inside ``lax.scan``.
Gathering the ``k`` shifted windows and multiplying once by the flattened kernel is as fast
as the native op outside loops and keeps that speed inside them; on accelerators it is one
GEMM. Kernels have flax's layout ``(*window, in_features, out_features)`` and initialiser,
so parameter counts and shapes are those of ``nn.Conv``. Pooling is not a convolution and
keeps its speed inside loops as a 1D ``reduce_window`` per spatial axis (``avg_pool``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _windows(
    x: jnp.ndarray, window: Sequence[int], stride: int, padding: Sequence[int]
) -> tuple[list[jnp.ndarray], tuple[int, ...]]:
    """The shifted strided views of ``x`` (channels last) covering each window offset."""
    ndim = len(window)
    x = jnp.pad(x, [(0, 0)] + [(p, p) for p in padding] + [(0, 0)])
    out = tuple((x.shape[1 + d] - window[d]) // stride + 1 for d in range(ndim))
    views = []
    for offset in itertools.product(*(range(k) for k in window)):
        index = tuple(slice(o, o + (n - 1) * stride + 1, stride) for o, n in zip(offset, out))
        views.append(x[(slice(None),) + index])
    return views, out


def conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int = 1, padding: int = 0) -> jnp.ndarray:
    """Cross-correlation of channels-last ``x`` with ``kernel[*window, in, out]`` (im2col).

    Equals ``lax.conv_general_dilated`` with symmetric ``padding`` on every spatial axis.
    """
    ndim = x.ndim - 2
    window = kernel.shape[:ndim]
    views, _ = _windows(x, window, stride, (padding,) * ndim)
    columns = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
    return columns @ kernel.reshape(-1, kernel.shape[-1]).astype(x.dtype)


def _window_counts(size: int, window: int, stride: int, padding: int) -> np.ndarray:
    """Real (unpadded) inputs in each window along one axis of length ``size``."""
    starts = np.arange((size + 2 * padding - window) // stride + 1) * stride - padding
    return (np.minimum(starts + window, size) - np.maximum(starts, 0)).astype(np.float32)


def avg_pool(
    x: jnp.ndarray, window: int, stride: int = 1, padding: int = 0, include_pad: bool = False
) -> jnp.ndarray:
    """Average pooling over every spatial axis of channels-last ``x``.

    ``include_pad=False`` divides by the number of real (unpadded) inputs in each window,
    as PyTorch's ``AvgPool(count_include_pad=False)``.

    Non-overlapping windows without padding (``stride == window``, the reduction blocks'
    shortcut) sum strided slices; other pools sum one spatial axis at a time with a 1D
    ``reduce_window`` (separable: 2 * 3 adds instead of 9 for a 3x3 window). Measured on
    XLA:CPU inside a ``lax.scan``, forward and backward: 4x faster than summing padded
    slices for NB201's 1D 3-wide pool, 6-8x for the 2D 3x3 one (CIFAR sizes).
    """
    ndim = x.ndim - 2
    if stride == window and padding == 0:
        views, _ = _windows(x, (window,) * ndim, stride, (padding,) * ndim)
        return sum(views[1:], views[0]) / window**ndim
    total = x
    counts = np.ones((1,) * x.ndim, np.float32)
    for axis in range(1, ndim + 1):
        dims, strides, pads = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
        dims[axis], strides[axis], pads[axis] = window, stride, (padding, padding)
        total = jax.lax.reduce_window(total, 0.0, jax.lax.add, dims, strides, pads)
        along = _window_counts(x.shape[axis], window, stride, padding)
        counts = counts * along.reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    if include_pad or padding == 0:
        return total / window**ndim
    return total / jnp.asarray(counts, x.dtype)


class Conv(nn.Module):
    """A bias-free convolution with flax's kernel layout, computed by ``conv`` (im2col)."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (self.kernel_size,) * self.ndim + (x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        return conv(x, kernel, self.stride, self.padding)


# ------------------------------------------------------------------ DARTS-space additions
# Depthwise (optionally dilated) convolution and pooling for the separable and dilated
# convolutions and pools of the DARTS space (Liu et al., ICLR 2019). Unlike ``conv``, these
# are single XLA ops (``conv_general_dilated`` with one group per channel,
# ``reduce_window``): a DARTS supernet has 8 ops on each of 14 edges per cell, and the
# im2col form (one slice per window tap) made its programs too large to compile quickly.


BN_MOMENTUM = 0.9
"""BatchNorm running-statistics momentum in flax's convention (PyTorch's ``momentum=0.1``,
as the NAS-Bench-201 and DARTS reference code train)."""
BN_EPSILON = 1e-5
"""BatchNorm epsilon of the reference code (PyTorch's default)."""


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """``nn.BatchNorm`` with the reference code's (PyTorch's) momentum and epsilon."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


class ReLUConvBN(nn.Module):
    """ReLU -> conv (no bias, ``kernel // 2`` padding) -> BatchNorm: NAS-Bench-201's
    convolution op and DARTS's preprocessing layer."""

    features: int
    kernel: int = 1
    stride: int = 1
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = Conv(self.features, self.kernel, self.stride, self.kernel // 2, self.ndim)
        return batch_norm(train)(conv(nn.relu(x)))


def _spatial_config(ndim: int, window: int, stride: int, padding: int) -> tuple:
    dims = (1,) + (window,) * ndim + (1,)
    strides = (1,) + (stride,) * ndim + (1,)
    pads = ((0, 0),) + ((padding, padding),) * ndim + ((0, 0),)
    return dims, strides, pads


def depthwise_conv(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> jnp.ndarray:
    """Depthwise cross-correlation of channels-last ``x`` with ``kernel[*window, C]``.

    Each channel is filtered by its own window (PyTorch's ``Conv(groups=C)``), with
    ``dilation`` between taps and symmetric ``padding`` on every spatial axis.
    ``nasjax.objectives.count_macs`` counts ``window_size * C`` MACs per output position.
    """
    ndim = x.ndim - 2
    spatial = "HW"[:ndim] if ndim <= 2 else "DHW"[-ndim:]
    numbers = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    rhs = kernel.reshape(kernel.shape[:ndim] + (1, kernel.shape[-1])).astype(x.dtype)
    return jax.lax.conv_general_dilated(
        x,
        rhs,
        window_strides=(stride,) * ndim,
        padding=[(padding, padding)] * ndim,
        rhs_dilation=(dilation,) * ndim,
        dimension_numbers=numbers,
        feature_group_count=x.shape[-1],
    )


def max_pool(x: jnp.ndarray, window: int, stride: int = 1, padding: int = 0) -> jnp.ndarray:
    """Max pooling over every spatial axis of channels-last ``x``; padding never wins
    (PyTorch's ``MaxPool`` pads with -inf)."""
    dims, strides, pads = _spatial_config(x.ndim - 2, window, stride, padding)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pads)


def avg_pool_window(
    x: jnp.ndarray, window: int, stride: int = 1, padding: int = 0, include_pad: bool = False
) -> jnp.ndarray:
    """``avg_pool`` as one ``reduce_window`` (the same values; a smaller program)."""
    dims, strides, pads = _spatial_config(x.ndim - 2, window, stride, padding)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pads)
    if include_pad or padding == 0:
        return total / window ** (x.ndim - 2)
    ones = np.ones((1,) + x.shape[1:-1] + (1,), np.float32)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, pads)
    return total / jnp.asarray(count, x.dtype)


class DepthwiseConv(nn.Module):
    """A bias-free depthwise (optionally dilated) convolution, kernel ``[*window, C]``.

    Parameter count ``kernel_size**ndim * C``, as PyTorch's ``Conv(C, C, groups=C)``.
    """

    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    ndim: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (self.kernel_size,) * self.ndim + (x.shape[-1],)
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=tuple(range(self.ndim)), out_axis=-1
        )
        kernel = self.param("kernel", init, shape)
        return depthwise_conv(x, kernel, self.stride, self.padding, self.dilation)
