"""Tests for nasjax.objectives: params, MACs, FLOPs against hand formulas and NAS-Bench-201;
latency and memory measurements (values and errors, never timings)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.nets.layers import Conv
from nasjax.objectives import (
    COST_METRICS,
    benchmark_variables,
    count_flops,
    count_macs,
    count_params,
    device_name,
    init_abstract,
    measure_latency_ms,
    network_cost,
    peak_memory_mb,
)
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.nb201_costs import nb201_cost_table
from nasjax.tasks import get_task

SPACE = NB201Space()
BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


# ------------------------------------------------------------------ count_params


def test_count_params_of_a_known_pytree():
    tree = {
        "a": np.zeros((3, 4)),
        "b": [jnp.zeros(5), jnp.zeros(())],
        "c": {"d": jax.ShapeDtypeStruct((2, 3), jnp.float32)},
    }
    n = count_params(tree)
    assert n == 12 + 5 + 1 + 6
    assert isinstance(n, int)


def test_count_params_of_empty_tree_is_zero():
    assert count_params({}) == 0
    assert count_params([]) == 0


def test_count_params_abstract_equals_concrete():
    module = nn.Dense(7)
    abstract = init_abstract(module, (5,))
    assert isinstance(jax.tree_util.tree_leaves(abstract)[0], jax.ShapeDtypeStruct)
    concrete = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    assert count_params(abstract["params"]) == count_params(concrete["params"]) == 5 * 7 + 7


# ------------------------------------------------------------------ count_macs


class _ConvNet(nn.Module):
    """Conv -> ReLU -> global mean -> Dense; MACs = conv MACs + dense MACs."""

    ndim: int
    kernel: int
    stride: int
    padding: int

    @nn.compact
    def __call__(self, x):
        x = Conv(6, self.kernel, stride=self.stride, padding=self.padding, ndim=self.ndim)(x)
        x = nn.relu(x)
        x = jnp.mean(x, axis=tuple(range(1, 1 + self.ndim)))
        return nn.Dense(4)(x)


class _NestedJit(nn.Module):
    """A matrix product inside an inner ``jax.jit`` (a sub-jaxpr), plus one outside."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.zeros, (x.shape[-1], 3))
        y = jax.jit(jnp.matmul)(x, w)
        return nn.Dense(2, use_bias=False)(y)


def test_count_macs_of_dense_is_in_times_out():
    module = nn.Dense(7)
    assert count_macs(module, init_abstract(module, (5,)), (5,)) == 5 * 7
    cost = network_cost(module, (5,))
    assert cost == {"params": 5 * 7 + 7, "macs": 5 * 7, "flops": 5 * 7 + 7}


def test_count_macs_accepts_concrete_variables():
    module = nn.Dense(3)
    variables = {"params": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}
    assert count_macs(module, variables, (4,)) == 12


@pytest.mark.parametrize(
    "ndim,input_shape,kernel,stride,padding",
    [
        (2, (9, 9, 3), 3, 1, 1),
        (2, (9, 9, 3), 3, 2, 1),
        (2, (8, 8, 3), 1, 1, 0),
        (1, (10, 2), 3, 1, 0),
        (1, (11, 2), 3, 2, 1),
    ],
)
def test_count_macs_of_conv_net_is_hand_formula(ndim, input_shape, kernel, stride, padding):
    module = _ConvNet(ndim, kernel, stride, padding)
    spatial, c_in = input_shape[:-1], input_shape[-1]
    out_positions = int(np.prod([(n + 2 * padding - kernel) // stride + 1 for n in spatial]))
    conv_macs = out_positions * 6 * kernel**ndim * c_in
    dense_macs = 6 * 4
    cost = network_cost(module, input_shape)
    assert cost["macs"] == conv_macs + dense_macs
    assert cost["params"] == kernel**ndim * c_in * 6 + 6 * 4 + 4


def test_count_macs_follows_the_given_input_shape():
    """MACs are for one example of `input_shape`, not of the shape the variables came from."""
    module = _ConvNet(2, 3, 1, 1)
    variables = init_abstract(module, (6, 6, 2))
    assert count_macs(module, variables, (6, 6, 2)) == 36 * 6 * 9 * 2 + 24
    assert count_macs(module, variables, (12, 12, 2)) == 4 * (36 * 6 * 9 * 2) + 24


def test_count_macs_descends_into_sub_jaxprs():
    module = _NestedJit()
    assert network_cost(module, (5,))["macs"] == 5 * 3 + 3 * 2


# ------------------------------------------------------------------ NAS-Bench-201 anchors


@pytest.mark.parametrize(
    "arch,macs,params",
    [
        # NAS-Bench-201 reports 153.27 MFLOPs and 1.073 M params for the best CIFAR-10 cell
        (BEST_C10, 153_272_960, 1_073_466),
        (ALL_NONE, 7_783_040, 73_306),
    ],
)
def test_nb201_cifar10_macs(arch, macs, params):
    module = SPACE.decode(SPACE.from_string(arch), "cifar10")
    variables = init_abstract(module, (32, 32, 3))
    assert count_macs(module, variables, (32, 32, 3)) == macs
    assert count_params(variables["params"]) == params


def test_count_macs_scan_counts_every_iteration():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from nasjax.objectives import count_macs

    class Repeated(nn.Module):
        @nn.compact
        def __call__(self, x):
            w = self.param("w", nn.initializers.ones, (4, 4))
            return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=10)[0]

    module = Repeated()
    variables = module.init(jax.random.key(0), jnp.ones((1, 4)))
    assert count_macs(module, variables, (4,)) == 10 * 16


# ------------------------------------------------------------------ count_flops


class _BiasConvNet(nn.Module):
    """flax Conv (bias, optional groups) -> BatchNorm -> mean -> Dense (bias)."""

    groups: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), padding=1, feature_group_count=self.groups)(x)
        x = nn.BatchNorm(use_running_average=True)(x)  # has a bias, but no kernel: not counted
        return nn.Dense(4)(jnp.mean(nn.relu(x), axis=(1, 2)))


