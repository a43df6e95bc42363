"""Tests for nasjax.spaces: the genotype algebra, NB201 strings against the official table,
error messages, decoded parameter counts, and the supernet against decoded networks."""

from __future__ import annotations

import csv
import functools
import gzip
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from nasjax.errors import NasjaxError
from nasjax.evaluation import tabular
from nasjax.objectives import network_cost
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.nb201_net import EDGES, OPS, Cell, Edge, NB201Network
from nasjax.tasks import TASKS, get_task

SPACE = NB201Space()
NB201_TABLE = tabular.resolve_path()  # the packaged table unless NASJAX_NB201 names another

BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
BEST_C10_INDEX = 6111  # official NAS-Bench-201 index
BEST_C10_GENOTYPE = (3, 3, 3, 1, 3, 2)
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


# shared compiled functions: every distinct (function, shape) costs a compile
sample_jit = jax.jit(SPACE.sample, static_argnums=1)
mutate_jit = jax.jit(SPACE.mutate)
N = 1000  # the one batch size used with sample/mutate


@functools.cache
def samples(seed=0):
    return sample_jit(jax.random.key(seed), N)


def hamming(a, b):
    return jnp.sum(jnp.asarray(a) != jnp.asarray(b), axis=-1)


# ------------------------------------------------------------------ the official table


@pytest.fixture(scope="module")
def table():
    """``(index, arch_str)`` of every NAS-Bench-201 row."""
    if not NB201_TABLE.exists():
        message = f"NAS-Bench-201 table not found at {NB201_TABLE} (set NASJAX_NB201)"
        if os.environ.get("CI"):  # CI has shared/ beside the clone: never skip silently there
            pytest.fail(message)
        pytest.skip(message)
    with gzip.open(NB201_TABLE, "rt", newline="") as f:
        rows = [(int(r["index"]), r["arch_str"]) for r in csv.DictReader(f)]
    return rows


@pytest.fixture(scope="module")
def table_genotypes(table):
    return np.stack([SPACE.from_string(arch) for _, arch in table])


def test_table_strings_round_trip_exactly(table, table_genotypes):
    assert len(table) == SPACE.size == 15_625
    assert [i for i, _ in table] == list(range(15_625))
    chex.assert_shape(table_genotypes, (15_625, 6))
    assert table_genotypes.dtype == np.int32
    for (index, arch), genotype in zip(table, table_genotypes):
        assert SPACE.to_string(genotype) == arch, index
    assert table[BEST_C10_INDEX][1] == BEST_C10
    assert tuple(table_genotypes[BEST_C10_INDEX]) == BEST_C10_GENOTYPE


def test_table_codes_are_a_permutation(table_genotypes):
    genotypes = jnp.asarray(table_genotypes)
    codes = SPACE.to_index(genotypes)
    chex.assert_shape(codes, (15_625,))
    assert codes.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(np.asarray(codes)), np.arange(15_625))
    chex.assert_trees_all_equal(SPACE.from_index(codes), genotypes)
    all_codes = jnp.arange(SPACE.size, dtype=jnp.int32)
    chex.assert_trees_all_equal(SPACE.to_index(SPACE.from_index(all_codes)), all_codes)


def test_to_index_is_mixed_radix_with_edge_zero_most_significant():
    assert int(SPACE.to_index(jnp.array([0, 0, 0, 0, 0, 1]))) == 1
    assert int(SPACE.to_index(jnp.array([1, 0, 0, 0, 0, 0]))) == 5**5
    assert int(SPACE.to_index(jnp.array([4] * 6))) == SPACE.size - 1
    assert int(SPACE.to_index(jnp.array(BEST_C10_GENOTYPE))) == int(
        sum(v * 5 ** (5 - d) for d, v in enumerate(BEST_C10_GENOTYPE))
    )
    chex.assert_trees_all_equal(SPACE.from_index(jnp.int32(3125)), jnp.array([1, 0, 0, 0, 0, 0]))


def test_space_shape_facts():
    assert SPACE.num_choices == (5,) * 6
    assert SPACE.num_decisions == 6
    assert SPACE.max_choices == 5
    assert (
        SPACE.ops
        == OPS
        == (
            "none",
            "skip_connect",
            "nor_conv_1x1",
            "nor_conv_3x3",
            "avg_pool_3x3",
        )
    )
    assert SPACE.edges == EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert hash(SPACE) == hash(NB201Space())


