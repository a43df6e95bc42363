"""Gradient-based search: mixed ops, Gumbel samples, the four methods' steps, the loop.

The method tests run on a toy relaxed network (NB201's cell shape, 6 edges x 5 ops, on
vectors) so that they compile in seconds; the NB201 search network itself is pinned to
the functional NB201 network, and the scripts run end to end in test_darts_experiment.
"""

import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.data import Dataset
from nasjax.errors import NasjaxError
from nasjax.nets.gumbel import gumbel_softmax
from nasjax.nets.mixed import (
    channel_shuffle,
    edge_normalised_sum,
    mixed_op,
    partial_channel,
    sampled_op,
    weighted_sum,
)
from nasjax.nets.relaxed import ArchWeights, RelaxedNetwork, check_arch_logits
from nasjax.relaxation import methods as M
from nasjax.search.gradient import gradient_search, num_parameter_free, op_entropy
from nasjax.spaces import DartsSpace, NB201Space
from nasjax.spaces.nb201_net import EDGES

WIDTH = 8


def toy_network(mode: str, k: int = 2) -> RelaxedNetwork:
    """An NB201-shaped cell on vectors: ops none, skip, tanh-dense, dense, sin."""
    part = WIDTH // k if mode == "pcdarts" else WIDTH

    def init(key):
        keys = jax.random.split(key, 2 + 2 * len(EDGES))
        edges = {
            f"edge_{e}": {
                "a": jax.random.normal(keys[2 + 2 * e], (part, part)) / np.sqrt(part),
                "b": jax.random.normal(keys[3 + 2 * e], (part, part)) / np.sqrt(part),
            }
            for e in range(len(EDGES))
        }
        return {
            "in": jax.random.normal(keys[0], (3, WIDTH)),
            "out": jax.random.normal(keys[1], (WIDTH, 4)) / np.sqrt(WIDTH),
            **edges,
        }

    def apply(params, x, arch):
        nodes = [jnp.tanh(x @ params["in"])]
        for node in range(1, 4):
            outs, ids = [], []
            for e, (src, dst) in enumerate(EDGES):
                if dst != node:
                    continue
                p = params[f"edge_{e}"]
                ops = [
                    jnp.zeros_like,
                    lambda h: h,
                    lambda h, p=p: jnp.tanh(h @ p["a"]),
                    lambda h, p=p: h @ p["b"],
                    jnp.sin,
                ]
                index = None if arch.index is None else arch.index[e]
                outs.append(mixed_op(mode, nodes[src], ops, arch.weights[e], index, k))
                ids.append(e)
            if mode == "pcdarts":
                nodes.append(edge_normalised_sum(outs, arch.beta[jnp.asarray(ids)]))
            else:
                nodes.append(sum(outs[1:], outs[0]))
        return nodes[-1] @ params["out"]

    return RelaxedNetwork(
        mode=mode,
        init=init,
        apply=apply,
        alpha_shape=(6, 5),
        beta_shape=(6,),
        discretize=lambda a, b=None: np.asarray(np.argmax(a, -1), np.int32),
    )


def toy_data(n: int = 64, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.argmax(x @ rng.normal(size=(3, 4)), -1)).astype(np.int32)
    return Dataset(x, y, x[:16], y[:16], x[:16], y[:16], 4, "toy")


def batches(data: Dataset, size: int = 16):
    return (data.x_train[:size], data.y_train[:size]), (data.x_train[size:], data.y_train[size:])


# ------------------------------------------------------------------------- mixed ops
def test_gumbel_softmax_is_one_hot_with_soft_gradients():
    logits = jnp.array([[0.3, -1.0, 2.0, 0.0]] * 3)
    hard, index = gumbel_softmax(jax.random.key(0), logits, 1.0)
    chex.assert_trees_all_equal(hard, jax.nn.one_hot(index, 4))
    # The gradient is the relaxed sample's: non-zero for every logit.
    grad = jax.grad(lambda z: jnp.sum(gumbel_softmax(jax.random.key(0), z, 1.0)[0] * 2.0))(
        logits[0]
    )
    assert np.all(np.isfinite(grad))
    g = jax.grad(lambda z: gumbel_softmax(jax.random.key(0), z, 1.0)[0] @ jnp.arange(4.0))(
        logits[0]
    )
    assert np.count_nonzero(np.asarray(g)) == 4


