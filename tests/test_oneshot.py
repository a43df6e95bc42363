"""One-shot weight sharing (nasjax.evaluation.oneshot) and its experiment script."""

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from nasjax.data import load_mnist1d
from nasjax.evaluation import oneshot
from nasjax.nets.layers import BN_MOMENTUM
from nasjax.spaces import NB201Space
from nasjax.spaces.nb201_functional import to_flax_variables
from nasjax.training_recipe import TrainConfig, make_optimizer

SPACE = NB201Space()
NET = SPACE.functional("mnist1d", channels=4, cells_per_stage=1)
FIRST = jnp.array([3, 3, 3, 2, 2, 2], jnp.int32)  # every conv op of half the edges moves
PATH = jnp.array([3, 2, 0, 1, 4, 3], jnp.int32)


@pytest.fixture(scope="module")
def data():
    return load_mnist1d(0)


def _op(tree, e, op):
    return tree["cell_1_0"][f"edge_{e}"][op]


def test_single_path_step_moves_only_the_sampled_ops(data):
    """After a step on FIRST (momentum and weight decay now non-zero everywhere on it), a
    step on PATH leaves every op off PATH bit for bit, parameters and momentum alike."""
    tx = make_optimizer(TrainConfig(steps=10))
    params, state = NET.init(jax.random.key(0))
    step = jax.jit(functools.partial(oneshot.single_path_step, NET, tx))
    xb, yb = jnp.asarray(data.x_train[:16]), jnp.asarray(data.y_train[:16])
    carry, _ = step((params, state, tx.init(params)), FIRST, xb, yb)
    (p1, s1, o1), (p2, s2, o2) = carry, step(carry, PATH, xb, yb)[0]
    trace1, trace2 = o1[1][0].trace, o2[1][0].trace  # chain(decay, sgd(trace, schedule))
    for e in range(6):
        for k, op in ((2, "nor_conv_1x1"), (3, "nor_conv_3x3")):
            if int(PATH[e]) == k:  # on the path: parameters, momentum and BN stats move
                assert not np.array_equal(_op(p2, e, op)["kernel"], _op(p1, e, op)["kernel"])
                assert not np.array_equal(
                    _op(trace2, e, op)["kernel"], _op(trace1, e, op)["kernel"]
                )
                assert not np.array_equal(_op(s2, e, op)["mean"], _op(s1, e, op)["mean"])
            else:
                chex.assert_trees_all_equal(_op(p2, e, op), _op(p1, e, op))
                chex.assert_trees_all_equal(_op(trace2, e, op), _op(trace1, e, op))
                chex.assert_trees_all_equal(_op(s2, e, op), _op(s1, e, op))
    assert not np.array_equal(p2["stem"], p1["stem"])  # shared layers always train
    assert int(o2[1][1].count) == 2  # the schedule counts every step


def test_path_mask_marks_the_chosen_op_and_the_shared_layers():
    params, _ = NET.init(jax.random.key(0))
    mask = oneshot.path_mask(params, PATH)
    assert bool(mask["stem"]) and bool(mask["classifier"]["kernel"])
    assert bool(_op(mask, 0, "nor_conv_3x3")["kernel"])
    assert not bool(_op(mask, 0, "nor_conv_1x1")["kernel"])
    assert bool(_op(mask, 1, "nor_conv_1x1")["scale"])
    assert not any(bool(v) for v in jax.tree.leaves(mask["cell_2_0"]["edge_2"]))  # none


def test_recalibrated_statistics_equal_the_decoded_networks_batch_statistics(data):
    """SPOS recalibration = the mean over batches of each BN's batch statistics; here
    computed independently with the decoded Flax network (train mode from zero running
    statistics gives (1 - momentum) x the batch's)."""
    params, state = NET.init(jax.random.key(3))
    batches = jnp.asarray(data.x_train[:48]).reshape(3, 16, 40, 1)
    genotype = np.array([3, 2, 4, 1, 3, 2])
    recal = jax.jit(functools.partial(oneshot.recalibrate, NET))(params, genotype, batches)
    decoded = SPACE.decode(genotype, "mnist1d", channels=4, cells_per_stage=1)
    variables = to_flax_variables(NET, params, jax.tree.map(jnp.zeros_like, state), genotype)
    train = jax.jit(functools.partial(decoded.apply, train=True, mutable=["batch_stats"]))
    per_batch = [train(variables, xb)[1]["batch_stats"] for xb in batches]
    expected = jax.tree.map(lambda *s: sum(s) / (3 * (1 - BN_MOMENTUM)), *per_batch)
    got = to_flax_variables(NET, params, recal, genotype)["batch_stats"]
    chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-6)


def test_scoring_a_population_in_one_call_equals_scoring_each_member(data):
    params, state = NET.init(jax.random.key(1))
    supernet = oneshot.Supernet(NET, params, state, np.zeros(0))
    batches = oneshot.calibration_batches(jax.random.key(2), data, 2, 50)
    genotypes = np.asarray(SPACE.sample(jax.random.key(4), 3))
    x, y = data.x_valid[:200], data.y_valid[:200]
    together = oneshot.score_population(supernet, genotypes, batches, x, y)
    one = jax.jit(functools.partial(oneshot.inherited_accuracy, NET))
    alone = [
        float(one(params, g, batches, [(jnp.asarray(x), jnp.asarray(y))])[0]) for g in genotypes
    ]
    np.testing.assert_array_equal(together, np.float32(alone))
    evaluator = oneshot.oneshot_evaluator(supernet, data._replace(x_valid=x, y_valid=y), batches)
    fitness, metrics = evaluator.evaluate(jax.random.key(0), genotypes)
    np.testing.assert_array_equal(fitness, together)
    np.testing.assert_array_equal(metrics["inherited_valid_accuracy"], together)