def test_count_flops_of_dense_adds_its_bias():
    module = nn.Dense(7)
    variables = init_abstract(module, (5,))
    assert count_flops(module, variables, (5,)) == 5 * 7 + 7
    assert network_cost(module, (5,)) == {"params": 42, "macs": 35, "flops": 42}
    no_bias = nn.Dense(7, use_bias=False)
    assert count_flops(no_bias, init_abstract(no_bias, (5,)), (5,)) == 35


@pytest.mark.parametrize("groups", [1, 2])
def test_count_flops_of_flax_conv_with_bias_and_groups(groups):
    """``conv_general_dilated`` counts k*k*in*out/groups per position, plus out for the bias."""
    module = _BiasConvNet(groups)
    positions, c_in, c_out = 7 * 7, 4, 6
    conv_macs = positions * 3 * 3 * c_in * c_out // groups
    cost = network_cost(module, (7, 7, c_in))
    assert cost["macs"] == conv_macs + 6 * 4
    assert cost["flops"] == conv_macs + positions * c_out + 6 * 4 + 4
    variables = init_abstract(module, (7, 7, c_in))
    assert count_flops(module, variables, (7, 7, c_in)) == cost["flops"]
    assert count_macs(module, variables, (7, 7, c_in)) == cost["macs"]


@pytest.mark.parametrize("ndim,input_shape", [(2, (9, 9, 3)), (1, (40, 1))])
def test_count_flops_of_bias_free_conv_net_is_macs_plus_dense_bias(ndim, input_shape):
    module = _ConvNet(ndim, 3, 1, 1)
    cost = network_cost(module, input_shape)
    assert cost["flops"] == cost["macs"] + 4  # only the Dense(4) has a bias


def test_count_flops_follows_the_given_input_shape():
    module = _BiasConvNet()
    variables = init_abstract(module, (6, 6, 4))
    small = count_flops(module, variables, (6, 6, 4))
    large = count_flops(module, variables, (12, 12, 4))
    head = 6 * 4 + 4
    assert large - head == 4 * (small - head)


# ------------------------------------------------------------------ NAS-Bench-201 FLOPs


def _hand_nb201(num_classes, hw, conv_op_kernels, c=16, n=5):
    """Params and FLOPs of an NB201 network from its layer shapes, by hand.

    ``conv_op_kernels``: the kernel size of each conv edge of the cell (non-conv edges
    cost nothing). Stem 3x3 conv; per stage s: C_s = c * 2**s channels at hw / 2**s; a
    reduction block (3x3 stride-2 conv, 3x3 conv, 2x2 avg pool + 1x1 conv) before stages
    1 and 2; BatchNorm after every conv (2 params per channel); classifier with a bias.
    """
    flops = hw * hw * 9 * 3 * c
    params = 9 * 3 * c + 2 * c
    for s in range(3):
        cs, size = c * 2**s, hw // 2**s
        if s:
            prev = cs // 2
            flops += size * size * (9 * prev * cs + 9 * cs * cs + prev * cs)
            params += 9 * prev * cs + 2 * cs + 9 * cs * cs + 2 * cs + prev * cs
        for k in conv_op_kernels:
            flops += n * size * size * k * k * cs * cs
            params += n * (k * k * cs * cs + 2 * cs)
    params += 2 * 4 * c + 4 * c * num_classes + num_classes  # last BN, classifier
    flops += 4 * c * num_classes + num_classes
    return params, flops


ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_nb201_flops_of_all_conv3x3_cifar10_equal_a_hand_count():
    """An independent check of the convention: FLOPs and params from the layer shapes."""
    params, flops = _hand_nb201(10, 32, [3] * 6)
    assert (params, flops) == (1_531_546, 220_119_690)
    genotype = SPACE.from_string(ALL_3X3)
    assert network_cost(SPACE.decode(genotype, "cifar10"), (32, 32, 3)) == {
        "params": params,
        "macs": flops - 10,
        "flops": flops,
    }
    code = int(SPACE.to_index(genotype))
    assert nb201_cost_table("flops", "cifar10")[code] == flops
    assert nb201_cost_table("params", "cifar10")[code] == params