def test_temperature_falls_linearly_from_10_to_0_1():
    config = M.method_config("gdas", 11)
    taus = [float(M.temperature(config, jnp.int32(s))) for s in (0, 5, 10, 20)]
    np.testing.assert_allclose(taus, [10.0, 5.05, 0.1, 0.1], rtol=1e-5)


def test_sampled_op_runs_only_the_chosen_op_and_equals_the_weighted_sum():
    x = jnp.arange(6.0).reshape(2, 3)
    calls = []
    ops = [lambda h, i=i: (calls.append(i), h * (i + 1))[1] for i in range(4)]
    hard = jax.nn.one_hot(2, 4)
    out = sampled_op(x, ops, hard, jnp.int32(2))
    chex.assert_trees_all_close(out, weighted_sum(x, ops, hard))
    # Under jit the switch traces every branch, but only the sampled one executes.
    traced = jax.make_jaxpr(lambda x: sampled_op(x, ops, hard, jnp.int32(2)))(x)
    assert "cond" in str(traced)


def test_channel_shuffle_interleaves_groups():
    x = jnp.arange(8.0)[None]
    np.testing.assert_array_equal(channel_shuffle(x, 4)[0], [0, 2, 4, 6, 1, 3, 5, 7])
    np.testing.assert_array_equal(channel_shuffle(x, 1)[0], np.arange(8))


def test_partial_channel_mixes_a_quarter_and_bypasses_the_rest():
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    w = jnp.array([0.25, 0.75])
    out = partial_channel(x, [lambda h: 2 * h, lambda h: -h], w, 4)
    expected = jnp.concatenate([(0.5 - 0.75) * x[..., :2], x[..., 2:]], -1)
    chex.assert_trees_all_close(out, channel_shuffle(expected, 4))
    chex.assert_trees_all_close(partial_channel(x, [jnp.sin], jnp.ones(1), 1), jnp.sin(x))
    with pytest.raises(NasjaxError, match="not divisible"):
        partial_channel(x, [jnp.sin], jnp.ones(1), 3)


def test_mixed_op_rejects_unknown_modes():
    with pytest.raises(NasjaxError, match="valid choices: darts, gdas, pcdarts"):
        mixed_op("enas", jnp.ones(3), [jnp.sin], jnp.ones(1))


# ------------------------------------------------------------------------- methods
@pytest.mark.parametrize("method", list(M.METHODS))
def test_each_method_step_moves_weights_and_architecture(method):
    net = toy_network(M.METHODS[method])
    config = M.method_config(method, 10, arch_lr=0.05, arch_warmup_steps=0)
    state = M.init_state(jax.random.key(0), net, config)
    train, valid = batches(toy_data())
    step = jax.jit(lambda s, k: M.search_step(net, config, s, k, train, valid))
    new, metrics = step(state, jax.random.key(1))
    assert int(new.step) == 1
    assert not np.allclose(new.alpha, state.alpha)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), new.params, state.params)
    assert any(jax.tree.leaves(changed))
    assert set(metrics) == {"train_loss", "train_accuracy", "valid_loss"}
    assert np.isfinite(float(metrics["train_loss"]))
    # Same key, same step.
    chex.assert_trees_all_equal(step(state, jax.random.key(1))[0], new)
    # beta moves only under PC-DARTS's edge normalisation.
    assert np.allclose(new.beta, state.beta) == (method != "pcdarts")


def test_darts2_exact_hypergradient_matches_finite_differences():
    with jax.enable_x64(True):
        net = toy_network("darts")
        exact = M.method_config("darts2", 10, weight_lr=0.5)
        approx = exact._replace(unrolled="finite_difference")
        state = M.init_state(jax.random.key(0), net, exact)
        state = state._replace(
            params=jax.tree.map(lambda a: a.astype(jnp.float64), state.params),
            alpha=jax.random.normal(jax.random.key(3), (6, 5), jnp.float64),
            weight_opt=jax.tree.map(
                lambda a: 0.1 * jnp.ones_like(a, jnp.float64) if a.ndim else a,
                state.weight_opt,
            ),
        )
        train, valid = batches(toy_data())
        g_exact, _ = M.arch_gradient(net, exact, state, None, train, valid)
        g_fd, _ = M.arch_gradient(net, approx, state, None, train, valid)
        # The paper's Hessian-vector product approximates the exact one.
        np.testing.assert_allclose(g_fd["alpha"], g_exact["alpha"], rtol=1e-3, atol=1e-6)

        # Brute force: central differences of the unrolled validation loss itself.
        def f(alpha):
            arch = {"alpha": alpha, "beta": state.beta}
            return M.unrolled_val_loss(net, exact, state, arch, train, valid)

        direction = jax.random.normal(jax.random.key(4), (6, 5), jnp.float64)
        h = 1e-5
        brute = (f(state.alpha + h * direction) - f(state.alpha - h * direction)) / (2 * h)
        np.testing.assert_allclose(
            float(jnp.sum(g_exact["alpha"] * direction)), float(brute), rtol=1e-6
        )
        # And the second-order term matters: first order differs.
        first = M.method_config("darts1", 10)
        g_first, _ = M.arch_gradient(net, first, state, None, train, valid)
        assert not np.allclose(g_first["alpha"], g_exact["alpha"], rtol=1e-3)


