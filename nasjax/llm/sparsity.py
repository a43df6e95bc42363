"""One-shot pruning of one weight matrix: magnitude, Wanda and SparseGPT, unstructured or N:M.

Layout. A weight matrix ``W`` has shape ``[d_in, d_out]`` and is used as ``y = x @ W``; the
calibration inputs of its layer are ``X [N, d_in]``. The papers write ``W`` as
``[d_out, d_in]``: their *columns* (one input dimension, the index of the Hessian) are our
*rows*, and their rows (one output) are our columns. Wanda's "per output" comparison group
is, here, the ``d_in`` entries of one column; an N:M group is ``M`` consecutive input rows
of one output column; SparseGPT's and GPTQ's column sweep walks over our rows.

Masks are boolean ``[d_in, d_out]`` arrays, ``True`` where a weight is *kept*; a pruned
weight is exactly ``0`` in the returned matrix.

Counts are exact (ties broken by index, so results are deterministic), with ``round``
meaning half up:

* magnitude, unstructured: ``round(sparsity * d_in * d_out)`` weights pruned in the layer;
* Wanda, unstructured: ``round(sparsity * d_in)`` pruned in every output column;
* SparseGPT, unstructured: ``round(sparsity * rows * d_out)`` pruned in every block of
  ``rows`` (= ``block_size``, fewer in the last block) input rows, over all outputs at
  once, as the reference selects its adaptive mask (a block-wide threshold, so one output
  may keep more than another); the layer total is the sum over blocks (equal to
  ``round(sparsity * d_in * d_out)`` whenever each block's product is an integer, e.g. at
  50 % with even sizes);
* N:M (every method): exactly ``N`` weights kept in each group of ``M``.

Where the reference codes count otherwise, they differ by at most one weight per group:
Wanda's truncates (``int(sparsity * d_in)``), magnitude's and SparseGPT's prune
``score <= sorted[int(count * sparsity)]`` (one more, and every tie).

Calibration statistics (:func:`init_stats`, :func:`accumulate`, :func:`hessian`,
:func:`input_norms`) are pure functions of a :class:`CalibrationStats` pytree, so that a
caller can accumulate them inside a jitted forward pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nasjax.errors import NasjaxError

HIGHEST = lax.Precision.HIGHEST
"""Matmul precision of every solve here (f32 on accelerators too, as the references
disable TF32)."""

_PATTERN_FORMS = (
    "valid forms: 'unstructured_F' with 0 < F < 1 (e.g. unstructured_0.5), or 'N:M' with "
    "0 < N < M (keep N of every M consecutive inputs per output, e.g. 2:4, 4:8)"
)


# --------------------------------------------------------------------------------------
# Patterns


@dataclass(frozen=True)
class SparsityPattern:
    """What to prune: a fraction of the weights (unstructured) or N kept of every M.

    Build one with :func:`parse_pattern` (``"unstructured_0.5"``, ``"2:4"``) or the
    class methods :meth:`unstructured` and :meth:`n_m`.

    Attributes:
      sparsity: the fraction of weights pruned (for N:M, ``1 - n / m``).
      n: weights kept per group (N:M only, else 0).
      m: group length along ``d_in`` (N:M only, else 0).
    """

    sparsity: float
    n: int = 0
    m: int = 0

    def __post_init__(self) -> None:
        if self.m:
            if not 0 < self.n < self.m:
                raise NasjaxError(f"invalid N:M pattern {self.n}:{self.m}; {_PATTERN_FORMS}")
            object.__setattr__(self, "sparsity", 1.0 - self.n / self.m)
        elif not 0.0 < float(self.sparsity) < 1.0 or self.n:
            raise NasjaxError(f"invalid unstructured sparsity {self.sparsity!r}; {_PATTERN_FORMS}")

    @classmethod
    def unstructured(cls, sparsity: float) -> SparsityPattern:
        """Prune the fraction ``sparsity`` (``0 < sparsity < 1``) of the weights."""
        return cls(sparsity=float(sparsity))

    @classmethod
    def n_m(cls, n: int, m: int) -> SparsityPattern:
        """Keep ``n`` of every ``m`` consecutive input weights of each output."""
        return cls(sparsity=0.0, n=int(n), m=int(m))

    @property
    def is_nm(self) -> bool:
        """Whether this is a semi-structured N:M pattern."""
        return self.m > 0

    @property
    def name(self) -> str:
        """The canonical string, which :func:`parse_pattern` reads back."""
        return f"{self.n}:{self.m}" if self.is_nm else f"unstructured_{self.sparsity:g}"

    def __str__(self) -> str:
        return self.name


def parse_pattern(text: str | SparsityPattern) -> SparsityPattern:
    """``"unstructured_0.5"`` -> 50 % unstructured; ``"2:4"``, ``"4:8"``, any ``"n:m"`` with
    ``0 < n < m`` -> keep n of every m. A :class:`SparsityPattern` passes through.

    Raises:
      NasjaxError: one line naming the value and the valid forms (a keep-all or
        prune-all pattern such as ``"4:4"`` or ``"unstructured_0"`` included).
    """
    if isinstance(text, SparsityPattern):
        return text
    if isinstance(text, str):
        s = text.strip()
        nm = re.fullmatch(r"(\d+):(\d+)", s)
        if nm and 0 < int(nm[1]) < int(nm[2]):
            return SparsityPattern.n_m(int(nm[1]), int(nm[2]))
        un = re.fullmatch(r"unstructured_(\d*\.?\d+(?:[eE][-+]?\d+)?)", s)
        if un and 0.0 < float(un[1]) < 1.0:
            return SparsityPattern.unstructured(float(un[1]))
    raise NasjaxError(f"invalid sparsity pattern {text!r}; {_PATTERN_FORMS}")


def num_pruned(sparsity: float, count: int) -> int:
    """``round(sparsity * count)``, half up: how many of ``count`` weights a fraction prunes."""
    return int(math.floor(sparsity * count + 0.5))


# --------------------------------------------------------------------------------------
# Calibration statistics


class CalibrationStats(NamedTuple):
    """Running sums over a layer's calibration inputs (a pytree).

    Attributes:
      xtx: ``sum_t x_t^T x_t``, ``[d_in, d_in]`` float32.
      sq: ``sum_t x_t^2`` per input channel, ``[d_in]`` float32 (Wanda's ``||X_j||^2``).
      count: tokens seen, int32 scalar.
    """

    xtx: jax.Array
    sq: jax.Array
    count: jax.Array


def init_stats(d_in: int) -> CalibrationStats:
    """Empty statistics for a layer with ``d_in`` inputs."""
    return CalibrationStats(
        xtx=jnp.zeros((d_in, d_in), jnp.float32),
        sq=jnp.zeros((d_in,), jnp.float32),
        count=jnp.zeros((), jnp.int32),
    )


@jax.jit
def _accumulate(stats: CalibrationStats, x: jax.Array) -> CalibrationStats:
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return CalibrationStats(
        xtx=stats.xtx + jnp.matmul(x.T, x, precision=HIGHEST),
        sq=stats.sq + jnp.sum(x * x, axis=0),
        count=stats.count + x.shape[0],
    )


def accumulate(stats: CalibrationStats, x: jax.Array) -> CalibrationStats:
    """Adds the tokens of ``x [..., d_in]`` (any leading shape, cast to float32)."""
    if x.shape[-1] != stats.sq.shape[0]:
        raise NasjaxError(
            f"calibration inputs have {x.shape[-1]} channels, the statistics {stats.sq.shape[0]}"
        )
    return _accumulate(stats, x)


def hessian(stats: CalibrationStats) -> jax.Array:
    """``H = 2/N X^T X`` (the layer-wise reconstruction Hessian of SparseGPT and GPTQ)."""
    return 2.0 * stats.xtx / jnp.maximum(stats.count, 1).astype(jnp.float32)


def input_norms(stats: CalibrationStats) -> jax.Array:
    """``||X_j||_2`` over all tokens for each input channel ``j`` (Wanda's activation norm;
    Wanda's code keeps the mean square, a constant factor that does not change a ranking)."""
    return jnp.sqrt(stats.sq)


# --------------------------------------------------------------------------------------
# Shared checks and selection


def check_matrix(W: Any) -> jax.Array:
    """``W`` as a 2-D array, or a one-line NasjaxError."""
    W = jnp.asarray(W)
    if W.ndim != 2 or 0 in W.shape:
        raise NasjaxError(f"expected a weight matrix [d_in, d_out], got shape {tuple(W.shape)}")
    return W


def check_hessian(H: Any, d_in: int) -> jax.Array:
    """``H`` as a ``[d_in, d_in]`` array, or a one-line NasjaxError."""
    H = jnp.asarray(H)
    if H.shape != (d_in, d_in):
        raise NasjaxError(f"expected a Hessian of shape ({d_in}, {d_in}), got {tuple(H.shape)}")
    return H


def _check_groups(d_in: int, pattern: SparsityPattern, block_size: int | None = None) -> None:
    if pattern.is_nm and d_in % pattern.m:
        raise NasjaxError(
            f"pattern {pattern.name} needs d_in divisible by {pattern.m}, got d_in={d_in}"
        )
    if pattern.is_nm and block_size is not None and block_size % pattern.m:
        raise NasjaxError(
            f"pattern {pattern.name} needs block_size divisible by {pattern.m}, got {block_size}"
        )


def _group_ranks(scores: jax.Array, axis: int) -> jax.Array:
    """Each entry's rank along a short ``axis`` (an N:M group) in ascending order, ties
    broken by index: pairwise comparisons, no sort."""
    s = jnp.moveaxis(scores, axis, 0)
    size = s.shape[0]
    index = jnp.arange(size).reshape((size,) + (1,) * (s.ndim - 1))
    a, b = s[:, None], s[None, :]  # a: the entry ranked, b: the others
    before = (b < a) | ((b == a) & (index[None, :] < index[:, None]))
    return jnp.moveaxis(jnp.sum(before, axis=1), 0, axis)


def lowest_k(scores: jax.Array, k: jax.Array | int, axis: int | None = None) -> jax.Array:
    """Marks exactly ``k`` lowest of non-negative ``scores`` (over all entries, or along
    ``axis`` for each other index), ties broken by (row-major) index, without a sort.

    The ``k``-th lowest value is found by bisection on the float's bits (monotone for
    non-negative floats, ``+inf`` included): 31 counting passes, cheaper on CPU than a
    sort of a large block; then every entry below it, and the first of its ties.
    """
    bits = lax.bitcast_convert_type(scores + 0.0, jnp.int32)  # + 0.0: no -0.0
    if axis is None:
        count = lambda mask: jnp.sum(mask, dtype=jnp.int32)
        first_ties = lambda ties: jnp.cumsum(ties.reshape(-1)).reshape(ties.shape)
    else:
        count = lambda mask: jnp.sum(mask, axis=axis, keepdims=True, dtype=jnp.int32)
        first_ties = lambda ties: jnp.cumsum(ties, axis=axis)
    shape = count(bits).shape

    def bisect(_: jax.Array, bounds: tuple) -> tuple:
        lo, hi = bounds  # count(bits <= lo) < k <= count(bits <= hi)
        mid = lo + (hi - lo) // 2
        enough = count(bits <= mid) >= k
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    lo = jnp.full(shape, -1, jnp.int32)
    hi = jnp.full(shape, 0x7F800000, jnp.int32)  # +inf
    _, kth = lax.fori_loop(0, 32, bisect, (lo, hi))
    below = bits < kth
    ties = bits == kth
    return below | (ties & (first_ties(ties) <= k - count(below)))


def _nm_keep(scores: jax.Array, n: int, m: int) -> jax.Array:
    """Keep the ``n`` highest of every ``m`` consecutive rows, per column."""
    d_in, d_out = scores.shape
    ranks = _group_ranks(scores.reshape(d_in // m, m, d_out), axis=1)
    return (ranks >= m - n).reshape(d_in, d_out)


@partial(jax.jit, static_argnames=("n", "m", "per_output"))
def _prune_by_scores(
    W: jax.Array, scores: jax.Array, k: jax.Array, *, n: int, m: int, per_output: bool
) -> tuple[jax.Array, jax.Array]:
    if m:
        keep = _nm_keep(scores, n, m)
    else:
        keep = ~lowest_k(scores, k, axis=0 if per_output else None)
    return jnp.where(keep, W, jnp.zeros_like(W)), keep


# --------------------------------------------------------------------------------------
# Magnitude and Wanda


def magnitude_prune(W: jax.Array, pattern: str | SparsityPattern) -> tuple[jax.Array, jax.Array]:
    """Magnitude pruning (Han, Pool, Tran & Dally 2015, "Learning both Weights and
    Connections for Efficient Neural Networks"): drop the smallest ``|W_ij|``.

    Unstructured: one threshold for the whole layer, as the magnitude baseline in Wanda's
    code (Sun et al. 2023) and SparseGPT's paper; N:M: per group of ``m`` inputs.

    Returns:
      ``(W_pruned, keep_mask)``, both ``[d_in, d_out]``.
    """
    W = check_matrix(W)
    pattern = parse_pattern(pattern)
    _check_groups(W.shape[0], pattern)
    k = jnp.int32(num_pruned(pattern.sparsity, W.size))
    scores = jnp.abs(W.astype(jnp.float32))
    return _prune_by_scores(W, scores, k, n=pattern.n, m=pattern.m, per_output=False)


def wanda_prune(
    W: jax.Array, input_norms: jax.Array, pattern: str | SparsityPattern
) -> tuple[jax.Array, jax.Array]:
    """Wanda: Sun, Liu, Bair & Kolter (2023), "A Simple and Effective Pruning Approach for
    Large Language Models".

    Score ``|W_ij| * ||X_i||_2`` (``input_norms`` from :func:`input_norms`). Unstructured:
    the weights of each output are compared among themselves (the paper's "per output"
    group: for each output column, the lowest ``round(sparsity * d_in)`` scores over
    ``d_in`` are pruned); N:M: per group of ``m`` consecutive inputs of each output.

    Returns:
      ``(W_pruned, keep_mask)``, both ``[d_in, d_out]``.
    """
    W = check_matrix(W)
    pattern = parse_pattern(pattern)
    d_in = W.shape[0]
    norms = jnp.asarray(input_norms, jnp.float32)
    if norms.shape != (d_in,):
        raise NasjaxError(f"expected input norms of shape ({d_in},), got {tuple(norms.shape)}")
    _check_groups(d_in, pattern)
    k = jnp.int32(num_pruned(pattern.sparsity, d_in))
    scores = jnp.abs(W.astype(jnp.float32)) * norms[:, None]
    return _prune_by_scores(W, scores, k, n=pattern.n, m=pattern.m, per_output=True)


# --------------------------------------------------------------------------------------
# The OBS column sweep shared by SparseGPT and GPTQ


def padded_size(d_in: int, block_size: int) -> int:
    """``d_in`` rounded up to a whole number of blocks (the sweep's padded row count)."""
    return -(-d_in // block_size) * block_size


def inverse_hessian_factor(
    H: jax.Array, percdamp: float | jax.Array, size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """The upper Cholesky factor ``U`` of the dampened inverse Hessian, ``U^T U = H_d^-1``.

    As SparseGPT's and GPTQ's references: a dead input (``H_ii == 0``) gets ``H_ii = 1``;
    then ``H_d = H + percdamp * mean(diag H) * I``; ``U`` the upper Cholesky factor of
    ``H_d^-1`` (computed from the Cholesky factor of ``H_d`` in reversed order). With
    ``size > d_in`` the factor is padded with an identity block (padded inputs are
    independent of the real ones and carry zero weights).

    Returns:
      ``(U [size, size], dead [d_in] bool)``.
    """
    H = H.astype(jnp.float32)
    d_in = H.shape[0]
    size = d_in if size is None else size
    H = 0.5 * (H + H.T)
    dead = jnp.diagonal(H) == 0
    H = H + jnp.diag(dead.astype(jnp.float32))
    damp = percdamp * jnp.mean(jnp.diagonal(H))
    eye = jnp.eye(d_in, dtype=jnp.float32)
    # With J the order reversal and J H_d J = L L^T, H_d^-1 = (J L^-1 J)^T (J L^-1 J) and
    # J L^-1 J is upper triangular with a positive diagonal: by uniqueness it is the upper
    # Cholesky factor of H_d^-1 that the references compute as chol(cholesky_inverse(...)),
    # at a third of the cost (one Cholesky and one triangular inverse).
    lower = jnp.linalg.cholesky((H + damp * eye)[::-1, ::-1])
    lower_inv = jax.scipy.linalg.solve_triangular(lower, eye, lower=True)
    upper = jnp.triu(lower_inv[::-1, ::-1])
    padded = jnp.eye(size, dtype=jnp.float32).at[:d_in, :d_in].set(upper)
    return padded, dead


SUB_BLOCK = 16
"""Rows per inner batch of the sweep (see :func:`obs_sweep`)."""

BeginBlock = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, Any], Any]
VisitRow = Callable[[jax.Array, jax.Array, jax.Array, Any], Any]


def sub_block_size(block_size: int, row_multiple: int = 1) -> int:
    """The sweep's inner batch: :data:`SUB_BLOCK` rows where that divides ``block_size``
    and is a multiple of ``row_multiple``, else the whole block."""
    fits = block_size % SUB_BLOCK == 0 and SUB_BLOCK % row_multiple == 0
    return SUB_BLOCK if fits else block_size


def obs_sweep(
    W: jax.Array,
    U: jax.Array,
    block_size: int,
    visit_row: VisitRow,
    carry: Any,
    begin_block: BeginBlock | None = None,
    row_multiple: int = 1,
) -> tuple[jax.Array, Any]:
    """The column sweep of SparseGPT (Frantar & Alistarh 2023) and GPTQ (Frantar et al.
    2022) with lazy batch updates, over the rows of our ``[d_in, d_out]`` layout.

    Blocks of ``block_size`` input rows in turn (a ``lax.fori_loop``); inside a block, row
    by row: row ``i`` is replaced by ``q = visit_row(...)`` and the OBS update spreads its
    error ``(w - q) / U_ii`` over the later rows through ``U[i, i:]``; at the block's end
    the block's errors update every later row at once (``W[i2:] -= U[i1:i2, i2:]^T E``).

    The same lazy batching is applied once more inside a block: rows are visited in
    batches of :func:`sub_block_size` (16) rows, the row loop updating only its batch and
    a matmul then updating the block's later rows. This is exact (the updates are linear
    and commute) and moves 8x less memory per row than updating the whole block.

    Args:
      W: ``[P, d_out]`` float32, ``P`` a multiple of ``block_size`` (padded rows zero).
      U: ``[P, P]`` from :func:`inverse_hessian_factor` (upper triangular).
      block_size: rows per block.
      visit_row: ``(rows, row0, j, carry) -> (q, carry)``: the new value of row ``j`` of
        the batch ``rows`` (its rows as updated so far) whose first row is row ``row0``
        of ``W``.
      carry: state threaded through (a mask, quantizer parameters).
      begin_block: ``(W, W1, U1, start, carry) -> carry``, called at the start of each
        block with the whole matrix (updated by the earlier blocks), the block's rows, its
        ``[block_size, block_size]`` factor and its first row's index.
      row_multiple: the inner batch is a multiple of this (N:M groups stay in one batch).

    Returns:
      ``(Q, carry)``: every row replaced by its ``q``.
    """
    P, d_out = W.shape
    sub = sub_block_size(block_size, row_multiple)

    def batch_rows(Ws: jax.Array, Us: jax.Array, row0: jax.Array, carry: Any) -> tuple:
        """The row loop over one batch: (rows -> their q, errors, carry)."""
        index = jnp.arange(Ws.shape[0])[:, None]

        def row_step(j: jax.Array, state: tuple) -> tuple:
            Ws, Es, carry = state
            q, carry = visit_row(Ws, row0, j, carry)
            err = (Ws[j] - q) / Us[j, j]
            # U[j, r] == 0 for r < j: earlier rows keep their q; row j becomes q exactly.
            Ws = jnp.where(index == j, q[None, :], Ws - Us[j][:, None] * err[None, :])
            return Ws, jnp.where(index == j, err[None, :], Es), carry

        return lax.fori_loop(0, Ws.shape[0], row_step, (Ws, jnp.zeros_like(Ws), carry))

    def block_step(b: jax.Array, state: tuple) -> tuple:
        W, carry = state
        start = b * block_size
        W1 = lax.dynamic_slice_in_dim(W, start, block_size, axis=0)
        U_rows = lax.dynamic_slice_in_dim(U, start, block_size, axis=0)
        U1 = lax.dynamic_slice_in_dim(U_rows, start, block_size, axis=1)
        if begin_block is not None:
            carry = begin_block(W, W1, U1, start, carry)
        if sub == block_size:
            W1, E1, carry = batch_rows(W1, U1, start, carry)
        else:

            def sub_step(s: jax.Array, inner: tuple) -> tuple:
                W1, E1, carry = inner
                off = s * sub
                Ws = lax.dynamic_slice_in_dim(W1, off, sub, axis=0)
                Us_rows = lax.dynamic_slice_in_dim(U1, off, sub, axis=0)
                Us = lax.dynamic_slice_in_dim(Us_rows, off, sub, axis=1)
                Ws, Es, carry = batch_rows(Ws, Us, start + off, carry)
                W1 = W1 - jnp.matmul(Us_rows.T, Es, precision=HIGHEST)
                W1 = lax.dynamic_update_slice_in_dim(W1, Ws, off, axis=0)
                E1 = lax.dynamic_update_slice_in_dim(E1, Es, off, axis=0)
                return W1, E1, carry

            inner = (W1, jnp.zeros_like(W1), carry)
            W1, E1, carry = lax.fori_loop(0, block_size // sub, sub_step, inner)
        # U_rows[:, r] is exactly 0 for r < start: earlier rows are untouched, and the
        # block's own rows are overwritten with their q.
        W = W - jnp.matmul(U_rows.T, E1, precision=HIGHEST)
        return lax.dynamic_update_slice_in_dim(W, W1, start, axis=0), carry

    return lax.fori_loop(0, P // block_size, block_step, (W, carry))


# --------------------------------------------------------------------------------------
# SparseGPT


@partial(jax.jit, static_argnames=("n", "m", "block_size"))
def _sparsegpt(
    W: jax.Array,
    H: jax.Array,
    k_blocks: jax.Array,
    percdamp: jax.Array,
    *,
    n: int,
    m: int,
    block_size: int,
) -> tuple[jax.Array, jax.Array]:
    d_in, d_out = W.shape
    P = padded_size(d_in, block_size)
    U, dead = inverse_hessian_factor(H, percdamp, P)
    W = jnp.where(dead[:, None], 0.0, W.astype(jnp.float32))
    W = jnp.pad(W, ((0, P - d_in), (0, 0)))
    u_diag = jnp.diagonal(U)

    def begin_block(
        W: jax.Array, W1: jax.Array, U1: jax.Array, start: jax.Array, keep: jax.Array
    ) -> jax.Array:
        if m:  # N:M masks are chosen inside the block, every m rows
            return keep
        scores = W1**2 / jnp.diagonal(U1)[:, None] ** 2
        real = (start + jnp.arange(block_size)) < d_in
        scores = jnp.where(real[:, None], scores, jnp.inf)
        k = k_blocks[start // block_size]
        block_keep = ~lowest_k(scores, k)
        return lax.dynamic_update_slice_in_dim(keep, block_keep, start, axis=0)

    def visit_row(rows: jax.Array, row0: jax.Array, j: jax.Array, keep: jax.Array) -> tuple:
        if m:  # at a group's first row, choose its mask on the rows as updated so far
            first = j - j % m
            group = lax.dynamic_slice_in_dim(rows, first, m, axis=0)
            diag = lax.dynamic_slice_in_dim(u_diag, row0 + first, m)

            def choose(group: jax.Array, diag: jax.Array, current: jax.Array) -> jax.Array:
                return _group_ranks(group**2 / diag[:, None] ** 2, axis=0) >= m - n

            current = lax.dynamic_slice_in_dim(keep, row0 + first, m, axis=0)
            chosen = lax.cond(j % m == 0, choose, lambda g, d, c: c, group, diag, current)
            keep = lax.dynamic_update_slice_in_dim(keep, chosen, row0 + first, axis=0)
        q = jnp.where(keep[row0 + j], rows[j], 0.0)
        return q, keep

    keep0 = jnp.ones((P, d_out), bool)
    Q, keep = obs_sweep(W, U, block_size, visit_row, keep0, begin_block, row_multiple=max(m, 1))
    return Q[:d_in], keep[:d_in]


def sparsegpt_prune(
    W: jax.Array,
    H: jax.Array,
    pattern: str | SparsityPattern,
    block_size: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """SparseGPT: Frantar & Alistarh (2023), "SparseGPT: Massive Language Models Can Be
    Accurately Pruned in One-Shot".

    The reference's ``fasterprune`` in our layout: dead inputs (``H_ii == 0``) zeroed and
    their ``H_ii`` set to 1; ``U``, the upper Cholesky factor of the dampened ``H^-1``
    (:func:`inverse_hessian_factor`); blocks of ``block_size`` input rows. Unstructured:
    at each block's start the adaptive mask prunes the block's lowest
    ``w^2 / U_ii^2`` (over the block's rows and all outputs at once, see the module's
    counts); N:M: every ``m`` rows, the ``m - n`` lowest ``w^2 / U_ii^2`` of each output's
    group, on the weights as updated so far. Each row is then pruned and its error spread
    by the OBS update within and after the block (:func:`obs_sweep`), jitted, the loops
    ``lax.fori_loop``.

    Args:
      W: ``[d_in, d_out]``.
      H: ``[d_in, d_in]``, e.g. :func:`hessian` of the layer's calibration inputs.
      pattern: a :class:`SparsityPattern` or its string.
      block_size: input rows per block (a multiple of ``m`` for N:M).
      percdamp: dampening, a fraction of the mean Hessian diagonal.

    Returns:
      ``(W_pruned, keep_mask)``, both ``[d_in, d_out]`` (``W_pruned`` in ``W``'s dtype).
    """
    W = check_matrix(W)
    pattern = parse_pattern(pattern)
    d_in = W.shape[0]
    H = check_hessian(H, d_in)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise NasjaxError(f"block_size must be an integer >= 1, got {block_size!r}")
    _check_groups(d_in, pattern, block_size)
    rows = [min(block_size, d_in - s) for s in range(0, d_in, block_size)]
    k_blocks = np.array([num_pruned(pattern.sparsity, r * W.shape[1]) for r in rows], np.int32)
    Q, keep = _sparsegpt(
        W,
        H,
        jnp.asarray(k_blocks),
        jnp.float32(percdamp),
        n=pattern.n,
        m=pattern.m,
        block_size=block_size,
    )
    return Q.astype(W.dtype), keep
