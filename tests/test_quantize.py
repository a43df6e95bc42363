"""Fake quantization: error bounds, idempotence at the grid, STE gradients, traced bits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.nets.quantize import (
    mixed_quantize,
    quantize_activation,
    quantize_weight,
    quantize_with_scale,
    running_range,
    weight_scale,
)


def _kernel(seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (3, 5, 7)) * jnp.arange(1, 8)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_weight_error_at_most_half_a_step_per_channel(bits):
    w = _kernel()
    q = quantize_weight(w, jnp.float32(bits))
    step = np.max(np.abs(np.asarray(w)), axis=(0, 1)) / (2 ** (bits - 1) - 1)
    err = np.abs(np.asarray(q - w))
    assert np.all(err <= step / 2 * (1 + 1e-5))
    levels = np.round(np.asarray(q) / step)
    assert np.all(np.abs(levels) <= 2 ** (bits - 1) - 1)  # symmetric grid
    for c in range(w.shape[-1]):  # at most 2^b - 1 distinct values per channel
        assert len(np.unique(levels[..., c])) <= 2**bits - 1


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_idempotent_exactly_at_the_grid(bits):
    w = _kernel(1)
    scale = weight_scale(w, jnp.float32(bits))
    q = quantize_with_scale(w, scale, jnp.float32(bits))
    np.testing.assert_array_equal(q, quantize_with_scale(q, scale, jnp.float32(bits)))
    # Recomputing the scale from the quantized kernel lands on the same grid.
    np.testing.assert_allclose(quantize_weight(q, jnp.float32(bits)), q, rtol=1e-6, atol=0)


def test_full_precision_is_identity_and_ste_gradient_is_one():
    w = _kernel(2)
    np.testing.assert_array_equal(quantize_weight(w, jnp.float32(32)), w)
    grad = jax.grad(lambda w: jnp.sum(quantize_weight(w, jnp.float32(4)) * 3.0))(w)
    np.testing.assert_allclose(grad, 3.0 * np.ones(w.shape))


def test_two_bit_weights_are_ternary():
    q = np.asarray(quantize_weight(_kernel(3), jnp.float32(2)))
    for c in range(q.shape[-1]):
        assert len(np.unique(q[..., c])) <= 3


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activation_error_bound_and_saturation(bits, signed):
    x = jnp.linspace(-3.0, 3.0, 601)
    clip = jnp.float32(2.0)
    q = np.asarray(quantize_activation(x, jnp.float32(bits), clip, signed))
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    step = 2.0 / top
    lo = -2.0 if signed else 0.0
    inside = (np.asarray(x) >= lo) & (np.asarray(x) <= 2.0)
    assert np.all(np.abs(q[inside] - np.asarray(x)[inside]) <= step / 2 + 1e-6)
    np.testing.assert_allclose(q[np.asarray(x) > 2.0], 2.0)
    np.testing.assert_allclose(q[np.asarray(x) < lo], lo)
    assert len(np.unique(np.round(q / step))) <= (2 * top + 1 if signed else top + 1)


def test_activation_gradients_clipped_ste_and_learned_range():
    x = jnp.array([0.5, 1.0, 3.0, -1.0])
    gx = jax.grad(lambda x: jnp.sum(quantize_activation(x, jnp.float32(4), 2.0)))(x)
    np.testing.assert_array_equal(gx, [1.0, 1.0, 0.0, 0.0])  # zero outside [0, clip]
    g_clip = jax.grad(lambda c: jnp.sum(quantize_activation(jnp.array([5.0]), 4.0, c)))(2.0)
    assert float(g_clip) == pytest.approx(1.0)  # PACT: a saturated value pulls the range up


def test_traced_bits_under_vmap_equal_per_bit_calls():
    w = _kernel(4)
    bits = jnp.array([2.0, 4.0, 8.0, 32.0])
    batched = jax.jit(jax.vmap(quantize_weight, in_axes=(None, 0)))(w, bits)
    for i, b in enumerate(bits):
        np.testing.assert_allclose(batched[i], quantize_weight(w, b), rtol=0, atol=1e-7)


def test_running_range_starts_at_the_batch_max():
    x = jnp.array([[-4.0, 1.0], [2.0, 0.5]])
    r = running_range(jnp.float32(0.0), x)
    assert float(r) == 4.0
    assert float(running_range(r, x * 0.5)) == pytest.approx(0.9 * 4.0 + 0.1 * 2.0)


def test_mixed_quantize_with_a_one_hot_is_that_choice():
    w = _kernel(5)
    choices = (2, 4, 8)
    one_hot = jnp.array([0.0, 1.0, 0.0])
    mixed = mixed_quantize(lambda b: quantize_weight(w, b), one_hot, choices)
    np.testing.assert_allclose(mixed, quantize_weight(w, jnp.float32(4)), atol=1e-7)
