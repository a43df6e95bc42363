"""Tests for nasjax.nets.layers: im2col ``conv`` / ``avg_pool`` against references, ``Conv``."""

from __future__ import annotations

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.nets.layers import Conv, avg_pool, conv

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
_SPATIAL = {1: (11,), 2: (7, 6)}  # odd and even sizes, so strided outputs floor


def _rng(seed=0):
    return np.random.default_rng(seed)


def _lax_conv(x, kernel, stride, padding):
    ndim = x.ndim - 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride,) * ndim,
        padding=[(padding, padding)] * ndim,
        dimension_numbers=_DIMENSION_NUMBERS[ndim],
        precision=jax.lax.Precision.HIGHEST,
    )


# ------------------------------------------------------------------ conv


@functools.partial(jax.jit, static_argnums=(3, 4))
def _conv_and_reference(x, kernel, cotangent, stride, padding):
    """(im2col output, lax output, im2col grads, lax grads) in one compiled program."""

    def loss(f):
        return lambda x, k: jnp.sum(f(x, k, stride, padding) * cotangent)

    return (
        conv(x, kernel, stride, padding),
        _lax_conv(x, kernel, stride, padding),
        jax.grad(loss(conv), (0, 1))(x, kernel),
        jax.grad(loss(_lax_conv), (0, 1))(x, kernel),
    )


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize(
    "kernel_size,stride,padding",
    [(1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (3, 1, 0), (2, 2, 1)],
)
def test_conv_matches_lax_conv_and_its_gradients(ndim, kernel_size, stride, padding):
    rng = _rng(ndim * 100 + kernel_size * 10 + stride + padding)
    spatial = _SPATIAL[ndim]
    out_spatial = tuple((n + 2 * padding - kernel_size) // stride + 1 for n in spatial)
    x = jnp.asarray(rng.normal(size=(2, *spatial, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size,) * ndim + (3, 5)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, *out_spatial, 5)), jnp.float32)

    got, want, grad_got, grad_want = _conv_and_reference(x, kernel, cotangent, stride, padding)
    chex.assert_shape([got, want], (2, *out_spatial, 5))
    chex.assert_trees_all_close(got, want, atol=1e-4, rtol=1e-5)
    chex.assert_trees_all_close(grad_got, grad_want, atol=1e-4, rtol=1e-5)


def test_conv_eager_equals_jit_and_scan():
    """The eager call, a jitted call and a call inside ``lax.scan`` give the same result."""
    rng = _rng(2)
    xs = jnp.asarray(rng.normal(size=(3, 2, 9, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 4, 4)), jnp.float32)
    eager = conv(xs[0], kernel, 1, 1)
    chex.assert_trees_all_close(eager, _lax_conv(xs[0], kernel, 1, 1), atol=1e-4, rtol=1e-5)

    def step(carry, x):
        return carry, conv(x, kernel, 1, 1)

    _, scanned = jax.jit(lambda xs: jax.lax.scan(step, 0, xs))(xs)
    chex.assert_shape(scanned, (3, 2, 9, 4))
    chex.assert_trees_all_close(scanned[0], eager, atol=1e-5, rtol=1e-5)
    for i in (1, 2):
        want = _lax_conv(xs[i], kernel, 1, 1)
        chex.assert_trees_all_close(scanned[i], want, atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------ avg_pool


def _numpy_avg_pool(x, window, stride, padding, include_pad):
    """Reference average pool over the spatial axes of channels-last ``x`` by explicit loops."""
    x = np.asarray(x, np.float64)
    spatial = x.shape[1:-1]
    out_shape = tuple((n + 2 * padding - window) // stride + 1 for n in spatial)
    out = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
    for pos in itertools.product(*(range(n) for n in out_shape)):
        starts = [p * stride - padding for p in pos]
        lo = [max(s, 0) for s in starts]
        hi = [min(s + window, n) for s, n in zip(starts, spatial)]
        block = x[(slice(None), *(slice(a, b) for a, b in zip(lo, hi)), slice(None))]
        axes = tuple(range(1, 1 + len(spatial)))
        total = block.sum(axis=axes)
        count = (
            window ** len(spatial) if include_pad else int(np.prod([b - a for a, b in zip(lo, hi)]))
        )
        out[(slice(None), *pos, slice(None))] = total / count
    return out


_avg_pool_jit = jax.jit(avg_pool, static_argnums=(1, 2, 3, 4))


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize(
    "window,stride,padding,include_pad",
    [(3, 1, 1, False), (3, 2, 1, False), (2, 1, 1, False), (3, 1, 0, False), (3, 1, 1, True)],
)
def test_avg_pool_matches_numpy_reference(ndim, window, stride, padding, include_pad):
    x = _rng(ndim + window + stride).normal(size=(2, *_SPATIAL[ndim], 3)).astype(np.float32)
    got = _avg_pool_jit(jnp.asarray(x), window, stride, padding, include_pad)
    want = _numpy_avg_pool(x, window, stride, padding, include_pad)
    chex.assert_shape(got, want.shape)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_avg_pool_excludes_padding_at_borders():
    """A constant input stays constant when padding is excluded; corners shrink if included."""
    x = jnp.full((1, 5, 5, 2), 3.0)
    chex.assert_trees_all_close(avg_pool(x, 3, stride=1, padding=1), x)
    with_pad = avg_pool(x, 3, stride=1, padding=1, include_pad=True)
    chex.assert_trees_all_close(with_pad[0, 0, 0], jnp.full((2,), 3.0 * 4 / 9))
    chex.assert_trees_all_close(with_pad[0, 2, 2], jnp.full((2,), 3.0))


@pytest.mark.parametrize("ndim", [1, 2])
def test_avg_pool_stride_two_no_padding_is_block_mean(ndim):
    x = _rng(5).normal(size=(3, *(8,) * ndim, 4)).astype(np.float32)
    got = avg_pool(jnp.asarray(x), 2, stride=2)
    if ndim == 1:
        want = x.reshape(3, 4, 2, 4).mean(axis=2)
    else:
        want = x.reshape(3, 4, 2, 4, 2, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ Conv module


@pytest.mark.parametrize(
    "ndim,kernel_size,stride,padding", [(1, 3, 2, 1), (2, 1, 1, 0), (2, 3, 1, 1)]
)
def test_conv_module_params_and_output(ndim, kernel_size, stride, padding):
    module = Conv(5, kernel_size, stride=stride, padding=padding, ndim=ndim)
    rng = _rng(7)
    x = jnp.asarray(rng.normal(size=(2, *_SPATIAL[ndim], 3)), jnp.float32)
    # shapes only: compiling flax's lecun_normal initialiser is slow and is not under test
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    assert set(shapes) == {"params"}
    assert set(shapes["params"]) == {"kernel"}  # no bias
    kernel_shape = (kernel_size,) * ndim + (3, 5)
    chex.assert_shape(shapes["params"]["kernel"], kernel_shape)

    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    out = module.apply({"params": {"kernel": kernel}}, x)
    chex.assert_trees_all_close(out, _lax_conv(x, kernel, stride, padding), atol=1e-4, rtol=1e-5)
