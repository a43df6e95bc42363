"""Weight-only quantization of one matrix: round-to-nearest and GPTQ, with exact storage.

Layout as :mod:`nasjax.llm.sparsity`: ``W [d_in, d_out]``, ``y = x @ W``. A quantization
group is ``group_size`` consecutive *inputs* of one output (the papers' consecutive columns
of one row); ``group_size=None`` is one group per output channel (all ``d_in`` inputs).
The last group of an output is shorter when ``group_size`` does not divide ``d_in``.

The grid is GPTQ's asymmetric min-max quantizer (``Quantizer.find_params`` with
``sym=False``): over a group, ``lo = min(min w, 0)``, ``hi = max(max w, 0)`` (``-1, 1``
when both are 0), ``scale = (hi - lo) / (2^bits - 1)``, ``zero = round(-lo / scale)``,
``q = clip(round(w / scale) + zero, 0, 2^bits - 1)``, and the dequantized value
``scale * (q - zero)``. The functions return the dequantized matrix (what a matmul with
the quantized layer computes); :func:`quantized_bytes` counts what storing it takes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from nasjax.errors import NasjaxError
from nasjax.llm.sparsity import (
    check_hessian,
    check_matrix,
    inverse_hessian_factor,
    obs_sweep,
    padded_size,
)

MIN_BITS, MAX_BITS = 2, 8
SCALE_BITS = 16
"""A group's scale is stored as float16; its zero point takes ``bits`` bits."""


@dataclass(frozen=True)
class QuantSpec:
    """Weight-only quantization: ``bits`` per weight, one grid per group.

    Attributes:
      bits: bits per weight, 2..8.
      group_size: consecutive inputs of one output sharing a grid; ``None`` = the whole
        output channel.
    """

    bits: int
    group_size: int | None = None

    def __post_init__(self) -> None:
        b = self.bits
        if isinstance(b, bool) or not isinstance(b, int) or not MIN_BITS <= b <= MAX_BITS:
            raise NasjaxError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {b!r}")
        g = self.group_size
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 1):
            raise NasjaxError(f"group_size must be None or an integer >= 1, got {g!r}")

    @property
    def maxq(self) -> int:
        """The largest integer code, ``2^bits - 1``."""
        return 2**self.bits - 1

    @property
    def name(self) -> str:
        """``"4_channel"`` or ``"3_g128"``; :func:`parse_quant_spec` reads it back."""
        grouping = "channel" if self.group_size is None else f"g{self.group_size}"
        return f"{self.bits}_{grouping}"

    def __str__(self) -> str:
        return self.name


def parse_quant_spec(text: str | QuantSpec) -> QuantSpec:
    """``"4_channel"`` -> 4 bits per output channel; ``"3_g128"`` -> 3 bits, groups of 128.

    Raises:
      NasjaxError: one line naming the value and the valid forms.
    """
    if isinstance(text, QuantSpec):
        return text
    match = re.fullmatch(r"(\d+)_(channel|g(\d+))", text.strip()) if isinstance(text, str) else None
    valid = match and MIN_BITS <= int(match[1]) <= MAX_BITS and int(match[3] or 1) >= 1
    if not valid:
        raise NasjaxError(
            f"invalid quantization {text!r}; valid forms: 'B_channel' or 'B_gG' with "
            f"{MIN_BITS} <= B <= {MAX_BITS} and G >= 1 (e.g. 4_channel, 3_g128)"
        )
    return QuantSpec(int(match[1]), None if match[3] is None else int(match[3]))