# ------------------------------------------------------------------ sample / mutate / neighbours


def test_sample_shape_range_and_determinism():
    g = samples(0)
    chex.assert_shape(g, (N, 6))
    chex.assert_type(g, jnp.int32)
    assert bool(jnp.all((g >= 0) & (g < 5)))
    chex.assert_trees_all_equal(sample_jit(jax.random.key(0), N), g)
    assert not np.array_equal(samples(1), g)
    # every (decision, value) appears about 200 times
    counts = np.stack([np.bincount(np.asarray(g[:, d]), minlength=5) for d in range(6)])
    assert counts.min() > 140 and counts.max() < 260, counts


def test_mutate_changes_exactly_one_decision():
    parents = samples(1)
    key = jax.random.key(3)
    children = mutate_jit(key, parents)
    chex.assert_shape(children, (N, 6))
    chex.assert_type(children, jnp.int32)
    np.testing.assert_array_equal(hamming(parents, children), np.ones(N))
    assert bool(jnp.all(SPACE.is_valid(children)))
    chex.assert_trees_all_equal(mutate_jit(key, parents), children)  # deterministic per key
    assert not np.array_equal(mutate_jit(jax.random.key(4), parents), children)
    # the mutated decision and the new value are spread over all options
    changed = np.argmax(np.asarray(parents != children), axis=-1)
    assert set(changed.tolist()) == set(range(6))
    per_decision = np.bincount(changed, minlength=6)
    assert per_decision.min() > 100, per_decision
    offsets = (np.asarray(children) - np.asarray(parents))[np.arange(N), changed] % 5
    assert set(offsets.tolist()) == {1, 2, 3, 4}


def test_mutate_single_genotype_and_skips_fixed_decisions():
    g = jnp.array(BEST_C10_GENOTYPE, jnp.int32)
    child = mutate_jit(jax.random.key(0), g)
    chex.assert_shape(child, (6,))
    assert int(hamming(g, child)) == 1

    space = SearchSpace((1, 3, 1, 2))  # decisions 0 and 2 have a single option
    parents = jnp.zeros((500, 4), jnp.int32)
    children = jax.jit(space.mutate)(jax.random.key(1), parents)
    np.testing.assert_array_equal(hamming(parents, children), np.ones(500))
    np.testing.assert_array_equal(children[:, 0], 0)
    np.testing.assert_array_equal(children[:, 2], 0)
    assert set(np.asarray(children[:, 1]).tolist()) == {0, 1, 2}
    assert set(np.asarray(children[:, 3]).tolist()) == {0, 1}


def test_neighbours_are_all_hamming_one_genotypes():
    g = jnp.array([0, 4, 2, 1, 3, 0], jnp.int32)
    nb = SPACE.neighbours(g)
    chex.assert_shape(nb, (24, 6))
    chex.assert_type(nb, jnp.int32)
    np.testing.assert_array_equal(hamming(nb, g), np.ones(24))
    assert len({tuple(row) for row in np.asarray(nb).tolist()}) == 24
    assert bool(jnp.all(SPACE.is_valid(nb)))
    # ordered by decision: rows 4d..4d+3 change decision d
    changed = np.argmax(np.asarray(nb != g), axis=-1)
    np.testing.assert_array_equal(changed, np.repeat(np.arange(6), 4))
    # brute force: exactly the genotypes at distance 1
    brute = {
        tuple(int(v) if e != d else o for e, v in enumerate(g.tolist()))
        for d in range(6)
        for o in range(5)
        if o != int(g[d])
    }
    assert {tuple(row) for row in np.asarray(nb).tolist()} == brute
    assert SearchSpace((2, 3)).neighbours(jnp.array([0, 0])).shape == (3, 2)


def test_is_valid():
    assert bool(SPACE.is_valid(jnp.array(BEST_C10_GENOTYPE)))
    assert bool(SPACE.is_valid(jnp.zeros(6, jnp.int32)))
    assert bool(SPACE.is_valid(jnp.full(6, 4, jnp.int32)))
    assert not bool(SPACE.is_valid(jnp.array([0, 0, 0, 0, 0, 5])))
    assert not bool(SPACE.is_valid(jnp.array([-1, 0, 0, 0, 0, 0])))
    batch = jnp.array([[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 4, 5], [9, 9, 9, 9, 9, 9]])
    valid = SPACE.is_valid(batch)
    chex.assert_shape(valid, (3,))
    np.testing.assert_array_equal(valid, [True, False, False])
    mixed = SearchSpace((2, 3))
    np.testing.assert_array_equal(mixed.is_valid(jnp.array([[1, 2], [2, 1], [1, 3]])), [1, 0, 0])


