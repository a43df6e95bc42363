"""Tests for nasjax.pareto: ranks, crowding, hypervolume and front recovery (maximised)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.pareto import (
    crowding_distance,
    domination_matrix,
    front_recovery,
    hypervolume_2d,
    igd,
    non_dominated_rank,
    pareto_mask,
)

STAIRCASE = jnp.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
rank_jit = jax.jit(non_dominated_rank)
crowding_jit = jax.jit(crowding_distance)
hv_jit = jax.jit(hypervolume_2d)
mask_jit = jax.jit(pareto_mask)


def brute_force_rank(f):
    """Pareto peeling in plain numpy/python, maximising every column."""
    n = len(f)
    rank = np.full(n, -1)
    remaining = set(range(n))
    r = 0
    while remaining:
        front = [
            j
            for j in remaining
            if not any(np.all(f[i] >= f[j]) and np.any(f[i] > f[j]) for i in remaining)
        ]
        for j in front:
            rank[j] = r
        remaining -= set(front)
        r += 1
    return rank


def brute_force_hypervolume(f, ref):
    """Area of the union of [ref, f_i] rectangles on the grid of all coordinates."""
    f = f[np.all(f > ref, axis=1)]
    if len(f) == 0:
        return 0.0
    xs = np.unique(np.concatenate([[ref[0]], f[:, 0]]))
    ys = np.unique(np.concatenate([[ref[1]], f[:, 1]]))
    area = 0.0
    for x0, x1 in zip(xs[:-1], xs[1:]):
        for y0, y1 in zip(ys[:-1], ys[1:]):
            if np.any((f[:, 0] >= x1) & (f[:, 1] >= y1)):
                area += (x1 - x0) * (y1 - y0)
    return area


# ------------------------------------------------------------------ ranks


def test_staircase_is_one_front():
    chex.assert_trees_all_equal(rank_jit(STAIRCASE), jnp.zeros(3, jnp.int32))
    assert bool(jnp.all(mask_jit(STAIRCASE)))


def test_hand_made_ranks():
    f = jnp.array([[1, 3], [2, 2], [3, 1], [2, 1], [1, 1], [0, 0]], jnp.float32)
    expected = jnp.array([0, 0, 0, 1, 2, 3], jnp.int32)
    chex.assert_trees_all_equal(non_dominated_rank(f), expected)  # eager
    chex.assert_trees_all_equal(rank_jit(f), expected)
    chex.assert_trees_all_equal(mask_jit(f), expected == 0)
    dom = domination_matrix(f)
    assert bool(dom[1, 3]) and bool(dom[2, 3]) and not bool(dom[0, 3])
    assert not bool(jnp.any(jnp.diag(dom)))


def test_duplicates_share_a_rank():
    f = jnp.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    chex.assert_trees_all_equal(rank_jit(f), jnp.array([0, 0, 1, 1, 0], jnp.int32))


def test_invalid_rows_rank_last_and_do_not_dominate():
    f = jnp.array([[1.0, 1.0], [jnp.nan, 9.0], [0.5, 0.5], [9.0, 9.0], [jnp.inf, 0.0]])
    valid = jnp.array([True, True, True, False, True])
    rank = rank_jit(f, valid)
    # row 3 would dominate everything but is marked invalid; NaN and inf rows are invalid.
    chex.assert_trees_all_equal(rank, jnp.array([0, 5, 1, 5, 5], jnp.int32))
    chex.assert_trees_all_equal(mask_jit(f, valid), jnp.array([1, 0, 0, 0, 0], bool))
    all_nan = jnp.full((3, 2), jnp.nan)
    chex.assert_trees_all_equal(rank_jit(all_nan), jnp.full(3, 3, jnp.int32))
    assert not bool(jnp.any(mask_jit(all_nan)))


@pytest.mark.parametrize("m, integer", [(2, False), (2, True), (3, True), (4, False)])
def test_rank_matches_brute_force(m, integer):
    rng = np.random.default_rng(m + 10 * integer)
    for _ in range(3):
        f = rng.integers(0, 4, (40, m)) if integer else rng.normal(size=(40, m))
        f = f.astype(np.float32)
        np.testing.assert_array_equal(np.asarray(rank_jit(f)), brute_force_rank(f))


def test_rank_permutation_invariant_and_vmappable():
    f = jax.random.normal(jax.random.key(0), (5, 30, 2))
    ranks = jax.jit(jax.vmap(non_dominated_rank))(f)
    for i in range(5):
        chex.assert_trees_all_equal(ranks[i], rank_jit(f[i]))
    perm = jax.random.permutation(jax.random.key(1), 30)
    chex.assert_trees_all_equal(rank_jit(f[0][perm]), ranks[0][perm])


# ------------------------------------------------------------------ crowding


def test_crowding_hand_made_two_fronts():
    front0 = [[1, 4], [2, 3], [3, 2], [4, 1]]
    front1 = [[0.5, 2.5], [1.5, 1.5], [2.5, 0.5]]
    f = jnp.array(front1 + front0, jnp.float32)  # fronts interleaved in row order
    rank = rank_jit(f)
    chex.assert_trees_all_equal(rank, jnp.array([1, 1, 1, 0, 0, 0, 0], jnp.int32))
    crowd = crowding_jit(f, rank)
    inf = np.inf
    # front 0: ranges 3 and 3; (2,3): (3-1)/3 + (4-2)/3; (3,2) alike.
    # front 1: ranges 2 and 2; (1.5,1.5): (2.5-0.5)/2 + (2.5-0.5)/2 = 2.
    np.testing.assert_allclose(np.asarray(crowd), [inf, 2.0, inf, inf, 4 / 3, 4 / 3, inf])
    # Each front alone gives the same distances: other fronts never interfere.
    alone = crowding_jit(f[3:], jnp.zeros(4, jnp.int32))
    chex.assert_trees_all_close(alone, crowd[3:])


def test_crowding_small_fronts_degenerate_and_invalid():
    f = jnp.array([[1.0, 1.0], [5.0, 5.0], [2.0, 0.0], [jnp.nan, 0.0]])
    crowd = crowding_jit(f, rank_jit(f))
    # fronts of one or two points are all boundary; the NaN row gets 0.
    np.testing.assert_array_equal(np.asarray(crowd), [np.inf, np.inf, np.inf, 0.0])
    # One front where objective 1 is constant: it adds nothing to interior points.
    flat = jnp.array([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0], [4.0, 1.0]])
    crowd = crowding_jit(flat, jnp.zeros(4, jnp.int32))
    assert float(crowd[1]) == pytest.approx(3 / 4) and float(crowd[2]) == pytest.approx(3 / 4)
    assert bool(jnp.isinf(crowd[0])) and bool(jnp.isinf(crowd[3]))


def test_crowding_duplicates_deterministic_by_index():
    f = jnp.array([[0.0, 2.0], [1.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    crowd = crowding_jit(f, jnp.zeros(4, jnp.int32))
    # sorted by (value, index): the first copy sits between (0,2) and its twin, and so on.
    np.testing.assert_allclose(np.asarray(crowd), [np.inf, 1.0, 1.0, np.inf])
    chex.assert_trees_all_equal(crowding_distance(f, jnp.zeros(4, jnp.int32)), crowd)  # eager


def test_crowding_permutation_invariant_for_distinct_values():
    f = jax.random.normal(jax.random.key(2), (40, 3))
    rank = rank_jit(f)
    crowd = crowding_jit(f, rank)
    perm = jax.random.permutation(jax.random.key(3), 40)
    chex.assert_trees_all_close(crowding_jit(f[perm], rank[perm]), crowd[perm])
    assert bool(jnp.all(crowd > 0))


def test_crowding_bad_rank_shape():
    with pytest.raises(NasjaxError, match=r"rank must have shape \(3,\), got \(2,\)"):
        crowding_distance(STAIRCASE, jnp.zeros(2, jnp.int32))


# ------------------------------------------------------------------ hypervolume


def test_hypervolume_staircase_by_hand():
    # Rectangles [0,1]x[0,3], [0,2]x[0,2], [0,3]x[0,1]: slabs 3*1 + 2*1 + 1*1 = 6.
    assert float(hypervolume_2d(STAIRCASE, jnp.zeros(2))) == pytest.approx(6.0)  # eager
    # Reference (0.5, 0.5): 2.5*0.5 + 1.5*1 + 0.5*1 = 3.25.
    assert float(hv_jit(STAIRCASE, jnp.array([0.5, 0.5]))) == pytest.approx(3.25)
    # Reference (1, 0): the point (1, 3) is not strictly better in objective 0.
    assert float(hv_jit(STAIRCASE, jnp.array([1.0, 0.0]))) == pytest.approx(3.0)


def test_hypervolume_ignores_dominated_duplicate_invalid_points():
    extra = jnp.array([[1.0, 1.0], [2.0, 2.0], [jnp.nan, 10.0], [10.0, 10.0], [-1.0, 5.0]])
    f = jnp.concatenate([STAIRCASE, extra])
    valid = jnp.array([True] * 6 + [False, True])
    assert float(hv_jit(f, jnp.zeros(2), valid)) == pytest.approx(6.0)
    assert float(hv_jit(STAIRCASE, jnp.array([5.0, 5.0]))) == 0.0
    assert float(hypervolume_2d(jnp.zeros((0, 2)), jnp.zeros(2))) == 0.0


def test_hypervolume_matches_brute_force_and_permutations():
    rng = np.random.default_rng(0)
    for trial in range(8):
        f = rng.normal(size=(25, 2)).astype(np.float32)
        if trial % 2:
            f = np.round(f, 1)  # ties in both coordinates
        ref = np.array([-1.0, -0.5], np.float32)
        hv = float(hv_jit(f, ref))
        assert hv == pytest.approx(brute_force_hypervolume(f, ref), rel=1e-5)
        perm = rng.permutation(25)
        assert float(hv_jit(f[perm], ref)) == pytest.approx(hv, rel=1e-6)


def test_hypervolume_needs_two_objectives():
    with pytest.raises(NasjaxError, match=r"exactly 2 objectives.*\(4, 3\)"):
        hypervolume_2d(jnp.zeros((4, 3)), jnp.zeros(3))
    with pytest.raises(NasjaxError, match=r"reference must have shape \(2,\), got \(3,\)"):
        hypervolume_2d(jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(NasjaxError, match=r"valid must have shape \(4,\), got \(3,\)"):
        hypervolume_2d(jnp.zeros((4, 2)), jnp.zeros(2), jnp.ones(3, bool))


# ------------------------------------------------------------------ front recovery and IGD


def test_front_recovery_and_igd():
    true = jnp.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    found = jnp.array([[0.0, 3.0], [2.0, 1.0001], [jnp.nan, 0.0], [0.0, 0.0]])
    assert float(front_recovery(found, true)) == pytest.approx(0.25)
    assert float(front_recovery(found, true, atol=1e-3)) == pytest.approx(0.5)
    assert float(jax.jit(front_recovery)(true, true)) == 1.0
    assert float(front_recovery(jnp.zeros((0, 2)), true)) == 0.0
    # nearest found point of each true point: 0, 1 (to (0,3) or (2,1)), ~0, 1 (to (2,1)).
    assert float(igd(found, true)) == pytest.approx((0 + np.sqrt(2) + 1e-4 + np.sqrt(2)) / 4)
    assert float(igd(true, true)) == 0.0
    assert float(igd(jnp.full((2, 2), jnp.nan), true)) == np.inf


def test_front_recovery_bad_shapes():
    with pytest.raises(NasjaxError, match=r"true_front must have shape \(N, 2\), got \(3, 3\)"):
        front_recovery(jnp.zeros((2, 2)), jnp.zeros((3, 3)))
    with pytest.raises(NasjaxError, match=r"found must have shape \(N, M\), got \(2,\)"):
        igd(jnp.zeros(2), jnp.zeros((3, 2)))
    with pytest.raises(NasjaxError, match="atol must be >= 0, got -1"):
        front_recovery(jnp.zeros((2, 2)), jnp.zeros((3, 2)), atol=-1)