def num_groups(d_in: int, spec: QuantSpec) -> int:
    """Groups per output channel."""
    return 1 if spec.group_size is None else -(-d_in // spec.group_size)


def quantized_bytes(shape: tuple[int, int], spec: str | QuantSpec) -> int:
    """Exact bytes to store a ``[d_in, d_out]`` matrix quantized with ``spec``.

    ``bits`` per weight, plus per group of each output a float16 scale and a ``bits``-wide
    zero point (the zero is an integer code in ``0..2^bits - 1``), all bit-packed:
    ``ceil((bits * d_in * d_out + groups * d_out * (16 + bits)) / 8)``. No permutation
    index is stored: with ``act_order`` the groups still cover consecutive original
    inputs (see :func:`gptq_quantize`).
    """
    d_in, d_out = (int(s) for s in shape)
    spec = parse_quant_spec(spec)
    total = spec.bits * d_in * d_out + num_groups(d_in, spec) * d_out * (SCALE_BITS + spec.bits)
    return math.ceil(total / 8)


# --------------------------------------------------------------------------------------
# The grid


def find_params(x: jax.Array, maxq: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """GPTQ's asymmetric min-max grid over axis 0 of ``x``: ``(scale, zero)`` per column.

    Divisions by a broadcast value are written as multiplications by its reciprocal, the
    form XLA rewrites them to in some programs and not in others: so every program (RTN,
    GPTQ's loop) rounds alike, and the grids are within one ulp of the reference's.
    """
    lo = jnp.minimum(jnp.min(x, axis=0), 0.0)
    hi = jnp.maximum(jnp.max(x, axis=0), 0.0)
    empty = (lo == 0) & (hi == 0)
    lo = jnp.where(empty, -1.0, lo)
    hi = jnp.where(empty, 1.0, hi)
    scale = (hi - lo) * (1.0 / maxq)
    return scale, jnp.round(-lo / scale)


def fake_quantize(
    x: jax.Array, scale: jax.Array, zero: jax.Array, maxq: jax.Array | int
) -> jax.Array:
    """``scale * (clip(round(x / scale) + zero, 0, maxq) - zero)``: ``x`` on its grid."""
    q = jnp.clip(jnp.round(x * (1.0 / scale)) + zero, 0, maxq)
    return scale * (q - zero)


# --------------------------------------------------------------------------------------
# Round to nearest


@partial(jax.jit, static_argnames=("group_size",))
def _rtn(W: jax.Array, maxq: jax.Array, *, group_size: int | None) -> jax.Array:
    d_in, d_out = W.shape
    W = W.astype(jnp.float32)
    g = d_in if group_size is None else group_size
    groups = -(-d_in // g)
    # Zero padding does not move a group's grid: its range always contains 0.
    Wg = jnp.pad(W, ((0, groups * g - d_in), (0, 0))).reshape(groups, g, d_out)
    scale, zero = jax.vmap(find_params, in_axes=(0, None))(Wg, maxq)
    Q = fake_quantize(Wg, scale[:, None], zero[:, None], maxq)
    return Q.reshape(groups * g, d_out)[:d_in]


def rtn_quantize(W: jax.Array, spec: str | QuantSpec) -> jax.Array:
    """Round-to-nearest: each group's weights to the nearest point of its min-max grid
    (the baseline of GPTQ, Frantar et al. 2022). Returns the dequantized ``[d_in, d_out]``
    matrix in ``W``'s dtype."""
    W = check_matrix(W)
    spec = parse_quant_spec(spec)
    return _rtn(W, jnp.float32(spec.maxq), group_size=spec.group_size).astype(W.dtype)


# --------------------------------------------------------------------------------------
# GPTQ


@partial(jax.jit, static_argnames=("group_size", "act_order", "block_size"))
def _gptq(
    W: jax.Array,
    H: jax.Array,
    maxq: jax.Array,
    percdamp: jax.Array,
    *,
    group_size: int | None,
    act_order: bool,
    block_size: int,
) -> jax.Array:
    d_in, d_out = W.shape
    P = padded_size(d_in, block_size)
    W = W.astype(jnp.float32)
    H = H.astype(jnp.float32)
    # Per channel, the reference fits the grid on W before zeroing the dead inputs.
    channel_params = find_params(W, maxq)
    h_diag = jnp.diagonal(H)
    dead = h_diag == 0
    W = jnp.where(dead[:, None], 0.0, W)
    static = act_order and group_size is not None
    if static:  # the reference's static_groups: grids of the original groups, fitted upfront
        groups = -(-d_in // group_size)
        Wg = jnp.pad(W, ((0, groups * group_size - d_in), (0, 0)))
        Wg = Wg.reshape(groups, group_size, d_out)
        group_params = jax.vmap(find_params, in_axes=(0, None))(Wg, maxq)
    if act_order:
        perm = jnp.argsort(-jnp.where(dead, 1.0, h_diag), stable=True)
        W = W[perm]
        H = H[perm][:, perm]
    U, _ = inverse_hessian_factor(H, percdamp, P)
    W = jnp.pad(W, ((0, P - d_in), (0, 0)))
    if static:
        # Row p of the sweep is original input perm[p], quantized on its original group's grid
        # (padded rows, all zero, quantize to 0 on any grid).
        row_group = jnp.pad(perm // group_size, (0, P - d_in))

    dynamic = group_size is not None and not static
    if dynamic:
        # Groups that can start inside one block, and the window a group's grid is read from.
        starts_per_block = -(-block_size // group_size)
        window = min(group_size, P)

    def begin_block(
        W: jax.Array, W1: jax.Array, U1: jax.Array, start: jax.Array, carry: tuple
    ) -> tuple:
        """Fits the grids of the groups that start in this block on the weights as updated
        by the earlier blocks: the reference reads them from its outer W, which it updates
        at block ends only, not from the block's working copy."""
        if not dynamic:
            return carry
        first = -(-start // group_size) * group_size

        def fit(k: jax.Array) -> tuple:
            g = first + k * group_size
            at = jnp.clip(g, 0, P - window)
            rows = lax.dynamic_slice_in_dim(W, at, window, axis=0)
            index = at + jnp.arange(window)
            inside = (index >= g) & (index < g + group_size)
            # Rows outside the group as zeros: a grid's range always contains 0.
            return find_params(jnp.where(inside[:, None], rows, 0.0), maxq)

        fitted = jax.vmap(fit)(jnp.arange(starts_per_block))
        return carry[0], fitted, first

    def visit_row(rows: jax.Array, row0: jax.Array, j: jax.Array, carry: tuple) -> tuple:
        params = carry[0]
        r = row0 + j
        if static:
            g = row_group[r]
            params = (group_params[0][g], group_params[1][g])
        elif dynamic:
            _, fitted, first = carry
            k = jnp.clip((r - first) // group_size, 0, starts_per_block - 1)
            starts = r % group_size == 0
            params = tuple(jnp.where(starts, f[k], p) for f, p in zip(fitted, params))
        return fake_quantize(rows[j], params[0], params[1], maxq), (params, *carry[1:])

    carry = (channel_params,)
    if dynamic:
        unfitted = jnp.zeros((starts_per_block, d_out), jnp.float32)
        carry = (channel_params, (unfitted, unfitted), jnp.int32(0))
    Q, _ = obs_sweep(W, U, block_size, visit_row, carry, begin_block)
    Q = Q[:d_in]
    if act_order:
        Q = Q[jnp.argsort(perm)]
    return Q


def gptq_quantize(
    W: jax.Array,
    H: jax.Array,
    spec: str | QuantSpec,
    act_order: bool = False,
    block_size: int = 128,
    percdamp: float = 0.01,
) -> jax.Array:
    """GPTQ: Frantar, Ashkboos, Hoefler & Alistarh (2022), "GPTQ: Accurate Post-Training
    Quantization for Generative Pre-trained Transformers".

    The reference's ``fasterquant`` (asymmetric grid) in our layout: dead inputs
    (``H_ii == 0``) zeroed; ``U``, the upper Cholesky factor of the dampened ``H^-1``; the
    inputs quantized one row at a time in blocks of ``block_size`` with lazy batch updates
    (:func:`nasjax.llm.sparsity.obs_sweep`, ``lax.fori_loop`` loops, jitted). Grids: per
    channel, fitted once on ``W``; per group, fitted on a group's ``group_size`` rows
    when the sweep reaches its first row (rows as updated by earlier blocks, as the
    reference).

    ``act_order``: rows are visited in descending ``diag(H)``. Groups then still cover
    consecutive *original* inputs, each fitted upfront on the unquantized ``W`` -- the
    reference's ``--act-order --static-groups`` -- so that storage needs no per-input
    group index and :func:`quantized_bytes` is unchanged.

    Args:
      W: ``[d_in, d_out]``.
      H: ``[d_in, d_in]``, e.g. :func:`nasjax.llm.sparsity.hessian`.
      spec: a :class:`QuantSpec` or its string (``"4_g128"``).
      act_order: visit inputs by descending Hessian diagonal.
      block_size: rows per lazy-update block.
      percdamp: dampening, a fraction of the mean Hessian diagonal.

    Returns:
      The dequantized ``[d_in, d_out]`` matrix in ``W``'s dtype.
    """
    W = check_matrix(W)
    spec = parse_quant_spec(spec)
    H = check_hessian(H, W.shape[0])
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise NasjaxError(f"block_size must be an integer >= 1, got {block_size!r}")
    Q = _gptq(
        W,
        H,
        jnp.float32(spec.maxq),
        jnp.float32(percdamp),
        group_size=spec.group_size,
        act_order=bool(act_order),
        block_size=block_size,
    )
    return Q.astype(W.dtype)
