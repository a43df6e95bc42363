"""Pareto fronts of MAXIMISED objectives: ranks, crowding, hypervolume, front recovery.

Every objective is **maximised**, like every fitness in nasjax; costs (latency, params,
FLOPs) are passed negated by the caller. A row with a NaN or infinite objective, or marked
``valid=False``, is *invalid*: the worst, behind every valid row (NaN = ``-inf`` = worst).

* :func:`non_dominated_rank` and :func:`crowding_distance` are the fast non-dominated
  sorting and crowding distance of NSGA-II (Deb, Pratap, Agarwal & Meyarivan, "A Fast and
  Elitist Multiobjective Genetic Algorithm: NSGA-II", IEEE Trans. Evol. Comput. 6(2),
  2002), written as array programs: ranks by repeated peeling of a domination matrix
  (``O(N^2)`` memory, fine for ``N`` up to a few thousand), crowding by one sort per
  objective over ``(rank, value, index)``.
* :func:`hypervolume_2d` is the exact two-objective hypervolume (the "size of the space
  covered" of Zitzler & Thiele, PPSN 1998 and IEEE Trans. Evol. Comput. 3(4), 1999).
* :func:`front_recovery` and :func:`igd` compare a found set with a known true front.

All functions are pure ``jnp``, jittable and usable under ``vmap``/``lax.scan``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError

PARETO_CHUNK = 256  # rows per chunk in :func:`pareto_mask`


def _check_objectives(what: str, objectives: jax.Array, m: int | None = None) -> None:
    shape = jnp.shape(objectives)
    if len(shape) != 2 or (m is not None and shape[1] != m):
        expected = "(N, M)" if m is None else f"(N, {m})"
        raise NasjaxError(f"{what} must have shape {expected}, got {shape}")


def valid_rows(objectives: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """``bool[N]``: rows of ``objectives`` ``float[N, M]`` that are valid and all finite.

    Raises:
      NasjaxError: if ``objectives`` is not 2-D or ``valid`` is not ``bool[N]``.
    """
    _check_objectives("objectives", objectives)
    ok = jnp.all(jnp.isfinite(jnp.asarray(objectives, jnp.float32)), axis=1)
    if valid is not None:
        if jnp.shape(valid) != ok.shape:
            raise NasjaxError(f"valid must have shape {ok.shape}, got {jnp.shape(valid)}")
        ok = ok & jnp.asarray(valid, bool)
    return ok


def domination_matrix(objectives: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """``bool[N, N]``: entry ``[i, j]`` is true where row ``i`` Pareto-dominates row ``j``.

    ``i`` dominates ``j`` when ``i`` is ``>=`` in every (maximised) objective and ``>`` in
    at least one, both rows valid. Equal rows do not dominate each other.
    """
    ok = valid_rows(objectives, valid)
    f = jnp.asarray(objectives, jnp.float32)
    all_ge = jnp.ones((f.shape[0],) * 2, bool)
    any_gt = jnp.zeros((f.shape[0],) * 2, bool)
    for m in range(f.shape[1]):  # one [N, N] slice at a time: O(N^2) memory, not O(N^2 M)
        a, b = f[:, m][:, None], f[:, m][None, :]
        all_ge, any_gt = all_ge & (a >= b), any_gt | (a > b)
    return all_ge & any_gt & ok[:, None] & ok[None, :]


def non_dominated_rank(objectives: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Pareto rank of each row of ``objectives`` (``float[N, M]``, MAXIMISED).

    Rank 0 is the first (non-dominated) front; rank ``r`` is the front of the rows left
    after removing ranks ``< r`` (Deb et al. 2002, fast non-dominated sorting). Equal rows
    share a rank. Invalid rows (``valid`` false, or any NaN/inf objective) get rank ``N``,
    larger than every valid rank.

    Args:
      objectives: ``float[N, M]``, every objective maximised.
      valid: optional ``bool[N]``; false rows are treated as invalid.

    Returns:
      ``int32[N]``.
    """
    ok = valid_rows(objectives, valid)
    dom = domination_matrix(objectives, ok)
    n = ok.shape[0]

    def peel(carry: tuple) -> tuple:
        rank, remaining, r = carry
        # A remaining row is on the current front if no remaining row dominates it.
        front = remaining & ~jnp.any(dom & remaining[:, None], axis=0)
        return jnp.where(front, r, rank), remaining & ~front, r + 1

    def more(carry: tuple) -> jax.Array:
        _, remaining, r = carry
        return jnp.any(remaining) & (r < n)

    init = (jnp.full((n,), n, jnp.int32), ok, jnp.int32(0))
    rank, _, _ = jax.lax.while_loop(more, peel, init)
    return rank