@pytest.mark.parametrize("dataset,classes,hw", [("cifar100", 100, 32), ("imagenet16", 120, 16)])
def test_nb201_table_matches_hand_count_on_other_datasets(dataset, classes, hw):
    best = SPACE.from_string(BEST_C10)  # conv edges: 3x3 on four, 1x1 on one
    params, flops = _hand_nb201(classes, hw, [3, 3, 3, 3, 1])
    code = int(SPACE.to_index(best))
    assert nb201_cost_table("flops", dataset)[code] == flops
    assert nb201_cost_table("params", dataset)[code] == params


# What the NAS-Bench-201 / NATS-Bench API records (get_model_infos, C=16, N=5), in M and MB,
# over all 15,625 cells: (min FLOPs, max FLOPs, min params, max params). The values as the
# API stores them (quoted e.g. by multi-objective NAS benchmarks built on it); papers print
# them truncated or rounded (CIFAR-10 7.78-220.11 MFLOPs, 0.073-1.531 MB; ImageNet16-120 max
# 55.03 MFLOPs, 1.539 MB).
NB201_RECORDED = {
    "cifar10": (7.78305, 220.11969, 0.073306, 1.531546),
    "cifar100": (7.7889, 220.12554, 0.079156, 1.537396),
    "imagenet16": (1.9534, 55.03756, 0.080456, 1.538696),
}


@pytest.mark.parametrize("dataset", list(NB201_RECORDED))
def test_nb201_cost_table_reproduces_the_benchmark_ranges(dataset):
    flops = nb201_cost_table("flops", dataset) / 1e6
    params = nb201_cost_table("params", dataset) / 1e6
    recorded = NB201_RECORDED[dataset]
    ours = (flops.min(), flops.max(), params.min(), params.max())
    assert ours == pytest.approx(recorded, abs=5e-6)
    assert flops.argmax() == SPACE.to_index(SPACE.from_string(ALL_3X3))
    # The same within the 0.01 of the printed anchors.
    printed = {"cifar10": (7.78, 220.11, 0.073, 1.531), "imagenet16": (1.95, 55.03, None, 1.539)}
    for got, want in zip(ours, printed.get(dataset, (None,) * 4)):
        if want is not None:
            assert abs(got - want) < 0.01


def test_nb201_cost_table_all_conv3x3_and_cheapest_anchors():
    flops = nb201_cost_table("flops", "cifar10")
    assert abs(flops[SPACE.to_index(SPACE.from_string(ALL_3X3))] / 1e6 - 220.1) < 0.02
    assert abs(flops[SPACE.to_index(SPACE.from_string(ALL_NONE))] / 1e6 - 7.78) < 0.01
    assert flops.min() == flops[0]  # code 0 is the all-none cell


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet16"])
def test_nb201_cost_table_equals_direct_counts(dataset):
    """30 random cells counted directly on the decoded network with one cell per stage (to
    keep the test short; the hand counts above check five cells per stage), plus one random
    cell at five cells per stage on CIFAR-10."""
    codes = np.asarray(jax.random.randint(jax.random.key(7), (31,), 0, 15_625))
    cells = [1] * 30 + [5 if dataset == "cifar10" else 1]
    input_shape = get_task(dataset).input_shape
    for code, n in zip(codes, cells):
        genotype = np.asarray(SPACE.from_index(code))
        cost = network_cost(SPACE.decode(genotype, dataset, cells_per_stage=n), input_shape)
        table = {m: int(nb201_cost_table(m, dataset, 16, n)[code]) for m in COST_METRICS}
        assert cost == table, SPACE.to_string(genotype)


def test_nb201_cost_table_layout_and_cache():
    table = nb201_cost_table("macs", "cifar10")
    assert table.shape == (15_625,) and table.dtype == np.int64
    assert not table.flags.writeable
    assert nb201_cost_table("macs", "cifar10") is table
    code = int(SPACE.to_index(SPACE.from_string(BEST_C10)))
    assert table[code] == 153_272_960
    flops = nb201_cost_table("flops", "cifar10")
    assert np.array_equal(flops - table, np.full(15_625, 10))