def test_one_hot_shape_and_argmax_round_trip():
    g = samples(0)[:10]
    w = SPACE.one_hot(g)
    chex.assert_shape(w, (10, 6, 5))
    chex.assert_type(w, jnp.float32)
    np.testing.assert_array_equal(jnp.sum(w, axis=-1), 1.0)
    chex.assert_trees_all_equal(jnp.argmax(w, axis=-1).astype(jnp.int32), g)
    single = SPACE.one_hot(jnp.array(BEST_C10_GENOTYPE))
    chex.assert_shape(single, (6, 5))
    assert SPACE.one_hot(g, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_jit_and_eager_agree():
    key = jax.random.key(0)
    g = SPACE.sample(key, N)
    chex.assert_trees_all_equal(g, samples(0))
    key = jax.random.key(3)
    chex.assert_trees_all_equal(SPACE.mutate(key, g), mutate_jit(key, g))
    codes = SPACE.to_index(g)
    chex.assert_trees_all_equal(jax.jit(SPACE.to_index)(g), codes)
    chex.assert_trees_all_equal(jax.jit(SPACE.from_index)(codes), g)


# ------------------------------------------------------------------ strings and errors


def test_string_round_trip_of_samples_and_whitespace():
    for g in np.asarray(samples(0)[:50]):
        chex.assert_trees_all_equal(SPACE.from_string(SPACE.to_string(g)), g)
    np.testing.assert_array_equal(SPACE.from_string(" " + ALL_NONE + "\n"), np.zeros(6))
    assert SPACE.to_string(BEST_C10_GENOTYPE) == BEST_C10
    assert SPACE.to_string(np.zeros(6, np.int64)) == ALL_NONE


@pytest.mark.parametrize(
    "text,needles",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", ["expected 3 nodes"]),
        (ALL_NONE + "+|none~0|", ["expected 3 nodes"]),
        ("", ["expected 3 nodes"]),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", ["node 2 needs 2 inputs"]),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|", ["node 3 needs 3 inputs"]),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", ["node '|none~0|none~1|none~2'"]),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", ["'none~1'", "must read 'none~0'"]),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", ["'none~2'", "must read 'none~1'"]),
        ("|none~0|+|none~0|none~1|+|none|none~1|none~2|", ["'none'", "must read 'none~0'"]),
    ],
)
def test_from_string_malformed(text, needles):
    with pytest.raises(NasjaxError) as info:
        SPACE.from_string(text)
    message = str(info.value)
    assert repr(text) in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("bad_op", ["conv_5x5", "nor_conv_3x", ""])
def test_from_string_unknown_op_names_it_and_the_valid_ops(bad_op):
    text = f"|nor_conv_3x3~0|+|nor_conv_3x3~0|{bad_op}~1|+|none~0|none~1|none~2|"
    with pytest.raises(NasjaxError, match="unknown op") as info:
        SPACE.from_string(text)
    message = str(info.value)
    assert repr(bad_op) in message
    for op in OPS:
        assert op in message


@pytest.mark.parametrize(
    "genotype,needles",
    [
        ([0, 0, 0, 0, 0, 5], ["out of range", "entry 5 = 5 (valid 0..4)"]),
        ([-1, 0, 0, 0, 7, 0], ["entry 0 = -1 (valid 0..4)", "entry 4 = 7 (valid 0..4)"]),
        ([0, 0, 0, 0, 0], ["must be 6 integers", "shape (5,)"]),
        ([[0] * 6], ["must be 6 integers"]),
        ([0.0] * 6, ["must be 6 integers", "float"]),
    ],
)
def test_validate_errors(genotype, needles):
    with pytest.raises(NasjaxError) as info:
        SPACE.validate(genotype)
    for needle in needles:
        assert needle in str(info.value)
    with pytest.raises(NasjaxError):
        SPACE.decode(genotype)
    with pytest.raises(NasjaxError):
        SPACE.to_string(genotype)


