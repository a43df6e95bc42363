"""Structured (channel) pruning from L1-magnitude importance, with traced keep-ratios.

Filter importance is the L1 norm of a filter's weights (Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017). Channels that are summed together -- the outputs of the
layers writing into one residual stream, as in the NAS-Bench-201 cell -- share one
importance (the sum of their filters' norms) and one ranking, so every layer writing into
the stream keeps a *prefix* of the same ranking. The channels alive after a sum are then
exactly the largest prefix, which makes the cost of a pruned network a function of the
genotype alone (:mod:`nasjax.compression.costs`). APQ (Wang et al., CVPR 2020) searches
such channel numbers jointly with the architecture and the bit-widths.

The number of kept channels may be a traced value: masks are computed by ranking, never by
slicing, so a population with different keep-ratios runs in one compiled program.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError


def l1_importance(kernel: jax.Array) -> jax.Array:
    """``float[out]``: the L1 norm of each output filter of a ``[..., in, out]`` kernel."""
    return jnp.sum(jnp.abs(kernel), axis=tuple(range(kernel.ndim - 1)))


def kept_channels(keep_ratio: float, channels: int) -> int:
    """How many of ``channels`` a keep-ratio keeps: ``floor(keep_ratio * channels)``.

    Raises:
      NasjaxError: for a ratio outside ``(0, 1]`` or one that would remove every channel.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise NasjaxError(f"keep-ratio {keep_ratio} is outside (0, 1]")
    kept = math.floor(keep_ratio * channels + 1e-9)
    if kept < 1:
        raise NasjaxError(
            f"keep-ratio {keep_ratio} removes every one of {channels} channels; "
            f"the smallest valid keep-ratio for {channels} channels is {1 / channels:g}"
        )
    return kept


def kept_count(keep_ratio: jax.Array, channels: int) -> jax.Array:
    """Traced ``floor(keep_ratio * channels)`` (``int32``); see :func:`kept_channels`."""
    return jnp.floor(jnp.asarray(keep_ratio, jnp.float32) * channels + 1e-6).astype(jnp.int32)


def channel_rank(importance: jax.Array) -> jax.Array:
    """``int32[C]``: 0 for the most important channel, ties broken by the lower index."""
    order = jnp.argsort(-jax.lax.stop_gradient(importance), stable=True)
    ranks = jnp.arange(importance.size, dtype=jnp.int32)
    return jnp.zeros(importance.shape, jnp.int32).at[order].set(ranks)


def top_k_mask(importance: jax.Array, count: jax.Array) -> jax.Array:
    """``float[C]`` mask keeping the ``count`` most important channels (``count`` traced)."""
    return (channel_rank(importance) < count).astype(jnp.float32)


def mask_from_rank(rank: jax.Array, count: jax.Array) -> jax.Array:
    """``float[C]`` mask of the ``count`` best channels of a precomputed :func:`channel_rank`."""
    return (rank < count).astype(jnp.float32)


def prune_kernel(
    kernel: jax.Array, out_mask: jax.Array, in_mask: jax.Array | None = None
) -> jax.Array:
    """The kernel with masked output (and input) channels set to zero."""
    kernel = kernel * out_mask
    if in_mask is not None:
        kernel = kernel * in_mask[:, None]
    return kernel