def test_pcdarts_keeps_the_architecture_still_during_warm_up():
    net = toy_network("pcdarts")
    config = M.method_config("pcdarts", 10, arch_lr=0.05)
    assert config.arch_warmup_steps == 3
    state = M.init_state(jax.random.key(0), net, config)
    train, valid = batches(toy_data())
    step = jax.jit(lambda s, k: M.search_step(net, config, s, k, train, valid))
    for i in range(4):
        new, _ = step(state, jax.random.key(i))
        assert np.array_equal(new.alpha, state.alpha) == (i < 3)
        state = new


def test_bad_method_settings_are_named():
    with pytest.raises(NasjaxError, match="unknown method 'enas'.*darts1, darts2, gdas, pcdarts"):
        M.method_config("enas", 10)
    with pytest.raises(NasjaxError, match="unknown unrolled hypergradient 'hvp'"):
        M.method_config("darts2", 10, unrolled="hvp")
    with pytest.raises(NasjaxError, match="total_steps must be >= 1"):
        M.method_config("darts1", 0)
    net = toy_network("darts")
    with pytest.raises(NasjaxError, match=r"alpha has shape \(6, 4\).*expects \(6, 5\)"):
        check_arch_logits(net, np.zeros((6, 4)))
    with pytest.raises(NasjaxError, match=r"beta has shape \(5,\).*expects \(6,\)"):
        check_arch_logits(net, np.zeros((6, 5)), np.zeros(5))


# ------------------------------------------------------------------------- the loop
def test_gradient_search_logs_resumes_and_repeats(tmp_path):
    data = toy_data(96)
    net = toy_network("gdas")
    space = NB201Space()
    config = M.method_config("gdas", 3 * 3)
    kw = {"epochs": 3, "batch_size": 16, "progress": False}
    full = gradient_search(jax.random.key(0), space, net, config, data, **kw)
    assert [h["epoch"] for h in full.history] == [1, 2, 3]
    assert full.arch == space.to_string(full.genotype)
    assert full.history[-1]["tau"] < full.history[0]["tau"]
    logged = gradient_search(jax.random.key(0), space, net, config, data, out_dir=tmp_path, **kw)
    chex.assert_trees_all_equal(logged.state.alpha, full.state.alpha)
    lines = (tmp_path / "search.jsonl").read_text().splitlines()
    assert [json.loads(line)["arch"] for line in lines] == [h["arch"] for h in full.history]
    with pytest.raises(NasjaxError, match="already holds a run"):
        gradient_search(jax.random.key(0), space, net, config, data, out_dir=tmp_path, **kw)
    # Interrupted after epoch 2 (its last checkpoint), then resumed: the same search.
    shutil.rmtree(tmp_path / "checkpoints" / "3")
    resumed = gradient_search(
        jax.random.key(0), space, net, config, data, out_dir=tmp_path, resume=True, **kw
    )
    chex.assert_trees_all_equal(resumed.state.alpha, full.state.alpha)
    assert len((tmp_path / "search.jsonl").read_text().splitlines()) == 3
    assert [h["arch"] for h in resumed.history] == [h["arch"] for h in full.history]
    with pytest.raises(NasjaxError, match="total_steps=9 but the search runs 2 x 3"):
        gradient_search(jax.random.key(0), space, net, config, data, **kw | {"epochs": 2})


@pytest.mark.parametrize("method", ["darts1", "darts2", "pcdarts"])
def test_each_method_logs_its_own_fields(method):
    """Every method runs the whole epoch loop (the toy network compiles in seconds);
    PC-DARTS records its edge weights beta, GDAS its temperature (above)."""
    config = M.method_config(method, 2 * 3)
    net = toy_network(M.METHODS[method])
    kw = {"epochs": 2, "batch_size": 16, "progress": False}
    result = gradient_search(jax.random.key(1), NB201Space(), net, config, toy_data(96), **kw)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert ("beta" in result.history[0]) == (method == "pcdarts")
    if method == "pcdarts":
        assert len(result.history[0]["beta"]) == 6
    assert all(np.isfinite(h["alpha_entropy"]) for h in result.history)


