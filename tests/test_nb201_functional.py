"""The functional NB201 network (what population training runs) is the decoded network."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.spaces import NB201Space
from nasjax.spaces.nb201_functional import to_flax_variables

SPACE = NB201Space()
GENOTYPES = [(1, 2, 3, 4, 0, 3), (3, 3, 3, 3, 3, 3), (0, 0, 0, 0, 0, 0), (2, 4, 1, 0, 2, 1)]


@pytest.mark.parametrize(
    "dataset, shape, cells, genotypes",
    [("mnist1d", (8, 40, 1), 2, GENOTYPES), ("cifar10", (4, 8, 8, 3), 1, GENOTYPES[::3])],
)
def test_matches_decoded_flax_network(dataset, shape, cells, genotypes):
    """Logits and updated BN statistics equal the decoded network's, train and eval.

    The genotype is traced: one compiled functional network serves every genotype.
    """
    net = SPACE.functional(dataset, channels=4, cells_per_stage=cells)
    params, state = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), shape)
    apply = jax.jit(net.apply, static_argnums=4)
    for genotype in genotypes:
        decoded = SPACE.decode(np.array(genotype), dataset, channels=4, cells_per_stage=cells)
        variables = to_flax_variables(net, params, state, genotype)
        g = jnp.array(genotype, jnp.int32)

        logits, new_state = apply(params, state, x, g, True)
        decoded_train = jax.jit(functools.partial(decoded.apply, train=True, mutable=True))
        expected, updates = decoded_train(variables, x)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5, err_msg=str(genotype))
        exported = to_flax_variables(net, params, new_state, genotype)["batch_stats"]
        chex.assert_trees_all_close(exported, updates["batch_stats"], rtol=1e-5, atol=1e-5)

        logits, _ = apply(params, state, x, g, False)
        expected = jax.jit(decoded.apply)(variables, x)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5, err_msg=str(genotype))


def test_unchosen_ops_keep_statistics_and_get_no_gradient():
    net = SPACE.functional("mnist1d", channels=4, cells_per_stage=1)
    params, state = net.init(jax.random.key(0))
    genotype = jnp.array([3, 1, 0, 4, 2, 3], jnp.int32)
    x = jax.random.normal(jax.random.key(1), (8, 40, 1))

    def loss(p):
        logits, new_state = net.apply(p, state, x, genotype, True)
        return jnp.sum(logits**2), new_state

    grads, new_state = jax.jit(jax.grad(loss, has_aux=True))(params)
    edge = lambda tree, e, op: tree["cell_1_0"][f"edge_{e}"][op]
    # edge 0 is nor_conv_3x3: its 1x1 op is idle; edge 4 is nor_conv_1x1: its 3x3 is idle.
    assert not np.any(edge(grads, 0, "nor_conv_1x1")["kernel"])
    assert np.any(edge(grads, 0, "nor_conv_3x3")["kernel"])
    assert not np.any(edge(grads, 4, "nor_conv_3x3")["kernel"])
    assert np.any(edge(grads, 4, "nor_conv_1x1")["kernel"])
    chex.assert_trees_all_equal(edge(new_state, 0, "nor_conv_1x1"), edge(state, 0, "nor_conv_1x1"))
    assert not np.allclose(
        edge(new_state, 0, "nor_conv_3x3")["mean"], edge(state, 0, "nor_conv_3x3")["mean"]
    )


def test_init_draws_independent_lecun_normal_kernels():
    """One truncated-normal draw, cut per kernel: flax's lecun_normal, independent kernels."""
    net = SPACE.functional("mnist1d", channels=16, cells_per_stage=1)
    params, state = net.init(jax.random.key(0))
    assert params["stem"].shape == (3, 1, 16)
    assert params["classifier"]["kernel"].shape == (64, 10)
    assert jax.tree.structure(params) == jax.tree.structure(net.init(jax.random.key(1))[0])
    kernels = [
        params["cell_2_0"][f"edge_{e}"][op]["kernel"]
        for e in range(6)
        for op in ("nor_conv_1x1", "nor_conv_3x3")
    ]
    for kernel in kernels:
        fan_in = np.prod(kernel.shape[:-1])
        bound = 2.0 / np.sqrt(fan_in) / 0.87962566103423978
        assert np.abs(kernel).max() <= bound + 1e-6
        np.testing.assert_allclose(np.std(kernel), 1.0 / np.sqrt(fan_in), rtol=0.1)
    flat = [np.asarray(k).ravel()[:64] for k in kernels]
    assert len({tuple(np.round(f / np.abs(f).max(), 5)) for f in flat}) == len(flat)
    assert state["cell_2_0"]["edge_0"]["nor_conv_3x3"]["var"].shape == (64,)
    different_key = net.init(jax.random.key(1))[0]
    assert not np.allclose(different_key["stem"], params["stem"])
