"""Per-matrix one-shot compression (nasjax.llm.sparsity, nasjax.llm.weight_quant): exact
mask counts, the published error orderings on synthetic LLM-like inputs, and SparseGPT and
GPTQ against a plain NumPy transcription of the papers' algorithms in their own layout
([d_out, d_in], a Python loop over columns, float64)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.llm import sparsity as sp
from nasjax.llm import weight_quant as wq

D_IN, D_OUT, TOKENS = 320, 96, 2048  # 2.5 blocks of 128: the padded last block is exercised


def _llm_like(d_in, d_out, tokens, seed=0):
    """Inputs X = Z A with a decaying spectrum and a few outlier channels 20x larger (as
    LLM activations), weights Gaussian."""
    rng = np.random.default_rng(seed)
    # Linear algebra in JAX: NumPy's threaded BLAS crawls beside JAX's threads on 2 cores.
    left, _ = jnp.linalg.qr(rng.standard_normal((d_in, d_in), np.float32))
    right, _ = jnp.linalg.qr(rng.standard_normal((d_in, d_in), np.float32))
    mixing = _matmul(left / (1 + jnp.arange(d_in) / 16), right)
    X = np.array(_matmul(rng.standard_normal((tokens, d_in), np.float32), mixing))
    X[:, rng.choice(d_in, 6, replace=False)] *= 20
    X /= X.std()
    W = 0.05 * rng.standard_normal((d_in, d_out), np.float32)
    return X.astype(np.float32), W


def _matmul(a, b):
    return jnp.matmul(a, b, precision="highest")


@pytest.fixture(scope="module")
def layer():
    X, W = _llm_like(D_IN, D_OUT, TOKENS)
    stats = sp.init_stats(D_IN)
    for chunk in np.split(X, 4):  # accumulated in pieces, as over calibration batches
        stats = sp.accumulate(stats, chunk)
    return X, W, sp.hessian(stats), sp.input_norms(stats)


def _rel_error(X, W, W_new):
    return float(jnp.linalg.norm(_matmul(X, W - W_new)) / jnp.linalg.norm(_matmul(X, W)))


# ------------------------------------------------------------------------------ patterns


@pytest.mark.parametrize(
    "text, sparsity, n, m",
    [
        ("unstructured_0.5", 0.5, 0, 0),
        ("unstructured_0.7", 0.7, 0, 0),
        ("unstructured_.25", 0.25, 0, 0),
        ("2:4", 0.5, 2, 4),
        ("4:8", 0.5, 4, 8),
        ("1:3", 2 / 3, 1, 3),
    ],
)
def test_parse_pattern(text, sparsity, n, m):
    pattern = sp.parse_pattern(text)
    assert (pattern.n, pattern.m, pattern.is_nm) == (n, m, m > 0)
    assert pattern.sparsity == pytest.approx(sparsity)
    assert sp.parse_pattern(pattern.name) == pattern


@pytest.mark.parametrize(
    "text",
    [
        "unstructured_0",  # prunes nothing
        "unstructured_0.0",
        "unstructured_1",  # prunes everything
        "unstructured_1.5",
        "unstructured_-0.5",
        "unstructured_",
        "4:4",  # keeps everything
        "0:4",
        "5:4",
        "2:0",
        "2-4",
        "2:4:8",
        "dense",
        "",
        None,
    ],
)
def test_bad_pattern_is_one_line_error(text):
    with pytest.raises(NasjaxError) as info:
        sp.parse_pattern(text)
    message = str(info.value)
    assert "\n" not in message and repr(text) in message
    assert "unstructured_" in message and "N:M" in message


def test_bad_shapes_are_errors(layer):
    _, W, H, norms = layer
    with pytest.raises(NasjaxError, match="divisible by 8"):
        sp.magnitude_prune(W[:12], "4:8")
    with pytest.raises(NasjaxError, match="block_size divisible by 8"):
        sp.sparsegpt_prune(W, H, "4:8", block_size=12)
    with pytest.raises(NasjaxError, match="Hessian"):
        sp.sparsegpt_prune(W, H[:10, :10], "2:4")
    with pytest.raises(NasjaxError, match="input norms"):
        sp.wanda_prune(W, norms[:5], "2:4")
    with pytest.raises(NasjaxError, match="weight matrix"):
        wq.rtn_quantize(W[0], wq.QuantSpec(4))
    with pytest.raises(NasjaxError, match="channels"):
        sp.accumulate(sp.init_stats(D_IN), np.zeros((3, D_IN + 1), np.float32))
    for bits, group in [(1, None), (9, None), (4, 0), (4.0, None)]:
        with pytest.raises(NasjaxError):
            wq.QuantSpec(bits, group)
    for text in ["4", "4_g", "4_group", "1_channel", "9_g128", "4_g0", "g128", None]:
        with pytest.raises(NasjaxError, match="4_channel"):
            wq.parse_quant_spec(text)
    assert wq.parse_quant_spec("3_g128") == wq.QuantSpec(3, 128)
    assert wq.parse_quant_spec("4_channel").name == "4_channel"


def test_calibration_stats():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 50, 16)).astype(np.float32)
    stats = sp.accumulate(sp.accumulate(sp.init_stats(16), X[0]), X[1])
    flat = X.reshape(-1, 16).astype(np.float64)
    assert int(stats.count) == 100
    np.testing.assert_allclose(sp.hessian(stats), 2 / 100 * flat.T @ flat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sp.input_norms(stats), np.linalg.norm(flat, axis=0), rtol=1e-5)


# ------------------------------------------------------------------------------ masks


def _prune(method, layer, pattern):
    _, W, H, norms = layer
    if method == "magnitude":
        return sp.magnitude_prune(W, pattern)
    if method == "wanda":
        return sp.wanda_prune(W, norms, pattern)
    return sp.sparsegpt_prune(W, H, pattern)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured_0.5", "unstructured_0.7", "2:4", "4:8"])
def test_mask_counts_are_exact(layer, method, pattern):
    W = layer[1]
    W_new, keep = (np.asarray(a) for a in _prune(method, layer, pattern))
    assert keep.shape == W.shape and keep.dtype == bool
    assert np.all(W_new[~keep] == 0)
    if method != "sparsegpt":
        np.testing.assert_array_equal(W_new[keep], W[keep])
    p = sp.parse_pattern(pattern)
    pruned = ~keep
    if p.is_nm:
        per_group = keep.reshape(D_IN // p.m, p.m, D_OUT).sum(axis=1)
        assert np.all(per_group == p.n)
    elif method == "magnitude":
        assert pruned.sum() == sp.num_pruned(p.sparsity, W.size)
    elif method == "wanda":
        assert np.all(pruned.sum(axis=0) == sp.num_pruned(p.sparsity, D_IN))
    else:  # SparseGPT: each block of 128 input rows, over all outputs
        for start in range(0, D_IN, 128):
            rows = min(128, D_IN - start)
            block = pruned[start : start + rows].sum()
            assert block == sp.num_pruned(p.sparsity, rows * D_OUT), (start, block)


def test_ties_are_broken_by_index():
    """With many equal scores (a weight grid of 5 values and zeros) the counts stay exact and
    the lowest-index ties go first, as a stable sort of the scores."""
    rng = np.random.default_rng(4)
    W = rng.integers(-2, 3, size=(64, 16)).astype(np.float32)
    for sparsity in (0.3, 0.5, 0.75):
        k = sp.num_pruned(sparsity, W.size)
        _, keep = sp.magnitude_prune(W, sp.SparsityPattern.unstructured(sparsity))
        expected = np.ones(W.size, bool)
        expected[np.argsort(np.abs(W).ravel(), kind="stable")[:k]] = False
        np.testing.assert_array_equal(np.asarray(keep).ravel(), expected)
        _, keep = sp.wanda_prune(
            W, np.ones(64, np.float32), sp.SparsityPattern.unstructured(sparsity)
        )
        k = sp.num_pruned(sparsity, 64)
        order = np.argsort(np.abs(W), axis=0, kind="stable")[:k]
        expected = np.ones(W.shape, bool)
        np.put_along_axis(expected, order, False, axis=0)
        np.testing.assert_array_equal(np.asarray(keep), expected)
    _, keep = sp.magnitude_prune(W, "2:4")
    groups = np.abs(W).reshape(16, 4, 16)
    expected = np.ones(groups.shape, bool)
    np.put_along_axis(expected, np.argsort(groups, axis=1, kind="stable")[:, :2], False, axis=1)
    np.testing.assert_array_equal(np.asarray(keep), expected.reshape(W.shape))


# ------------------------------------------------------------------------------ orderings


def test_pruning_error_ordering(layer):
    """The published ordering at 50 % unstructured (SparseGPT < Wanda < magnitude) and at
    2:4 (SparseGPT < Wanda), with margins (measured here: 0.60 and 0.33 at 50 %, 0.58 at
    2:4)."""
    X, W = layer[:2]
    err = {
        (method, pattern): _rel_error(X, W, _prune(method, layer, pattern)[0])
        for method in ["magnitude", "wanda", "sparsegpt"]
        for pattern in ["unstructured_0.5", "2:4"]
    }
    half, nm = "unstructured_0.5", "2:4"
    assert err["sparsegpt", half] < 0.8 * err["wanda", half] < 0.8 * 0.6 * err["magnitude", half]
    assert err["sparsegpt", nm] < 0.8 * err["wanda", nm] < 0.8 * 0.6 * err["magnitude", nm]


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group", [None, 128])
def test_gptq_beats_rtn(layer, bits, group):
    """GPTQ below 0.7x round-to-nearest's output error (measured here: ~0.44), with and
    without act-order; all three on the grid (<= 2^bits values per group and output)."""
    X, W, H, _ = layer
    spec = wq.QuantSpec(bits, group)
    rtn = np.asarray(wq.rtn_quantize(W, spec))
    gptq = np.asarray(wq.gptq_quantize(W, H, spec))
    gptq_act = np.asarray(wq.gptq_quantize(W, H, spec, act_order=True))
    e_rtn = _rel_error(X, W, rtn)
    assert _rel_error(X, W, gptq) < 0.7 * e_rtn
    assert _rel_error(X, W, gptq_act) < 0.7 * e_rtn
    size = D_IN if group is None else group
    for Q in (rtn, gptq, gptq_act):
        for start in range(0, D_IN, size):
            block = Q[start : start + size]
            distinct = max(len(np.unique(block[:, j])) for j in range(D_OUT))
            assert distinct <= 2**bits


@pytest.mark.parametrize("spec", ["4_channel", "3_g128", "3_g48"])
def test_gptq_with_identity_hessian_is_rtn(layer, spec):
    """With H = I no error is propagated (U is diagonal): GPTQ rounds every weight to
    nearest on the same grids as RTN, bit for bit."""
    W = layer[1]
    gptq = wq.gptq_quantize(W, jnp.eye(D_IN), spec)
    np.testing.assert_array_equal(np.asarray(gptq), np.asarray(wq.rtn_quantize(W, spec)))


def test_rtn_grid():
    """Each group of each output is on its min-max grid: at most 2^bits values, the group's
    extremes (and 0) reproduced to within half a step."""
    W = np.random.default_rng(2).standard_normal((100, 7)).astype(np.float32)
    for bits in (2, 3, 4):
        Q = np.asarray(wq.rtn_quantize(W, wq.QuantSpec(bits, 32)))
        for start in range(0, 100, 32):
            group, qgroup = W[start : start + 32], Q[start : start + 32]
            lo, hi = np.minimum(group.min(0), 0), np.maximum(group.max(0), 0)
            step = (hi - lo) / (2**bits - 1)
            for j in range(7):
                assert len(np.unique(qgroup[:, j])) <= 2**bits
            assert np.all(np.abs(qgroup - group) <= step / 2 * (1 + 1e-5) + 1e-7)


def test_quantized_bytes():
    # 4 bits x 256 x 64 = 8192 bytes; per output 1 (channel) or 2 (g128) groups of a
    # float16 scale and a 4-bit zero: 64 x 20 bits = 160 bytes per group.
    assert wq.quantized_bytes((256, 64), wq.QuantSpec(4)) == 8192 + 160
    assert wq.quantized_bytes((256, 64), wq.QuantSpec(4, 128)) == 8192 + 320
    # 3 bits x 320 x 64 = 7680 bytes; 3 groups (128, 128, 64) x 64 outputs x 19 bits.
    assert wq.quantized_bytes((320, 64), "3_g128") == 7680 + 3 * 64 * 19 // 8
    # Odd sizes round up to whole bytes: 3 x 5 x 3 + 1 x 3 x 19 = 102 bits -> 13 bytes.
    assert wq.quantized_bytes((5, 3), wq.QuantSpec(3)) == math.ceil(102 / 8) == 13


def test_deterministic(layer):
    _, W, H, _ = layer
    a = sp.sparsegpt_prune(W, H, "unstructured_0.5")
    b = sp.sparsegpt_prune(W, H, "unstructured_0.5")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(
        np.asarray(wq.gptq_quantize(W, H, "3_g128", act_order=True)),
        np.asarray(wq.gptq_quantize(W, H, "3_g128", act_order=True)),
    )


# ------------------------------------------------------------------------------ reference


def _ref_dead(W, H):
    """Dead inputs (H_ii == 0): H_ii = 1 and their weights 0 (W [d_out, d_in], copies)."""
    W, H = W.astype(np.float64).copy(), H.astype(np.float64).copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return W, H


def _ref_factor(H, percdamp):
    """Upper Cholesky factor of the dampened inverse."""
    H = H + percdamp * np.mean(np.diag(H)) * np.eye(len(H))
    return np.linalg.cholesky(np.linalg.inv(H)).T


def _ref_sparsegpt(W, H, pattern, block, percdamp=0.01):
    """SparseGPT's fasterprune in the paper's layout: W [d_out, d_in]; returns the pruned W
    and the keep mask. Counts as nasjax's (exactly round(sparsity * block) per block)."""
    W, H = _ref_dead(W, H)
    U = _ref_factor(H, percdamp)
    cols = W.shape[1]
    pruned = np.zeros(W.shape, bool)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, U1 = W[:, i1:i2].copy(), U[i1:i2, i1:i2]
        Q1, E1 = np.zeros_like(W1), np.zeros_like(W1)
        mask1 = np.zeros(W1.shape, bool)
        if not pattern.is_nm:
            score = (W1**2 / np.diag(U1)[None] ** 2).ravel()
            order = np.argsort(score, kind="stable")[: sp.num_pruned(pattern.sparsity, W1.size)]
            mask1.ravel()[order] = True
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0:
                group = slice(i, i + pattern.m)
                score = W1[:, group] ** 2 / np.diag(U1)[group][None] ** 2
                low = np.argsort(score, axis=1, kind="stable")[:, : pattern.m - pattern.n]
                np.put_along_axis(mask1[:, group], low, True, axis=1)
            w = W1[:, i]
            q = np.where(mask1[:, i], 0.0, w)
            err = (w - q) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            Q1[:, i], E1[:, i] = q, err
        W[:, i1:i2], pruned[:, i1:i2] = Q1, mask1
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return W, ~pruned


