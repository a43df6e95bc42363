"""Tests for the DARTS space: genotype strings, the evaluation network's parameter counts
against the reference implementation, the relaxed search network in all mixed-op modes,
the DARTS discretisation rule, and clear errors for bad input."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.cli import main
from nasjax.errors import NasjaxError
from nasjax.nets.layers import avg_pool, avg_pool_window, depthwise_conv, max_pool
from nasjax.nets.relaxed import ArchWeights
from nasjax.objectives import benchmark_variables
from nasjax.spaces import SPACES, make_space
from nasjax.spaces.darts import PUBLISHED, DartsSpace
from nasjax.spaces.darts_net import GENOTYPE_OPS, OPS, count_params_no_aux
from nasjax.spaces.darts_search_net import check_alpha, discretize_alpha

SPACE = DartsSpace()

# Parameter counts of the reference NetworkCIFAR (C=36, 20 cells, CIFAR-10, auxiliary head
# excluded): DARTS_V2's is the reference train.py's logged "param size = 3.349342MB";
# DARTS_V1's and PC_DARTS's come from a PyTorch restatement of the reference
# cnn/model.py + cnn/operations.py (PC-DARTS reports 3.63M for its cell).
REFERENCE_PARAMS = {"DARTS_V1": 3_169_414, "DARTS_V2": 3_349_342, "PC_DARTS": 3_634_678}


def _params(net, shape):
    variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, *shape))))
    return variables["params"]


# ------------------------------------------------------------------ genotype and strings


def test_registered_and_layout():
    assert SPACES["darts"] is DartsSpace and isinstance(make_space("darts"), DartsSpace)
    assert SPACE.num_decisions == 32
    assert SPACE.num_choices[:8] == (2, 7, 2, 7, 3, 7, 3, 7)
    assert SPACE.num_choices[16:] == SPACE.num_choices[:16]
    assert DartsSpace(nodes=2).num_choices == (2, 7, 2, 7, 3, 7, 3, 7) * 2
    assert OPS[0] == "none" and GENOTYPE_OPS == OPS[1:] and len(OPS) == 8


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_round_trip(name):
    g = SPACE.from_string(name)
    assert SPACE.to_string(g) == PUBLISHED[name]
    np.testing.assert_array_equal(SPACE.from_string(SPACE.to_string(g)), g)


def test_notation_details():
    g = SPACE.from_string("DARTS_V2")
    normal, reduce = SPACE.cells(g)
    assert normal[-1] == ("dil_conv_3x3", 2) and reduce[0] == ("max_pool_3x3", 0)
    assert g[:4].tolist() == [0, GENOTYPE_OPS.index("sep_conv_3x3"), 1, 3]
    # range() concats (as in PC-DARTS's file), positional fields and line breaks parse.
    text = PUBLISHED["DARTS_V2"].replace("[2, 3, 4, 5]", "range(2, 6)")
    np.testing.assert_array_equal(SPACE.from_string(text), g)
    positional = f"Genotype({list(normal)},\n [2, 3, 4, 5], {list(reduce)}, [2, 3, 4, 5])"
    np.testing.assert_array_equal(SPACE.from_string(positional), g)


def test_sample_mutate_neighbours_are_valid_round_trips():
    key1, key2 = jax.random.split(jax.random.key(0))
    pop = SPACE.sample(key1, 64)
    assert bool(jnp.all(SPACE.is_valid(pop)))
    mutated = SPACE.mutate(key2, pop)
    assert bool(jnp.all(SPACE.is_valid(mutated)))
    assert np.all(np.sum(np.asarray(mutated) != np.asarray(pop), axis=1) == 1)
    neighbours = SPACE.neighbours(pop[0])
    assert neighbours.shape == (sum(SPACE.num_choices) - 32, 32)
    assert bool(jnp.all(SPACE.is_valid(neighbours)))
    for g in np.asarray(pop[:8]):
        np.testing.assert_array_equal(SPACE.from_string(SPACE.to_string(g)), g)


_V2 = PUBLISHED["DARTS_V2"]


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("|nor_conv_3x3~0|+|none~0|none~1|", ["not a DARTS genotype", "Genotype(normal=["]),
        ("[('sep_conv_3x3', 0)]", ["not a DARTS genotype", "e.g. Genotype("]),
        ("DARTS_V3", ["not a DARTS genotype"]),
        (_V2.replace("'dil_conv_3x3'", "'conv_9x9'"), ["'conv_9x9'", "sep_conv_5x5"]),
        (_V2.replace("'dil_conv_3x3'", "'none'"), ["'none'", "never chosen"]),
        (_V2.replace("('sep_conv_3x3', 1)", "('sep_conv_3x3', 2)", 1), ["states 0..1"]),
        (_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 6)"), ["states 0..4"]),
        (_V2.replace(", ('dil_conv_3x3', 2)", ""), ["8 (op, input) pairs"]),
        (_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"), ["[2, 3, 4, 5]"]),
        (_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=x"), ["not a literal"]),
        (_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), ["missing reduce_concat"]),
        (_V2.replace("reduce_concat", "concat"), ["unexpected or repeated field 'concat'"]),
        (_V2.replace("'sep_conv_3x3', 0)", "'sep_conv_3x3')", 1), ["(op, input) pair"]),
    ],
)
def test_bad_strings_are_clear_errors(text, fragments):
    with pytest.raises(NasjaxError) as err:
        SPACE.from_string(text)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_bad_genotypes_and_sizes():
    with pytest.raises(NasjaxError, match="out of range"):
        SPACE.to_string(np.full(32, 7, np.int32))
    with pytest.raises(NasjaxError, match="32 integers"):
        SPACE.decode(np.zeros(31, np.int32))
    with pytest.raises(NasjaxError, match="channels must be an integer >= 1"):
        SPACE.decode(SPACE.from_string("DARTS_V2"), channels=0)
    with pytest.raises(NasjaxError, match="unknown dataset"):
        SPACE.decode(SPACE.from_string("DARTS_V2"), "mnist2d")


# ------------------------------------------------------------------ evaluation network


def test_reference_param_count_darts_v1():
    net = SPACE.decode(SPACE.from_string("DARTS_V1"), "cifar10")
    assert (net.channels, net.layers) == (36, 20)
    assert count_params_no_aux(_params(net, (32, 32, 3))) == REFERENCE_PARAMS["DARTS_V1"]


def test_cli_info_reference_param_count_darts_v2(capsys):
    argv = ["info", "--space", "darts", "--arch", "DARTS_V2", "--dataset", "cifar10"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["params"] == REFERENCE_PARAMS["DARTS_V2"]
    assert (record["channels"], record["cells_per_stage"]) == (36, 6)
    assert record["arch"] == PUBLISHED["DARTS_V2"]
    # "528M" MACs, as published for DARTS (V2) on CIFAR-10; FLOPs add the classifier bias.
    assert record["macs"] == 528_359_040 and record["flops"] == record["macs"] + 10


def _hand_count(ndim, op):
    """Stem, two 1x1 preprocess convs, the reduction edges, classifier: digits / MNIST-1D
    (1 input channel), C=4 (so 8 in the reduction cell), one node, one reduction cell."""
    k = 3 if op == "sep_conv_3x3" else 5
    c, window = 8, k**ndim
    stem = 3**ndim * 1 * 12 + 2 * 12
    preprocess = 2 * (12 * c + 2 * c)
    if op == "sep_conv_3x3":
        edge0 = 2 * (window * c + c * c + 2 * c)
    else:  # dil_conv_5x5
        edge0 = window * c + c * c + 2 * c
    edge1 = 2 * (c * c // 2) + 2 * c  # skip_connect on a stride-2 edge: FactorizedReduce
    return stem + preprocess + edge0 + edge1 + (c * 10 + 10)


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
@pytest.mark.parametrize("op", ["sep_conv_3x3", "dil_conv_5x5"])
def test_hand_counted_tiny_network(dataset, op):
    space = DartsSpace(nodes=1)
    cell = [(op, 0), ("skip_connect", 1)]
    g = space.from_cells(cell, cell)
    net = space.decode(g, dataset, channels=4, layers=1)  # one cell: a reduction cell
    shape = {"digits": (8, 8, 1), "mnist1d": (40, 1)}[dataset]
    assert count_params_no_aux(_params(net, shape)) == _hand_count(len(shape) - 1, op)


def test_decoded_forward_train_aux_and_drop_path():
    """(The 1D and 2D decoded forward passes in inference mode are traced by every
    ``_params``/``eval_shape`` above.)"""
    g = SPACE.from_string("DARTS_V2")
    net = SPACE.decode(g, "digits", channels=4, layers=3, auxiliary=True)
    variables = benchmark_variables(net, (8, 8, 1))  # concrete values, no initialisers run
    plain = benchmark_variables(SPACE.decode(g, "digits", channels=4, layers=3), (8, 8, 1))
    assert "auxiliary_head" in variables["params"] and "auxiliary_head" not in plain["params"]
    assert count_params_no_aux(variables["params"]) == count_params_no_aux(plain["params"])
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    logits, state = jax.jit(
        lambda v, x, key: net.apply(
            v,
            x,
            train=True,
            drop_rate=0.2,
            rngs={"dropout": key},
            mutable=["batch_stats", "intermediates"],
        )
    )(variables, x, jax.random.key(1))
    for out in (logits, state["intermediates"]["auxiliary_logits"][0]):
        chex.assert_shape(out, (3, 10))
        assert bool(jnp.all(jnp.isfinite(out)))


# ------------------------------------------------------------------ layers


def _naive_depthwise(x, kernel, stride, padding, dilation):
    x = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    k = kernel.shape[0]
    span = dilation * (k - 1) + 1
    out = (x.shape[1] - span) // stride + 1
    y = np.zeros((x.shape[0], out, out, x.shape[-1]))
    for i in range(out):
        for j in range(out):
            patch = x[
                :,
                i * stride : i * stride + span : dilation,
                j * stride : j * stride + span : dilation,
            ]
            y[:, i, j] = np.einsum("bhwc,hwc->bc", patch, kernel)
    return y


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 2)])
def test_depthwise_conv_and_pools_match_naive(stride, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3)).astype(np.float32)
    pad = dilation
    got = depthwise_conv(jnp.asarray(x), jnp.asarray(kernel), stride, pad, dilation)
    np.testing.assert_allclose(got, _naive_depthwise(x, kernel, stride, pad, dilation), atol=1e-4)
    np.testing.assert_allclose(
        avg_pool_window(jnp.asarray(x), 3, stride, 1),
        avg_pool(jnp.asarray(x), 3, stride, 1),
        atol=1e-6,
    )
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    n = (9 - 3) // stride + 1
    want = np.stack(
        [
            np.stack(
                [
                    padded[:, i * stride : i * stride + 3, j * stride : j * stride + 3].max((1, 2))
                    for j in range(n)
                ],
                1,
            )
            for i in range(n)
        ],
        1,
    )
    np.testing.assert_allclose(max_pool(jnp.asarray(x), 3, stride, 1), want)


# ------------------------------------------------------------------ relaxed network


def _arch(net, key, mode):
    alpha = jax.random.normal(key, net.alpha_shape)
    index = jnp.argmax(alpha, -1)
    if mode == "gdas":
        return ArchWeights(jax.nn.one_hot(index, len(OPS)), index)
    beta = jnp.zeros(net.beta_shape) if mode == "pcdarts" else None
    return ArchWeights(jax.nn.softmax(alpha, -1), None, beta)


TINY = {"channels": 8, "layers": 3}  # cells: normal, reduction, reduction
ONE_NODE = DartsSpace(nodes=1)  # 2 relaxed edges per cell: small programs, fast tests


@pytest.mark.parametrize("dataset, shape", [("digits", (8, 8, 1)), ("mnist1d", (40, 1))])
@pytest.mark.parametrize("mode", ["darts", "gdas", "pcdarts"])
def test_relaxed_forward_shapes(dataset, shape, mode):
    net = ONE_NODE.relaxed(dataset, mode, **TINY)
    assert net.mode == mode and net.alpha_shape == (2, 2, 8) and net.beta_shape == (2, 2)
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, *shape))
    logits = net.apply(params, x, _arch(net, jax.random.key(2), mode))
    chex.assert_shape(logits, (4, 10))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_paper_sizes():
    net = SPACE.relaxed("cifar10", "darts")
    assert net.alpha_shape == (2, 14, 8) and net.beta_shape == (2, 14)
    params = jax.eval_shape(net.init, jax.random.key(0))
    assert params["cell_7"]["edge_13"]["sep_conv_5x5"]["pw2"].shape == (1, 1, 64, 64)
    assert params["cell_5"]["edge_0"]["skip_connect"]["conv_1"].shape == (1, 1, 64, 32)
    assert params["stem"]["kernel"].shape == (3, 3, 3, 48)


def test_gdas_one_hot_equals_darts_with_the_same_weights():
    space = ONE_NODE
    darts = space.relaxed("digits", "darts", **TINY)
    gdas = space.relaxed("digits", "gdas", **TINY)
    params = darts.init(jax.random.key(0))
    chex.assert_trees_all_equal_shapes(params, gdas.init(jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    arch = _arch(gdas, jax.random.key(3), "gdas")
    np.testing.assert_allclose(
        gdas.apply(params, x, arch), darts.apply(params, x, ArchWeights(arch.weights)), atol=1e-4
    )


def test_pcdarts_partial_channels_and_beta():
    space = ONE_NODE
    pc1 = space.relaxed("digits", "pcdarts", partial_k=1, **TINY)
    darts = space.relaxed("digits", "darts", **TINY)
    params = pc1.init(jax.random.key(0))
    chex.assert_trees_all_equal_shapes(params, darts.init(jax.random.key(0)))
    pc4 = space.relaxed("digits", "pcdarts", partial_k=4, **TINY)
    p4 = pc4.init(jax.random.key(0))
    assert p4["cell_0"]["edge_0"]["dil_conv_3x3"]["pw"].shape == (1, 1, 2, 2)  # C/K = 8/4
    assert p4["cell_0"]["preprocess1"]["kernel"].shape == (1, 1, 24, 8)  # full C
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    arch = _arch(pc4, jax.random.key(2), "pcdarts")
    base = pc4.apply(p4, x, arch)
    tilted = pc4.apply(p4, x, arch._replace(beta=arch.beta.at[:, 0].set(3.0)))
    assert not np.allclose(base, tilted)
    w = ArchWeights(arch.weights)
    np.testing.assert_allclose(
        darts.apply(params, x, w), darts.apply(params, x, w._replace(beta=arch.beta))
    )  # darts ignores beta
    # K=1: every channel goes through the ops and the shuffle is the identity, so a node
    # is softmax(beta)-weighted: with beta = 0 and one node of 2 edges, half the darts
    # node. Earlier cells' halving is undone by the next cell's BatchNorm, so the logits
    # (before the classifier bias) are half of darts's (up to BatchNorm's epsilon).
    bias = params["classifier"]["bias"]
    half = pc1.apply(params, x, w._replace(beta=jnp.zeros(pc1.beta_shape))) - bias
    np.testing.assert_allclose(half, 0.5 * (darts.apply(params, x, w) - bias), rtol=1e-3, atol=1e-5)
    with pytest.raises(NasjaxError, match="divides channels=8"):
        space.relaxed("digits", "pcdarts", partial_k=3, **TINY)


# ------------------------------------------------------------------ discretisation


def _alpha_with(entries, nodes=4):
    """Logits -10 everywhere except ``{(cell, edge, op): value}``."""
    e = sum(i + 2 for i in range(nodes))
    alpha = np.full((2, e, 8), -10.0)
    for index, value in entries.items():
        alpha[index] = value
    return alpha


def test_discretize_darts_rule():
    sep3, skip, dil5, none = (
        OPS.index(o) for o in ("sep_conv_3x3", "skip_connect", "dil_conv_5x5", "none")
    )
    alpha = _alpha_with(
        {
            (0, 0, sep3): 2.0,  # node 0: edges 0 and 1 both kept, the stronger first
            (0, 1, dil5): 3.0,
            (0, 2, none): 9.0,  # node 1: `none` never counts ...
            (0, 3, skip): 1.0,
            (0, 4, sep3): 2.0,  # ... so edges 4 (state 2) and 3 (state 1) win
            (1, 9, skip): 5.0,  # reduce node 3: edge 9 (state 0) strongest
            (1, 13, sep3): 4.0,  # then edge 13 (state 4)
        }
    )
    g = discretize_alpha(alpha)
    normal, reduce = SPACE.cells(g)
    assert normal[:4] == (
        ("dil_conv_5x5", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 2),
        ("skip_connect", 1),
    )
    assert reduce[6:] == (("skip_connect", 0), ("sep_conv_3x3", 4))
    # ties (all other nodes uniform): lower state first, first non-`none` op (max_pool).
    assert normal[4:6] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert bool(SPACE.is_valid(jnp.asarray(g)))


def test_discretize_pcdarts_uses_edge_normalisation():
    sep3 = OPS.index("sep_conv_3x3")
    alpha = _alpha_with({(0, 2, sep3): 4.0, (0, 3, sep3): 3.0, (0, 4, sep3): 2.0})
    beta = np.zeros((2, 14))
    darts_net = SPACE.relaxed("digits", "darts", channels=4, layers=3)
    pc_net = SPACE.relaxed("digits", "pcdarts", channels=4, layers=3)
    assert SPACE.cells(darts_net.discretize(alpha, beta))[0][2:4] == (
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
    )
    beta[0, 2] = -5.0  # node 1's edge from state 0 is down-weighted by softmax(beta)
    assert SPACE.cells(pc_net.discretize(alpha, beta))[0][2:4] == (
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 2),
    )
    assert SPACE.cells(darts_net.discretize(alpha, beta))[0][2:4] == (
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
    )


def test_alpha_shape_errors():
    with pytest.raises(NasjaxError, match=r"alpha has shape \(2, 14, 7\).*expects \(2, 14, 8\)"):
        check_alpha(np.zeros((2, 14, 7)))
    with pytest.raises(NasjaxError, match=r"beta has shape \(14,\).*expects \(2, 14\)"):
        check_alpha(np.zeros((2, 14, 8)), np.zeros(14))
    with pytest.raises(NasjaxError, match=r"expects \(2, 14, 8\)"):
        discretize_alpha(np.zeros((14, 8)))
    space = ONE_NODE
    net = space.relaxed("digits", "gdas", **TINY)
    params = net.init(jax.random.key(0))
    x = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(
        NasjaxError, match=r"alpha has shape \(2, 14, 8\).*1 nodes expects \(2, 2, 8\)"
    ):
        net.apply(params, x, ArchWeights(jnp.zeros((2, 14, 8))))
    with pytest.raises(NasjaxError, match="gdas needs arch.index"):
        net.apply(params, x, ArchWeights(jnp.zeros((2, 2, 8))))
    pc = space.relaxed("digits", "pcdarts", **TINY)
    with pytest.raises(NasjaxError, match="pcdarts needs arch.beta"):
        pc.apply(pc.init(jax.random.key(0)), x, ArchWeights(jnp.zeros((2, 2, 8))))
    with pytest.raises(NasjaxError, match="unknown mixed-op mode 'enas'"):
        space.relaxed("digits", "enas")