def test_validate_accepts_integer_inputs():
    for g in (list(BEST_C10_GENOTYPE), np.array(BEST_C10_GENOTYPE, np.int64), jnp.array([1] * 6)):
        out = SPACE.validate(g)
        assert isinstance(out, np.ndarray) and out.dtype == np.int32 and out.shape == (6,)


@pytest.mark.parametrize("dataset", ["mnist", "CIFAR10", "imagenet"])
def test_unknown_dataset_names_the_choices(dataset):
    for build in (
        lambda: SPACE.decode(BEST_C10_GENOTYPE, dataset),
        lambda: SPACE.supernet(dataset),
    ):
        with pytest.raises(NasjaxError) as info:
            build()
        message = str(info.value)
        assert repr(dataset) in message and "valid choices" in message
        for name in TASKS:
            assert name in message


def test_base_space_string_round_trip_and_error():
    space = SearchSpace((3, 2, 4))
    assert space.to_string([2, 1, 3]) == "2,1,3"
    np.testing.assert_array_equal(space.from_string("2,1,3"), [2, 1, 3])
    with pytest.raises(NasjaxError, match="malformed genotype string"):
        space.from_string("2,x,3")
    with pytest.raises(NasjaxError, match="out of range"):
        space.from_string("2,2,3")


# ------------------------------------------------------------------ decoded networks


def test_decode_builds_the_task_network():
    net = SPACE.decode(BEST_C10_GENOTYPE, "mnist1d", channels=8, cells_per_stage=2)
    assert isinstance(net, NB201Network)
    assert net.genotype == BEST_C10_GENOTYPE and all(type(v) is int for v in net.genotype)
    assert (net.num_classes, net.ndim, net.channels, net.cells_per_stage) == (10, 1, 8, 2)
    net = SPACE.decode(np.array(BEST_C10_GENOTYPE), "imagenet16")
    assert (net.num_classes, net.ndim, net.channels, net.cells_per_stage) == (120, 2, 16, 5)
    sup = SPACE.supernet("digits", channels=4, cells_per_stage=1)
    assert sup.genotype is None and (sup.num_classes, sup.ndim, sup.channels) == (10, 2, 4)


def test_decode_param_count_equals_nb201_best_cell():
    cost = network_cost(SPACE.decode(SPACE.from_string(BEST_C10), "cifar10"), (32, 32, 3))
    assert cost["params"] == 1_073_466


def test_decode_param_counts_of_the_empty_cell_across_datasets():
    g = SPACE.from_string(ALL_NONE)
    c10 = network_cost(SPACE.decode(g, "cifar10"), (32, 32, 3))
    c100 = network_cost(SPACE.decode(g, "cifar100"), (32, 32, 3))
    in16 = network_cost(SPACE.decode(g, "imagenet16"), (16, 16, 3))
    assert c10["params"] == 73_306
    # only the classifier (64 features + bias) changes
    assert c100["params"] - c10["params"] == 90 * 65
    assert in16["params"] - c10["params"] == 110 * 65
    # 16x16 inputs: a quarter of the convolution MACs, and a 120-way classifier
    conv_macs = c10["macs"] - 64 * 10
    assert c100["macs"] == conv_macs + 64 * 100
    assert in16["macs"] == conv_macs // 4 + 64 * 120


def test_decode_and_supernet_reject_the_wrong_arch_argument():
    x = jnp.zeros((1, 40, 1))
    dec = SPACE.decode(BEST_C10_GENOTYPE, "mnist1d", channels=4, cells_per_stage=1)
    sup = SPACE.supernet("mnist1d", channels=4, cells_per_stage=1)
    with pytest.raises(ValueError, match="arch"):
        jax.eval_shape(dec.init, jax.random.key(0), x, jnp.zeros(6, jnp.int32))
    with pytest.raises(ValueError, match="arch"):
        jax.eval_shape(sup.init, jax.random.key(0), x)


# ------------------------------------------------------------------ supernet vs decoded

SUPERNET_DATASETS = ["mnist1d", "digits"]  # ndim=1 and ndim=2
# Compiling the lax.switch supernet dominates this file's run time; XLA's backend
# optimisations roughly double it on CPU and do not change what is being checked.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
EQUIVALENCE_GENOTYPES = [
    BEST_C10_GENOTYPE,
    (4, 0, 2, 1, 0, 4),  # `none` edges and avg_pool
    (0, 0, 0, 0, 0, 0),  # the empty cell: output does not depend on the cells
]