def test_search_diagnostics():
    assert op_entropy(np.zeros((6, 5))) == pytest.approx(np.log(5), rel=1e-6)
    assert op_entropy(np.array([[100.0, 0, 0, 0, 0]] * 6)) == pytest.approx(0.0, abs=1e-6)
    space = NB201Space()
    assert num_parameter_free(space, np.array([0, 1, 2, 3, 4, 1])) == 4
    assert num_parameter_free(space, np.array([1] * 6)) == 6


# ------------------------------------------------------------------------- NB201 network
@pytest.fixture(scope="module")
def nb201_pair():
    space = NB201Space()
    net = space.relaxed("mnist1d", "darts", channels=4, cells_per_stage=1)
    functional = space.functional("mnist1d", channels=4, cells_per_stage=1)
    return space, net, functional


def test_nb201_search_network_with_one_hot_weights_is_the_nb201_network(nb201_pair):
    space, net, functional = nb201_pair
    params, stats = functional.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 40, 1))
    relaxed_params = jax.tree.map(lambda a: a, params)
    for name, cell in relaxed_params.items():
        if name.startswith("cell_"):
            for edge in cell.values():
                for op in edge.values():
                    del op["scale"], op["bias"]  # affine-free search BN (scale 1, bias 0)
                for op in list(edge):
                    edge[op] = edge[op]["kernel"]
    genotype = jnp.array([3, 1, 2, 0, 4, 3], jnp.int32)
    ref, _ = functional.apply(params, stats, x, genotype, True)
    one_hot = jax.nn.one_hot(genotype, 5)
    out = jax.jit(net.apply)(relaxed_params, x, ArchWeights(one_hot))
    chex.assert_trees_all_close(out, ref, atol=1e-4, rtol=1e-4)
    gdas = space.relaxed("mnist1d", "gdas", channels=4, cells_per_stage=1)
    out = jax.jit(gdas.apply)(relaxed_params, x, ArchWeights(one_hot, genotype))
    chex.assert_trees_all_close(out, ref, atol=1e-4, rtol=1e-4)
    assert jax.tree.structure(net.init(jax.random.key(0))) == jax.tree.structure(relaxed_params)


def test_nb201_search_network_shapes_and_errors():
    space = NB201Space()
    pc = space.relaxed("digits", "pcdarts", channels=8, cells_per_stage=1)
    params = pc.init(jax.random.key(0))
    assert params["cell_0_0"]["edge_0"]["nor_conv_3x3"].shape == (3, 3, 2, 2)
    x = jnp.ones((4, 8, 8, 1))
    arch = ArchWeights(jax.nn.softmax(jnp.zeros((6, 5))), None, jnp.zeros(6))
    assert pc.apply(params, x, arch).shape == (4, 10)
    assert pc.alpha_shape == (6, 5) and pc.beta_shape == (6,)
    np.testing.assert_array_equal(pc.discretize(np.eye(6, 5), None), [0, 1, 2, 3, 4, 0])
    with pytest.raises(NasjaxError, match="multiple of K=4"):
        space.relaxed("digits", "pcdarts", channels=6, cells_per_stage=1)
    with pytest.raises(NasjaxError, match="unknown mixed-op mode 'enas'"):
        space.relaxed("digits", "enas")


@pytest.mark.slow
def test_gradient_search_over_the_darts_space():
    # One intermediate node per cell keeps the program small; the loop is the same.
    space = DartsSpace(nodes=1)
    net = space.relaxed("digits", "pcdarts", channels=4, layers=3)
    assert net.alpha_shape == (2, 2, 8) and net.beta_shape == (2, 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    data = Dataset(x, y, x[:8], y[:8], x[:8], y[:8], 10, "digits")
    config = M.method_config("pcdarts", 2, arch_warmup_steps=0)
    found = gradient_search(
        jax.random.key(0), space, net, config, data, epochs=1, batch_size=16, progress=False
    )
    assert found.arch == space.to_string(found.genotype)
    assert len(space.chosen_ops(found.genotype)) == 4
    assert 0 <= found.history[0]["num_parameter_free"] <= 4
    assert len(found.history[0]["beta"]) == 2