def test_smoke_run_writes_the_results_and_refuses_a_used_folder(tmp_path, capsys):
    script = load_experiment("oneshot_nb201")
    out = tmp_path / "run"
    assert script.main(["--smoke", "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("kendall_tau", "spearman", "num_cells", "wall_s", "winner"):
        assert key in results
    assert results["num_cells"] == 3 and len(results["cells"]) == 3
    assert 0.0 <= results["winner"]["test_accuracy"] <= 1.0
    assert SPACE.from_string(results["winner"]["arch"]).shape == (6,)
    assert -1.0 <= results["kendall_tau"] <= 1.0 or np.isnan(results["kendall_tau"])
    for name in ("results.md", "ranking.png", "search_curve.png", "results.jsonl"):
        assert (out / name).is_file()
    capsys.readouterr()
    assert script.main(["--smoke", "--no-progress", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_train_supernet_same_key_same_weights(data):
    """The smoke run's supernet program (compiled above), twice from one key."""
    script = load_experiment("oneshot_nb201")
    config = script.recipe(script.parse_args(["--smoke"]), script.SMOKE["supernet_steps"])
    a, b = (
        oneshot.train_supernet(jax.random.key(7), SPACE, data, config, progress=False)
        for _ in range(2)
    )
    assert a.loss_curve.shape == (config.steps,) and np.all(np.isfinite(a.loss_curve))
    chex.assert_trees_all_equal((a.params, a.state), (b.params, b.state))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--supernet-steps", "0"], "--supernet-steps must be >= 1, got 0"),
        (["--rank-cells", "2"], "--rank-cells must be >= 3, got 2"),
        (["--population-size", "4", "--sample-size", "5"], "--sample-size must be <= "),
        (["--population-size", "5", "--batch", "6"], "--batch must be <= --population-size (5)"),
        (
            ["--supernet-devices", "9"],
            "--supernet-devices must be <= the 1 host device(s) here, got 9",
        ),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    script = load_experiment("oneshot_nb201")
    assert script.main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_paths_on_two_devices_average_each_parameter_over_the_paths_using_it(data):
    """Two devices (a named vmap axis stands for shard_map's) train FIRST on batch a and
    PATH on batch b in one step: an op on one path moves as that path's single-path step
    moves it, an op on both and the shared layers by the mean of the two steps (the first
    step of SGD is affine in the gradient), BN statistics likewise, idle ops bit for bit;
    the same path and batch on both devices is the single-path step."""
    tx = make_optimizer(TrainConfig(steps=10))
    params, state = NET.init(jax.random.key(0))
    carry = (params, state, tx.init(params))
    one = jax.jit(functools.partial(oneshot.single_path_step, NET, tx))
    two = jax.jit(
        jax.vmap(
            lambda g, xb, yb: oneshot.single_path_step(NET, tx, carry, g, xb, yb, "data"),
            axis_name="data",
        )
    )
    x, y = jnp.asarray(data.x_train[:32]), jnp.asarray(data.y_train[:32])
    (pa, sa, _), loss_a = one(carry, FIRST, x[:16], y[:16])
    (pb, sb, _), loss_b = one(carry, PATH, x[16:], y[16:])
    (p2, s2, _), loss2 = two(jnp.stack([FIRST, PATH]), x.reshape(2, 16, 40, 1), y.reshape(2, 16))
    p2, s2 = jax.tree.map(lambda v: v[0], (p2, s2))  # both devices hold the same result
    close = functools.partial(chex.assert_trees_all_close, rtol=1e-5, atol=1e-6)
    mean = lambda u, v: jax.tree.map(lambda s, t: (s + t) / 2, u, v)
    close(loss2[0], (loss_a + loss_b) / 2)
    shared = lambda p, s: (p["stem"], p["classifier"], s["stem_bn"], s["reduction_1"])
    close(shared(p2, s2), mean(shared(pa, sa), shared(pb, sb)))
    convs = {2: "nor_conv_1x1", 3: "nor_conv_3x3"}  # the ops with parameters
    on_a, on_b = (
        {(e, convs[k]) for e, k in enumerate(g.tolist()) if k in convs} for g in (FIRST, PATH)
    )
    for cell in ("cell_0_0", "cell_1_0", "cell_2_0"):
        for e in range(6):
            for op in ("nor_conv_1x1", "nor_conv_3x3"):
                got = (p2[cell][f"edge_{e}"][op], s2[cell][f"edge_{e}"][op])
                a = (pa[cell][f"edge_{e}"][op], sa[cell][f"edge_{e}"][op])
                b = (pb[cell][f"edge_{e}"][op], sb[cell][f"edge_{e}"][op])
                if (e, op) in on_a and (e, op) in on_b:
                    close(got, mean(a, b))
                elif (e, op) in on_a:
                    close(got, a)
                elif (e, op) in on_b:
                    close(got, b)
                else:
                    chex.assert_trees_all_equal(
                        got, (params[cell][f"edge_{e}"][op], state[cell][f"edge_{e}"][op])
                    )
    (p1, s1, _), loss1 = two(
        jnp.stack([PATH, PATH]), jnp.stack([x[16:]] * 2), jnp.stack([y[16:]] * 2)
    )
    close((p1, s1, loss1), jax.tree.map(lambda v: jnp.stack([v, v]), (pb, sb, loss_b)))
