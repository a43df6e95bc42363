"""nasjax.llm.distill: logit-KL distillation of a pruned LLaMA from its dense teacher and
the same shape from scratch, on a tiny random config (the real model only by hand)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import Interrupted, NasjaxError
from nasjax.llm import distill as distill_module
from nasjax.llm.corpus import Windows
from nasjax.llm.distill import (
    DistillConfig,
    batch_windows,
    distill,
    distill_loss,
    init_like,
    kl_to_teacher,
    make_optimizer,
)
from nasjax.llm.llama import LlamaConfig, forward, init_params
from nasjax.llm.one_shot import drop_layers, layer

CONFIG = LlamaConfig(
    vocab_size=61, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64,
    max_context=32,
)  # fmt: skip
# 6 steps of 2 windows of 16 tokens; every run below shares this budget (one program).
SETTINGS = DistillConfig(tokens=192, batch=2, seq_len=16, lr=3e-3, warmup=0.2, save_every=2)


@pytest.fixture(scope="module")
def data():
    teacher = jax.jit(init_params, static_argnums=1)(jax.random.key(0), CONFIG)
    stream = np.asarray(jax.random.randint(jax.random.key(1), (400,), 0, 61), np.int32)
    valid = Windows(np.asarray(jax.random.randint(jax.random.key(2), (2, 17), 0, 61)), 34)
    return teacher, stream, valid


def _one_line(error):
    assert "\n" not in str(error.value), str(error.value)


def _same_arrays(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _without_wall(log):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in log]


def test_kl_is_forward_kl_and_zero_on_itself(data):
    teacher, stream, _ = data
    tokens = jnp.asarray(stream[:32].reshape(2, 16))
    assert float(distill_loss(teacher, teacher, tokens, CONFIG)) == 0.0
    t, s = jax.random.normal(jax.random.key(3), (2, 2, 5, 7))
    q = np.exp(np.asarray(s, np.float64))
    p = np.exp(np.asarray(t, np.float64))
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    expected = np.mean(np.sum(p * np.log(p / q), -1))
    assert float(kl_to_teacher(t, s)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_to_teacher(t, s)) != pytest.approx(float(kl_to_teacher(s, t)), rel=1e-3)


def test_pruned_student_learns_and_scratch_starts_far_worse(data):
    teacher, stream, valid = data
    pruned = drop_layers(teacher, [1])
    result = distill(teacher, pruned, SETTINGS, CONFIG, stream, valid, quiet=True)
    losses = [r["loss"] for r in result.log]
    assert [r["step"] for r in result.log] == [1, 2, 3, 4, 5, 6]
    assert [r["tokens"] for r in result.log] == [32 * s for s in range(1, 7)]
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.ppl == result.log[-1]["val_ppl"] and np.isfinite(result.ppl)
    assert jax.tree.map(jnp.shape, result.params) == jax.tree.map(jnp.shape, pruned)
    scratch = init_like(jax.random.key(4), pruned)
    from_scratch = distill(teacher, scratch, SETTINGS, CONFIG, stream, valid, quiet=True)
    assert from_scratch.log[0]["loss"] > 2 * losses[0], (from_scratch.log[0], losses[0])


def test_resume_is_exact_and_refuses_changed_settings(data, tmp_path):
    teacher, stream, valid = data
    student = drop_layers(teacher, [0])
    settings = dataclasses.replace(SETTINGS, eval_every=3)
    straight = distill(
        teacher, student, settings, CONFIG, stream, valid, tmp_path / "a", quiet=True
    )
    part = distill(
        teacher, student, settings, CONFIG, stream, valid, tmp_path / "b", quiet=True, stop_at=3
    )
    assert [r["step"] for r in part.log] == [0, 1, 2, 3]
    with pytest.raises(NasjaxError, match=r"--lr 0.003 -> 0.001") as error:
        changed = dataclasses.replace(settings, lr=1e-3)
        distill(teacher, student, changed, CONFIG, stream, valid, tmp_path / "b", resume=True)
    _one_line(error)
    other = drop_layers(teacher, [1])  # same shapes, other weights: another run
    with pytest.raises(NasjaxError, match="--student-weights") as error:
        distill(teacher, other, settings, CONFIG, stream, valid, tmp_path / "b", resume=True)
    _one_line(error)
    with pytest.raises(NasjaxError, match="already holds a run") as error:
        distill(teacher, student, settings, CONFIG, stream, valid, tmp_path / "b", quiet=True)
    _one_line(error)
    resumed = distill(
        teacher, student, settings, CONFIG, stream, valid, tmp_path / "b", resume=True, quiet=True
    )
    _same_arrays(resumed.params, straight.params)
    assert _without_wall(resumed.log) == _without_wall(straight.log)
    assert [r["step"] for r in straight.log if "val_ppl" in r] == [0, 3, 6]
    assert resumed.ppl == straight.ppl


def test_ctrl_c_is_one_line_and_the_run_resumes(data, tmp_path, monkeypatch):
    teacher, stream, valid = data
    student = drop_layers(teacher, [2])
    real = distill_module.batch_windows

    def interrupt_at_step_4(stream, seq_len, batch, step, seed):
        if step == 4:
            raise KeyboardInterrupt
        return real(stream, seq_len, batch, step, seed)

    monkeypatch.setattr(distill_module, "batch_windows", interrupt_at_step_4)
    with pytest.raises(Interrupted, match="interrupted at step 5 .4 saved") as error:
        distill(teacher, student, SETTINGS, CONFIG, stream, valid, tmp_path, quiet=True)
    _one_line(error)
    monkeypatch.setattr(distill_module, "batch_windows", real)
    resumed = distill(
        teacher, student, SETTINGS, CONFIG, stream, valid, tmp_path, resume=True, quiet=True
    )
    straight = distill(teacher, student, SETTINGS, CONFIG, stream, valid, quiet=True)
    _same_arrays(resumed.params, straight.params)


def test_micro_batches_sum_to_the_whole_batch(data):
    teacher, stream, valid = data
    student = drop_layers(teacher, [1])
    whole = dataclasses.replace(SETTINGS, micro_batch=2)
    a = distill(teacher, student, SETTINGS, CONFIG, stream, valid, quiet=True, stop_at=1)
    b = distill(teacher, student, whole, CONFIG, stream, valid, quiet=True, stop_at=1)
    assert a.log[0]["loss"] == pytest.approx(b.log[0]["loss"], rel=1e-5)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert not np.array_equal(np.asarray(a.params["embed"]), np.asarray(teacher["embed"]))
    assert np.isfinite(np.asarray(teacher["embed"])).all()  # not donated away


def test_list_of_blocks_student(data):
    teacher, stream, valid = data
    narrow = {k: v for k, v in layer(teacher, 0).items()}
    narrow.update(
        w_gate=narrow["w_gate"][:, :32], w_up=narrow["w_up"][:, :32], w_down=narrow["w_down"][:32]
    )
    student = {**teacher, "layers": [narrow, layer(teacher, 2)]}
    result = distill(teacher, student, SETTINGS, CONFIG, stream, valid, quiet=True)
    assert isinstance(result.params["layers"], list)
    assert jax.tree.map(jnp.shape, result.params) == jax.tree.map(jnp.shape, student)
    assert result.log[-1]["loss"] < result.log[0]["loss"]
    scratch = init_like(jax.random.key(5), student)
    assert jax.tree.map(jnp.shape, scratch) == jax.tree.map(jnp.shape, student)


def test_init_like_follows_init_params(data):
    teacher, _, _ = data
    fresh = init_like(jax.random.key(6), teacher)
    _same_arrays(fresh, init_like(jax.random.key(6), teacher))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), fresh) == jax.tree.map(
        lambda x: (x.shape, x.dtype), teacher
    )
    assert float(jnp.std(fresh["embed"])) == pytest.approx(1.0, abs=0.05)
    assert float(jnp.mean(fresh["layers"]["attn_norm"])) == pytest.approx(1.0, abs=0.02)
    assert float(jnp.std(fresh["layers"]["w_down"])) == pytest.approx(64**-0.5, rel=0.05)
    assert float(jnp.std(fresh["layers"]["wq"])) == pytest.approx(32**-0.5, rel=0.05)
    assert not np.array_equal(np.asarray(fresh["embed"]), np.asarray(teacher["embed"]))
    small = init_like(jax.random.key(6), teacher, embed_std=0.02)
    np.testing.assert_allclose(small["embed"], 0.02 * fresh["embed"], rtol=1e-6)
    _same_arrays(small["layers"], fresh["layers"])
    logits = forward(fresh, jnp.zeros((2, 16), jnp.int32), CONFIG)  # compiled already
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_batch_order_is_a_seeded_permutation_per_pass():
    stream = np.arange(100, dtype=np.int32)  # 10 windows of 10: 5 batches of 2 per pass
    first = [batch_windows(stream, 10, 2, s, seed=0) for s in range(5)]
    starts = sorted(int(b[0]) for batch in first for b in batch)
    assert starts == list(range(0, 100, 10))
    np.testing.assert_array_equal(first[1][0], np.arange(first[1][0][0], first[1][0][0] + 10))
    again = batch_windows(stream, 10, 2, 1, seed=0)
    np.testing.assert_array_equal(again, first[1])
    second_pass = [batch_windows(stream, 10, 2, s, seed=0) for s in range(5, 10)]
    assert sorted(int(b[0]) for batch in second_pass for b in batch) == starts
    other = [batch_windows(stream, 10, 2, s, seed=1) for s in range(5)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    with pytest.raises(NasjaxError, match="fewer than one batch of 2") as error:
        batch_windows(stream[:15], 10, 2, 0, seed=0)
    _one_line(error)


def test_schedule_warms_up_then_decays_to_final_lr():
    config = DistillConfig(tokens=10 * 64, batch=2, seq_len=32, lr=1e-3, warmup=0.2)
    opt = make_optimizer(config)
    params = {"w": jnp.ones(3)}
    state, update = opt.init(params), jax.jit(opt.update)
    lrs = []
    for _ in range(config.steps):
        grads = {"w": jnp.ones(3)}
        updates, state = update(grads, state, params)
        lrs.append(float(-updates["w"][0]))  # Adam's first step moves by about lr
    assert lrs[0] == pytest.approx(5e-4, rel=1e-3)  # 1/2 of the way up: step 0 is not 0
    assert lrs[1] == pytest.approx(1e-3, rel=1e-3)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tokens", 0, "tokens must be an integer >= 1, got 0"),
        ("tokens", 100, "tokens 100 is less than one step of batch 4 x seq_len 256"),
        ("lr", 0.0, "lr must be > 0, got 0.0"),
        ("warmup", 0.7, r"warmup must be in \[0, 0.5\], got 0.7"),
        ("clip", -1.0, "clip must be >= 0"),
        ("eval_every", -1, "eval_every must be an integer >= 0, got -1"),
        ("micro_batch", 3, "micro_batch 3 must divide batch 4; valid: 1, 2, 4"),
        ("dtype", "float16", "unknown dtype 'float16'; valid choices: float32, bfloat16"),
    ],
)
def test_bad_settings_are_one_line(field, value, message):
    with pytest.raises(NasjaxError, match=message) as error:
        DistillConfig(**{field: value})
    _one_line(error)


def test_bad_models_are_one_line(data):
    teacher, stream, valid = data
    other = {**teacher, "embed": teacher["embed"][:60]}
    with pytest.raises(NasjaxError, match="student vocabulary 60 differs") as error:
        distill(teacher, other, SETTINGS, CONFIG, stream, valid, quiet=True)
    _one_line(error)
    too_long = dataclasses.replace(SETTINGS, seq_len=64, tokens=6 * 2 * 64)
    with pytest.raises(NasjaxError, match="seq_len 64 exceeds the model's max_context 32"):
        distill(teacher, teacher, too_long, CONFIG, stream, valid, quiet=True)
    with pytest.raises(NasjaxError, match="stop_at must be an integer >= 1, got 0"):
        distill(teacher, teacher, SETTINGS, CONFIG, stream, valid, quiet=True, stop_at=0)