def pareto_mask(objectives: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """``bool[N]``: the valid rows no valid row dominates (rank 0; objectives maximised).

    Unlike :func:`non_dominated_rank` this never holds the ``N x N`` matrix: rows are
    tested in chunks of ``PARETO_CHUNK`` against all others (memory ``O(N * chunk)``), so a
    whole table (e.g. NAS-Bench-201's 15,625 cells) fits.
    """
    ok = valid_rows(objectives, valid)
    f = jnp.where(ok[:, None], jnp.asarray(objectives, jnp.float32), 0.0)

    def dominated(fj: jax.Array) -> jax.Array:
        dominates = jnp.all(f >= fj, axis=1) & jnp.any(f > fj, axis=1) & ok
        return jnp.any(dominates)

    if f.shape[0] == 0:
        return ok
    return ok & ~jax.lax.map(dominated, f, batch_size=min(PARETO_CHUNK, f.shape[0]))


def crowding_distance(objectives: jax.Array, rank: jax.Array) -> jax.Array:
    """NSGA-II crowding distance of each row within its front (Deb et al. 2002, Sec. III-B).

    For each objective the rows of a front are sorted by value; the two boundary rows of
    the front get ``inf``, every other row adds ``(next - previous) / (max - min)`` of its
    neighbours' values (nothing when the front's ``max == min``). Fronts are the groups of
    equal ``rank``, and rows are sorted by ``(rank, value, row index)`` so that other fronts
    never interfere. Ties in value are broken by row index, so with duplicate values the
    result is deterministic but (as in Deb's algorithm) not permutation invariant.

    Args:
      objectives: ``float[N, M]``, maximised.
      rank: ``int[N]`` front of each row, e.g. from :func:`non_dominated_rank`.

    Returns:
      ``float32[N]``, ``>= 0``; ``0`` for rows with a NaN/inf objective (invalid rows).
    """
    _check_objectives("objectives", objectives)
    f = jnp.asarray(objectives, jnp.float32)
    n, num_objectives = f.shape
    if jnp.shape(rank) != (n,):
        raise NasjaxError(f"rank must have shape ({n},), got {jnp.shape(rank)}")
    ok = valid_rows(f)
    # Invalid rows form their own group, sorted before every front: they never neighbour
    # a valid row.
    group = jnp.where(ok, jnp.asarray(rank, jnp.int32), -1)
    f = jnp.where(ok[:, None], f, 0.0)
    index = jnp.arange(n, dtype=jnp.int32)
    distance = jnp.zeros((n,), jnp.float32)
    for m in range(num_objectives):
        g, v, order = jax.lax.sort((group, f[:, m], index), num_keys=3)
        start = jnp.concatenate([jnp.array([True]), g[1:] != g[:-1]])
        end = jnp.concatenate([g[1:] != g[:-1], jnp.array([True])])
        # Values are ascending within a front: its min is at its first sorted position.
        first = jax.lax.cummax(jnp.where(start, index, 0))
        last = jax.lax.cummin(jnp.where(end, index, n - 1), reverse=True)
        lo, hi = v[first], v[last]
        prev = jnp.concatenate([v[:1], v[:-1]])
        nxt = jnp.concatenate([v[1:], v[-1:]])
        span = hi - lo
        inner = jnp.where(span > 0, (nxt - prev) / jnp.where(span > 0, span, 1.0), 0.0)
        step = jnp.where(start | end, jnp.inf, inner)
        distance = distance.at[order].add(step)
    return jnp.where(ok, distance, 0.0)


def hypervolume_2d(
    objectives: jax.Array, reference: jax.Array, valid: jax.Array | None = None
) -> jax.Array:
    """Exact hypervolume of two MAXIMISED objectives w.r.t. a reference point.

    The area of the union of the rectangles ``[ref_0, f_0] x [ref_1, f_1]`` over the valid
    points strictly better than ``reference`` in both objectives (Zitzler & Thiele, 1998,
    1999); other points and invalid rows (``valid`` false, NaN/inf) add nothing. Computed
    by one sweep over the points sorted by objective 0, descending.

    Args:
      objectives: ``float[N, 2]``.
      reference: ``float[2]``, a point every counted point must beat in both objectives.
      valid: optional ``bool[N]``.

    Returns:
      ``float32[]``, ``0`` when no point counts.

    Raises:
      NasjaxError: if there are not exactly 2 objectives or ``reference`` is not ``(2,)``.
    """
    shape = jnp.shape(objectives)
    if len(shape) != 2 or shape[1] != 2:
        raise NasjaxError(
            f"hypervolume_2d needs objectives of shape (N, 2) (exactly 2 objectives), got {shape}"
        )
    if jnp.shape(reference) != (2,):
        raise NasjaxError(f"reference must have shape (2,), got {jnp.shape(reference)}")
    f = jnp.asarray(objectives, jnp.float32)
    ref = jnp.asarray(reference, jnp.float32)
    if shape[0] == 0:
        return jnp.zeros((), jnp.float32)
    counted = valid_rows(f, valid) & jnp.all(f > ref, axis=1)
    f = jnp.where(counted[:, None], f, ref)  # an uncounted point is the reference: no area
    x, y = jax.lax.sort((-f[:, 0], f[:, 1]), num_keys=1)
    x = -x
    # Y[i] = max(ref_1, y[0..i-1]): the height already covered by points with larger x.
    covered = jnp.concatenate([ref[1:], jax.lax.cummax(y)[:-1]])
    covered = jnp.maximum(covered, ref[1])
    return jnp.sum((x - ref[0]) * jnp.maximum(y - covered, 0.0))


def _check_pair(found: jax.Array, true_front: jax.Array) -> None:
    _check_objectives("found", found)
    _check_objectives("true_front", true_front, jnp.shape(found)[1])
    if jnp.shape(true_front)[0] < 1:
        raise NasjaxError("true_front must hold at least one point, got shape (0, M)")


def front_recovery(found: jax.Array, true_front: jax.Array, atol: float = 0.0) -> jax.Array:
    """Fraction of the true front's points that appear in ``found``.

    A true point is recovered when some found point equals it within ``atol`` in every
    objective. Found rows with a NaN never match.

    Args:
      found: ``float[K, M]`` objective vectors found by a search (``K`` may be 0).
      true_front: ``float[T, M]``, ``T >= 1``, the known Pareto front (one row per point;
        pass distinct points for a fraction of distinct points).
      atol: absolute tolerance per objective.

    Returns:
      ``float32[]`` in ``[0, 1]``.

    Raises:
      NasjaxError: if the shapes are not 2-D with the same ``M``, or ``atol < 0``.
    """
    _check_pair(found, true_front)
    if not atol >= 0:
        raise NasjaxError(f"atol must be >= 0, got {atol}")
    a = jnp.asarray(found, jnp.float32)[None, :, :]
    t = jnp.asarray(true_front, jnp.float32)[:, None, :]
    hit = jnp.any(jnp.all(jnp.abs(a - t) <= atol, axis=-1), axis=1)
    return jnp.mean(hit.astype(jnp.float32))


def igd(found: jax.Array, true_front: jax.Array) -> jax.Array:
    """Inverted generational distance: mean over true-front points of the Euclidean
    distance to the nearest found point (lower is better; 0 when every true point is found).

    Objectives are used as given; normalise them first if their scales differ. Found rows
    with a NaN/inf are ignored; with none left the result is ``inf``.

    Args:
      found: ``float[K, M]``.
      true_front: ``float[T, M]``, ``T >= 1``.

    Returns:
      ``float32[]``.

    Raises:
      NasjaxError: if the shapes are not 2-D with the same ``M``.
    """
    _check_pair(found, true_front)
    a = jnp.asarray(found, jnp.float32)
    ok = valid_rows(a)
    a = jnp.where(ok[:, None], a, 0.0)
    t = jnp.asarray(true_front, jnp.float32)
    d = jnp.sqrt(jnp.sum((t[:, None, :] - a[None, :, :]) ** 2, axis=-1))
    d = jnp.where(ok[None, :], d, jnp.inf)
    return jnp.mean(jnp.min(d, axis=1, initial=jnp.inf))
