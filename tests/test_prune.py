"""Channel pruning: L1 importance, top-k masks with traced counts, keep-ratio errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.nets.prune import (
    channel_rank,
    kept_channels,
    kept_count,
    l1_importance,
    prune_kernel,
    top_k_mask,
)


def test_l1_importance_is_the_filter_norm():
    kernel = jnp.arange(24.0).reshape(2, 3, 4) - 10.0
    np.testing.assert_allclose(l1_importance(kernel), np.abs(np.asarray(kernel)).sum((0, 1)))


@pytest.mark.parametrize("count", [1, 3, 5, 8])
def test_mask_keeps_exactly_the_most_important_channels(count):
    importance = jnp.array([0.3, 2.0, 0.1, 5.0, 0.7, 1.5, 0.05, 0.9])
    mask = np.asarray(top_k_mask(importance, count))
    assert mask.sum() == count
    kept = set(np.flatnonzero(mask))
    assert kept == set(np.argsort(-np.asarray(importance))[:count])


def test_ties_break_to_the_lower_index_and_ranks_are_a_permutation():
    rank = np.asarray(channel_rank(jnp.array([1.0, 2.0, 1.0, 2.0])))
    np.testing.assert_array_equal(rank, [2, 0, 3, 1])


def test_traced_counts_under_vmap():
    importance = jnp.array([0.3, 2.0, 0.1, 5.0])
    masks = jax.jit(jax.vmap(top_k_mask, in_axes=(None, 0)))(importance, jnp.arange(1, 5))
    np.testing.assert_array_equal(np.asarray(masks).sum(1), [1, 2, 3, 4])
    np.testing.assert_array_equal(masks[0], [0, 0, 0, 1])


def test_pruned_kernel_removes_exactly_the_masked_channels():
    kernel = jax.random.normal(jax.random.key(0), (3, 4, 6))
    out_mask = top_k_mask(l1_importance(kernel), 2)
    in_mask = jnp.array([1.0, 0.0, 1.0, 1.0])
    pruned = np.asarray(prune_kernel(kernel, out_mask, in_mask))
    zero_out = np.flatnonzero(np.all(pruned == 0, axis=(0, 1)))
    np.testing.assert_array_equal(zero_out, np.flatnonzero(np.asarray(out_mask) == 0))
    assert np.all(pruned[:, 1, :] == 0)
    kept = np.asarray(out_mask) == 1
    np.testing.assert_array_equal(pruned[:, [0, 2, 3]][..., kept], kernel[:, [0, 2, 3]][..., kept])


@pytest.mark.parametrize(("ratio", "channels", "kept"), [(0.25, 16, 4), (0.75, 8, 6), (1, 3, 3)])
def test_kept_channels(ratio, channels, kept):
    assert kept_channels(ratio, channels) == kept
    assert int(kept_count(jnp.float32(ratio), channels)) == kept


@pytest.mark.parametrize(
    ("ratio", "channels", "message"),
    [(0.25, 2, "removes every one of 2 channels"), (0.0, 8, "outside"), (1.5, 8, "outside")],
)
def test_bad_keep_ratios(ratio, channels, message):
    with pytest.raises(NasjaxError, match=message):
        kept_channels(ratio, channels)