def _random_variables(shapes, seed):
    """Random values for a variable tree of shapes: scaled kernels, non-trivial BatchNorm."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(shapes)
    out = {}
    for path, s in sorted(flat.items()):
        name = path[-1]
        if name == "kernel":
            value = rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
        elif name == "var":
            value = rng.uniform(0.5, 1.5, size=s.shape)
        elif name == "scale":
            value = 1.0 + 0.2 * rng.normal(size=s.shape)
        else:  # bias, mean
            value = 0.2 * rng.normal(size=s.shape)
        out[path] = jnp.asarray(value, s.dtype)
    return traverse_util.unflatten_dict(out)


@functools.cache
def _supernet_setup(dataset):
    """Supernet, inputs, random variables and its jitted int-genotype (lax.switch) applies."""
    task = get_task(dataset)
    net = SPACE.supernet(dataset, channels=4, cells_per_stage=1)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, *task.input_shape)), jnp.float32)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x, jnp.zeros(6, jnp.int32))
    variables = _random_variables(shapes, seed=2)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def apply_int(variables, x, genotype):
        """(inference logits, (training logits, updated batch_stats)) in one program."""
        return (
            net.apply(variables, x, genotype),
            net.apply(variables, x, genotype, train=True, mutable=["batch_stats"]),
        )

    return net, x, shapes, variables, apply_int


def _flat(tree):
    return traverse_util.flatten_dict(tree)


def test_supernet_variables_do_not_depend_on_arch_kind():
    net, x, shapes, *_ = _supernet_setup("mnist1d")
    float_shapes = jax.eval_shape(net.init, jax.random.key(0), x, jnp.zeros((6, 5)))
    chex.assert_trees_all_equal_shapes_and_dtypes(float_shapes, shapes)
    edges = {path[1] for path in _flat(shapes["params"]) if path[0] == "cell_0_0"}
    assert edges == {f"edge_{e}" for e in range(6)}
    ops = {path[2] for path in _flat(shapes["params"]) if path[:2] == ("cell_0_0", "edge_0")}
    assert ops == {"nor_conv_1x1", "nor_conv_3x3"}  # parameter-free ops hold no variables


@pytest.mark.parametrize("dataset", SUPERNET_DATASETS)
def test_supernet_equals_decoded_network(dataset, subtests):
    """One test per dataset (not per genotype), so that xdist never compiles a supernet twice."""
    for genotype in EQUIVALENCE_GENOTYPES:
        with subtests.test(genotype=genotype):
            _check_supernet_equals_decoded(dataset, genotype)


def _check_supernet_equals_decoded(dataset, genotype):
    net, x, shapes, variables, apply_int = _supernet_setup(dataset)
    g = jnp.array(genotype, jnp.int32)
    int_eval, (got_int, int_updates) = apply_int(variables, x, g)
    decoded = SPACE.decode(genotype, dataset, channels=4, cells_per_stage=1)
    weights = SPACE.one_hot(g)

    # the decoded network's variables are the supernet's at the same paths, same shapes
    dec_shapes = _flat(jax.eval_shape(decoded.init, jax.random.key(0), x))
    sup_flat = _flat(variables)
    assert set(dec_shapes) <= set(sup_flat)
    for path, s in dec_shapes.items():
        assert sup_flat[path].shape == s.shape, path
    chosen_ops = {p[3] for p in dec_shapes if p[1].startswith("cell_")}
    assert chosen_ops == {OPS[v] for v in genotype} & {"nor_conv_1x1", "nor_conv_3x3"}
    dec_vars = traverse_util.unflatten_dict({path: sup_flat[path] for path in dec_shapes})

    # inference: running BatchNorm statistics
    want = decoded.apply(dec_vars, x)
    chex.assert_shape(want, (4, 10))
    chex.assert_tree_all_finite(want)
    tol = dict(atol=1e-5, rtol=1e-4)
    chex.assert_trees_all_close(net.apply(variables, x, weights), want, **tol)
    chex.assert_trees_all_close(int_eval, want, **tol)

    # training: batch statistics, and the running statistics of the chosen ops update alike
    want, dec_updates = decoded.apply(dec_vars, x, train=True, mutable=["batch_stats"])
    got_float, float_updates = net.apply(variables, x, weights, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(got_float, want, **tol)
    chex.assert_trees_all_close(got_int, want, **tol)
    dec_stats = _flat(dec_updates["batch_stats"])
    float_stats = _flat(float_updates["batch_stats"])
    int_stats = _flat(int_updates["batch_stats"])
    before = _flat(variables["batch_stats"])
    assert set(float_stats) == set(int_stats) == set(before)
    for path, value in dec_stats.items():
        assert not np.allclose(value, before[path]), path  # the statistics did move
        chex.assert_trees_all_close(float_stats[path], value, **tol)
        chex.assert_trees_all_close(int_stats[path], value, **tol)
    # the lax.switch path runs only the chosen op: other ops keep their statistics
    for path in set(before) - set(dec_stats):
        chex.assert_trees_all_equal(int_stats[path], before[path])


# The standalone Edge/Cell below use the shapes of the first stage of the supernets above
# (batch 4, 4 channels), so their eager primitives are already compiled.


def test_edge_is_linear_in_its_op_weights():
    edge = Edge(OPS, 4, ndim=2)
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 4)), jnp.float32)
    shapes = jax.eval_shape(lambda: edge.init(jax.random.key(0), x, False, jnp.zeros(5)))
    variables = _random_variables(shapes, seed=8)
    basis = jnp.eye(5)
    single = jnp.stack([edge.apply(variables, x, False, basis[k]) for k in range(5)])
    chex.assert_trees_all_equal(single[0], jnp.zeros_like(x))  # none
    chex.assert_trees_all_equal(single[1], x)  # skip_connect
    assert not np.allclose(single[2], single[3])
    for w in (rng.normal(size=5), rng.dirichlet(np.ones(5))):
        w = jnp.asarray(w, jnp.float32)
        got = edge.apply(variables, x, False, w)
        chex.assert_trees_all_close(got, jnp.tensordot(w, single, axes=1), atol=1e-5, rtol=1e-5)


def test_cell_mixed_op_on_last_edge_is_the_weighted_sum():
    """Edge 2->3 feeds only the output node, so the cell is affine in its op weights."""
    cell = Cell(4, None, ndim=1)
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(4, 40, 4)), jnp.float32)
    base = SPACE.one_hot(jnp.array([3, 2, 4, 1, 3, 0]))
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), x, False, base))
    variables = _random_variables(shapes, seed=10)
    basis = jnp.eye(5)
    outs = jnp.stack([cell.apply(variables, x, False, base.at[5].set(basis[k])) for k in range(5)])
    w = jnp.asarray(rng.dirichlet(np.ones(5)), jnp.float32)  # sums to one
    got = cell.apply(variables, x, False, base.at[5].set(w))
    chex.assert_trees_all_close(got, jnp.tensordot(w, outs, axes=1), atol=1e-5, rtol=1e-5)


def test_is_valid_rejects_wrong_length_and_non_integers():
    space = NB201Space()
    assert not bool(space.is_valid(jnp.zeros(7, jnp.int32)))
    assert not bool(space.is_valid(jnp.zeros(5, jnp.int32)))
    assert not bool(space.is_valid(jnp.array([0, 0, 0, 0, 0, 4.5])))
    chex.assert_shape(space.is_valid(jnp.zeros((3, 7), jnp.int32)), (3,))


def test_sampling_and_mutation_from_given_uniforms():
    space = NB201Space()
    u = jnp.array([[0.0, 0.2, 0.4, 0.6, 0.8, 1.0 - 1e-7]])
    chex.assert_trees_all_equal(space.sample_from_uniform(u), jnp.array([[0, 1, 2, 3, 4, 4]]))
    g = jnp.array([[3, 3, 3, 1, 3, 2]] * 4, jnp.int32)
    draws = jnp.array([[0.0, 0.0], [0.99, 0.99], [0.5, 0.3], [1.0 - 1e-7, 1.0 - 1e-7]])
    children = space.mutate_from_uniform(draws, g)
    np.testing.assert_array_equal(hamming(children, g), [1, 1, 1, 1])
    assert int(children[0, 0]) == 4  # decision 0, smallest offset: 3 -> 4
    assert int(children[1, 5]) == 1  # last decision, largest offset: 2 -> 1 (mod 5)
