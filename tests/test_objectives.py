"""Tests for nasjax.objectives: parameter counts and MACs against hand formulas and NB201."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.objectives import count_macs, count_params, init_abstract, network_cost
from nasjax.spaces.layers import Conv
from nasjax.spaces.nb201 import NB201Space

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
    assert cost == {"params": 5 * 7 + 7, "macs": 5 * 7}


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