@pytest.mark.parametrize(
    "args,match",
    [
        (("latency", "cifar10"), r"unknown metric 'latency'; valid choices: params, macs, flops"),
        (("flops", "svhn"), r"unknown dataset 'svhn'; valid choices: .*imagenet16"),
        (("flops", "cifar10", 0), r"channels must be an integer >= 1, got 0"),
        (("flops", "cifar10", 16, -1), r"cells_per_stage must be an integer >= 1, got -1"),
    ],
)
def test_nb201_cost_table_bad_input(args, match):
    with pytest.raises(NasjaxError, match=match):
        nb201_cost_table(*args)


# ------------------------------------------------------------------ measured on the device


def test_benchmark_variables_have_the_init_structure():
    module = _BiasConvNet()
    variables = benchmark_variables(module, (6, 6, 4))
    abstract = init_abstract(module, (6, 6, 4))
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(abstract)
    for got, want in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(abstract)):
        assert got.shape == want.shape and got.dtype == want.dtype
    assert np.all(np.asarray(variables["batch_stats"]["BatchNorm_0"]["var"]) == 1)
    assert np.all(np.isfinite(np.asarray(variables["params"]["Conv_0"]["kernel"])))


def test_measure_latency_ms_is_a_positive_float():
    module = _BiasConvNet()
    variables = benchmark_variables(module, (6, 6, 4))
    ms = measure_latency_ms(module, variables, (6, 6, 4), batch_size=2, warmup=1, repeats=3)
    assert isinstance(ms, float) and ms > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"repeats": 0}, r"repeats must be an integer >= 1, got 0"),
        ({"warmup": -1}, r"warmup must be >= 0, got -1"),
    ],
)
def test_measure_latency_ms_bad_input(kwargs, match):
    module = nn.Dense(3)
    variables = benchmark_variables(module, (4,))
    with pytest.raises(NasjaxError, match=match):
        measure_latency_ms(module, variables, (4,), **kwargs)


def test_measure_latency_ms_needs_concrete_variables():
    module = nn.Dense(3)
    with pytest.raises(NasjaxError, match="concrete variables"):
        measure_latency_ms(module, init_abstract(module, (4,)), (4,))


def test_peak_memory_mb_covers_arguments_and_outputs():
    module = nn.Dense(7)
    variables = init_abstract(module, (5,))
    for batch in (1, 64):
        at_least = 4 * (5 * 7 + 7 + 5 * batch + 7 * batch) / 2**20  # params, input, output
        assert peak_memory_mb(module, variables, (5,), batch) >= at_least
    assert peak_memory_mb(module, variables, (5,), 64) > peak_memory_mb(module, variables, (5,), 1)
    with pytest.raises(NasjaxError, match="batch_size must be an integer >= 1, got 0"):
        peak_memory_mb(module, variables, (5,), 0)


def test_device_name_names_the_default_device():
    device = jax.devices()[0]
    assert device_name() == f"{device.platform}:{device.device_kind}"


def test_expected_cost_of_a_relaxed_cell():
    """The differentiable resource term: exact at one-hot logits, gradient toward cheap ops."""
    from nasjax.objectives import expected_cost
    from nasjax.spaces.nb201_costs import nb201_cost_table, nb201_edge_costs

    costs = nb201_edge_costs("flops", "imagenet16", channels=4, cells_per_stage=1)
    assert costs.shape == (6, 5) and costs[:, 0].max() == 0 and costs[0, 3] > costs[0, 2] > 0
    genotype = np.array([3, 2, 0, 1, 4, 3])
    one_hot = 1e4 * jax.nn.one_hot(genotype, 5)  # a relaxed cell concentrated on genotype
    table = nb201_cost_table("flops", "imagenet16", channels=4, cells_per_stage=1)
    base = table[0]  # the all-none cell
    code = int(NB201Space().to_index(genotype))
    np.testing.assert_allclose(float(expected_cost(one_hot, costs)) + base, table[code], rtol=1e-6)
    uniform = jnp.zeros((6, 5))
    np.testing.assert_allclose(expected_cost(uniform, costs), costs.sum() / 5, rtol=1e-6)
    grad = jax.grad(expected_cost)(uniform, jnp.asarray(costs))
    # d/dlogit_o = p_o (c_o - mean c): raise an expensive op's logit, the cost goes up.
    assert grad[0, 3] > 0 and grad[0, 0] < 0 and grad[0, 1] < 0
    with pytest.raises(NasjaxError, match="edges, ops"):
        expected_cost(jnp.zeros((6, 4)), costs)
    with pytest.raises(NasjaxError, match="temperature"):
        expected_cost(uniform, costs, temperature=0.0)