def _ref_params(x, maxq):  # the grid over each row of x [d_out, n]
    lo, hi = np.minimum(x.min(1), 0), np.maximum(x.max(1), 0)
    empty = (lo == 0) & (hi == 0)
    lo, hi = np.where(empty, -1, lo), np.where(empty, 1, hi)
    scale = (hi - lo) / maxq
    return scale, np.round(-lo / scale)


def _ref_gptq(W, H, bits, group, act_order, block, percdamp=0.01):
    """GPTQ's fasterquant in the paper's layout (act-order with static groups)."""
    maxq = 2**bits - 1
    params = _ref_params(W.astype(np.float64), maxq)  # fitted before the dead inputs are zeroed
    W, H = _ref_dead(W, H)
    cols = W.shape[1]
    size = group or cols
    static = [_ref_params(W[:, g : g + size], maxq) for g in range(0, cols, size)]
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    U = _ref_factor(H, percdamp)
    Q = np.zeros_like(W)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, U1 = W[:, i1:i2].copy(), U[i1:i2, i1:i2]
        E1 = np.zeros_like(W1)
        for i in range(i2 - i1):
            if group and act_order:
                params = static[perm[i1 + i] // group]
            elif group and (i1 + i) % group == 0:
                params = _ref_params(W[:, i1 + i : i1 + i + group], maxq)
            scale, zero = params
            w = W1[:, i]
            q = scale * (np.clip(np.round(w / scale) + zero, 0, maxq) - zero)
            err = (w - q) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            Q[:, i1 + i], E1[:, i] = q, err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q[:, np.argsort(perm)]


@pytest.fixture(scope="module")
def small():
    """40 inputs, one of them dead: blocks of 32 (32 and 8 padded to 32; the sweep's inner
    batches of 16 rows) or of 8 (one batch per block)."""
    X, W = _llm_like(40, 6, 300, seed=3)
    X[:, 7] = 0
    H = np.asarray(sp.hessian(sp.accumulate(sp.init_stats(40), X)))
    return W, H


@pytest.mark.parametrize("pattern, block", [("unstructured_0.6", 32), ("2:4", 32), ("4:8", 8)])
def test_sparsegpt_matches_reference(small, pattern, block):
    W, H = small
    p = sp.parse_pattern(pattern)
    W_new, keep = sp.sparsegpt_prune(W, H, p, block_size=block)
    ref, ref_keep = _ref_sparsegpt(W.T, H, p, block=block)
    np.testing.assert_array_equal(np.asarray(keep), ref_keep.T)
    np.testing.assert_allclose(np.asarray(W_new), ref.T, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(W_new)[7] == 0)  # the dead input


@pytest.mark.parametrize(
    "bits, group, act_order, block",
    [(3, None, True, 32), (3, 6, False, 32), (4, 6, True, 32), (3, 12, False, 8)],
)
def test_gptq_matches_reference(small, bits, group, act_order, block):
    """Groups of 6 and 12 start inside blocks and batches and span them: their grids are
    fitted on the rows as updated by earlier blocks, as the reference."""
    W, H = small
    Q = wq.gptq_quantize(W, H, wq.QuantSpec(bits, group), act_order=act_order, block_size=block)
    ref = _ref_gptq(W.T, H, bits, group, act_order, block=block)
    np.testing.assert_allclose(np.asarray(Q), ref.T, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(Q)[7] == 0)
