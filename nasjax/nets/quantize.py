"""Fake quantization with straight-through gradients, for quantization-aware training.

* Weights: symmetric, per output channel (the last axis of a flax-layout kernel), scale
  ``max|w_c| / (2^(b-1) - 1)`` -- the scheme HAQ (Wang et al., CVPR 2019) searches over and
  Jacob et al. (CVPR 2018) train with. The gradient passes straight through (Bengio et
  al. 2013).
* Activations: per tensor, with a *range* ``r`` that is either calibrated (a running
  maximum of ``|x|`` kept with the BatchNorm statistics, or one calibration batch for
  post-training quantization) or learned: the clipped-rounding form below gives ``r`` the
  gradient of LSQ (Esser et al., ICLR 2020) inside the range and of PACT (Choi et al.
  2018) outside it.

Bit-widths are *traced* values (``jnp`` scalars), so one compiled program serves a whole
population with different per-layer bits (``vmap``/``lax.map``). ``bits >= 32`` means full
precision: the input is returned unchanged. :func:`mixed_quantize` is the weighted sum over
candidate bit-widths used by the differentiable search of Wu et al. (2018).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

FULL_PRECISION = 32
"""A bit-width ``>= FULL_PRECISION`` leaves values unquantized (32-bit float)."""


def ste_round(x: jax.Array) -> jax.Array:
    """``round(x)`` in the forward pass, identity gradient (straight-through estimator)."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _levels(bits: jax.Array, signed: bool) -> jax.Array:
    """Largest integer level: ``2^(b-1) - 1`` signed (symmetric), ``2^b - 1`` unsigned.

    Exact for traced bits: ``ldexp`` on an integer exponent, not ``exp2`` (XLA's CPU
    ``exp2`` is a polynomial that misses powers of two by an ulp for some exponents and
    SIMD widths, which would move every quantization step of a traced bit-width).
    """
    exponent = jnp.minimum(jnp.asarray(bits), FULL_PRECISION).astype(jnp.int32)
    return jnp.ldexp(jnp.float32(1.0), exponent - 1 if signed else exponent) - 1.0


def quantize_with_scale(
    x: jax.Array, scale: jax.Array, bits: jax.Array, signed: bool = True
) -> jax.Array:
    """Rounds ``x`` to the grid ``scale * k`` with integer ``k`` in range, STE gradient.

    ``k`` lies in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (signed, symmetric) or ``[0, 2^b-1]``.
    A value already on the grid is returned exactly (idempotence). ``scale`` broadcasts
    against ``x`` (per channel or per tensor) and must be positive.
    """
    top = _levels(bits, signed)
    k = jnp.clip(jnp.round(x / scale), -top if signed else 0.0, top)
    q = k * scale
    quantized = x + jax.lax.stop_gradient(q - x)
    return jnp.where(jnp.asarray(bits) >= FULL_PRECISION, x, quantized)


def weight_scale(kernel: jax.Array, bits: jax.Array) -> jax.Array:
    """Per-output-channel scale ``max|w_c| / (2^(b-1) - 1)`` of a ``[..., out]`` kernel.

    All-zero channels get scale 1 (they quantize to zero exactly).
    """
    axes = tuple(range(kernel.ndim - 1))
    peak = jax.lax.stop_gradient(jnp.max(jnp.abs(kernel), axis=axes))
    return jnp.where(peak > 0, peak, 1.0) / _levels(bits, True)


def quantize_weight(kernel: jax.Array, bits: jax.Array) -> jax.Array:
    """Symmetric per-channel fake quantization of a kernel; STE gradient.

    The error is at most half a step, ``max|w_c| / (2 (2^(b-1) - 1))``, per element.
    """
    return quantize_with_scale(kernel, weight_scale(kernel, bits), bits, signed=True)


def quantize_activation(
    x: jax.Array, bits: jax.Array, clip: jax.Array, signed: bool = False
) -> jax.Array:
    """Per-tensor fake quantization of activations to ``bits`` over ``[-clip, clip]``
    (``signed``) or ``[0, clip]``.

    Values beyond the range saturate. Gradients: ``x`` gets 1 inside the range and 0
    outside (clipped straight-through); ``clip`` gets ``round(u L)/L - u`` inside (LSQ)
    and ``+-1`` outside (PACT), so a range can be learned; pass a stop-gradient range
    for a calibrated one.
    """
    clip = jnp.maximum(clip, 1e-8)
    top = _levels(bits, signed)
    u = jnp.clip(x / clip, -1.0 if signed else 0.0, 1.0)
    q = clip * ste_round(u * top) / top
    return jnp.where(jnp.asarray(bits) >= FULL_PRECISION, x, q)


def running_range(old: jax.Array, x: jax.Array, momentum: float = 0.9) -> jax.Array:
    """Calibrated range: ``max|x|`` of this batch folded into a running average.

    A range of 0 (never calibrated) is replaced by the batch value.
    """
    batch = jax.lax.stop_gradient(jnp.max(jnp.abs(x)))
    return jnp.where(old > 0, momentum * old + (1.0 - momentum) * batch, batch)


def mixed_quantize(
    quantize: Callable[[jax.Array], jax.Array],
    weights: jax.Array,
    choices: Sequence[int],
) -> jax.Array:
    """``sum_i weights[i] * quantize(choices[i])`` (Wu et al. 2018's mixed quantizer).

    With hard straight-through Gumbel samples as ``weights`` the value is that of the
    sampled bit-width while every candidate's logit receives a gradient.

    Args:
      quantize: ``bits -> quantized tensor``.
      weights: ``float[K]`` over the candidates.
      choices: the ``K`` candidate bit-widths.
    """
    outs = [weights[i] * quantize(jnp.float32(b)) for i, b in enumerate(choices)]
    return sum(outs[1:], outs[0])
