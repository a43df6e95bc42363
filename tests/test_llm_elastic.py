"""nasjax.llm.elastic on a tiny random LLaMA: the genotype layout, activation importance,
real slicing against the masked dense model (equal logits, exact params), the population
scorer against one-by-one scoring, exact costs and the baselines; on SmolLM2-135M (slow)
masked and sliced perplexities agree at ~75 % of the parameters."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.llm import elastic
from nasjax.llm.corpus import (
    calibration_corpus,
    calibration_windows,
    eval_windows,
    validation_corpus,
)
from nasjax.llm.elastic import ElasticChoices
from nasjax.llm.llama import LlamaConfig, block_taps, count_params, embed, forward, init_params
from nasjax.llm.one_shot import block_influence

CONFIG = LlamaConfig(
    vocab_size=61, dim=48, n_layers=3, n_heads=6, n_kv_heads=3, head_dim=8, ffn_dim=64
)
CHOICES = ElasticChoices(CONFIG, step=16)  # widths 16, 32, 48; FFN 16..64; groups 1..3
SMOLLM2 = LlamaConfig(
    vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, ffn_dim=1536
)
GENOTYPES = np.asarray(
    [
        [2, 1, 2, 3, 1, 2, 3, 1, 2, 3],  # dense
        [1, 1, 0, 1, 0, 2, 3, 1, 1, 0],  # width 32, layer 1 dropped
        [0, 0, 1, 2, 1, 0, 0, 1, 2, 2],  # width 16, layer 0 dropped
        [2, 1, 1, 3, 1, 0, 1, 0, 0, 0],  # full width, layer 2 dropped
    ],
    np.int32,
)


def _tokens(shape, seed):
    return np.asarray(jax.random.randint(jax.random.key(seed), shape, 0, CONFIG.vocab_size))


@pytest.fixture(scope="module")
def model():
    params = init_params(jax.random.key(0), CONFIG)
    calibration = _tokens((4, 16), seed=1)
    return params, elastic.importance(params, CONFIG, calibration), calibration


# ----------------------------------------------------------------- the genotype layout
def test_smollm2_layout():
    choices = ElasticChoices(SMOLLM2)
    assert choices.widths == tuple(range(64, 577, 64)) and len(choices.ffn_sizes) == 24
    assert choices.num_choices == (9,) + (2, 3, 24) * 30 and choices.group_size == 3
    names = choices.gene_names()
    assert names[:4] == ["width", "layer0.keep", "layer0.groups", "layer0.ffn"]
    assert len(names) == 91 and names[-1] == "layer29.ffn"
    dense = choices.dense_genotype()
    assert choices.shape_of(dense) == (576, ((1, 3, 1536),) * 30)
    assert choices.dense_params == 134_515_008  # SmolLM2-135M, tied embedding


def test_grid_ends_at_the_dense_size():
    odd = ElasticChoices(dataclasses.replace(CONFIG, dim=40, ffn_dim=50), step=16)
    assert odd.widths == (16, 32, 40) and odd.ffn_sizes == (16, 32, 48, 50)


@pytest.mark.parametrize(
    "bad, match",
    [
        (GENOTYPES[0, :-1], r"is 10 integers \(1 \+ 3 x 3 layers\), got shape \(9,\)"),
        (GENOTYPES[0] * 1.0, "dtype float64"),
        (np.r_[3, GENOTYPES[0, 1:]], r"entry width = 3 is out of range; valid 0..2"),
        (np.r_[GENOTYPES[0, :5], 3, GENOTYPES[0, 6:]], r"layer1.groups = 3 .* valid 0..2$"),
    ],
)
def test_bad_genotype_is_one_line(bad, match):
    with pytest.raises(NasjaxError, match=match) as err:
        CHOICES.shape_of(bad)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------- importance
def test_importance_is_minitrons_activation_norms(model):
    params, imp, calibration = model
    assert imp.heads.shape == (3, 6) and imp.groups.shape == (3, 3) and imp.ffn.shape == (3, 64)
    assert imp.channels.shape == (48,) and imp.block_influence.shape == (3,)
    np.testing.assert_allclose(imp.groups, imp.heads.reshape(3, 3, 2).sum(-1), rtol=1e-12)
    for order, score in [
        (imp.group_order, imp.groups),
        (imp.ffn_order, imp.ffn),
        (imp.channel_order, imp.channels),
    ]:
        np.testing.assert_array_equal(np.sort(order, axis=-1), np.broadcast_to(
            np.arange(score.shape[-1]), score.shape))  # fmt: skip
        assert np.all(np.diff(np.take_along_axis(score, order, axis=-1), axis=-1) <= 0)
    # layer 1's neurons by hand: mean |activation| over each sequence, L2 over sequences
    x = embed(params, jnp.asarray(calibration))
    layer = lambda i: jax.tree.map(lambda a: a[i], params["layers"])  # noqa: E731
    taps = block_taps(layer(1), block_taps(layer(0), x, CONFIG)[0], CONFIG)[1]
    expected = np.linalg.norm(np.abs(np.asarray(taps["ffn_hidden"])).mean(1), axis=0)
    np.testing.assert_allclose(imp.ffn[1], expected, rtol=1e-4)
    heads = np.linalg.norm(np.asarray(taps["attn_out"]).reshape(4, 16, 6, 8), axis=-1)
    np.testing.assert_allclose(imp.heads[1], np.linalg.norm(heads.mean(1), axis=0), rtol=1e-4)
    np.testing.assert_allclose(
        imp.block_influence, block_influence(params, CONFIG, calibration, 4), rtol=1e-6
    )


def test_importance_does_not_depend_on_the_batching(model):
    params, imp, calibration = model
    again = elastic.importance(params, CONFIG, calibration, batch_size=3)  # 3 + 1 sequences
    for a, b in zip(imp[:4], again[:4]):
        np.testing.assert_allclose(a, b, rtol=1e-5)


# ----------------------------------------------------------------- slicing = masking
def test_masked_equals_sliced_and_params_are_exact(model):
    params, imp, _ = model
    tokens = jnp.asarray(_tokens((2, 12), seed=2))
    dense_logits = forward(params, tokens, CONFIG)
    for g in GENOTYPES:
        sliced = elastic.slice_params(params, CHOICES, imp, g)
        shape = CHOICES.shape_of(g)
        assert len(sliced["layers"]) == len(shape.kept)
        assert sliced["embed"].shape == (61, shape.width)
        assert count_params(sliced) == elastic.costs(CHOICES, g)["params"]
        want = forward(sliced, tokens, CONFIG)
        got = elastic.masked_forward(params, CONFIG, elastic.masks(CHOICES, imp, g), tokens)
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4 * scale)
        if shape == CHOICES.shape_of(CHOICES.dense_genotype()):
            assert count_params(sliced) == count_params(params)
            np.testing.assert_allclose(
                np.asarray(want), np.asarray(dense_logits), atol=1e-4 * scale
            )
        else:
            assert count_params(sliced) < count_params(params)


def test_untied_head_is_sliced_too(model):
    params, imp, _ = model
    untied = init_params(jax.random.key(3), CONFIG, tied=False)
    choices = dataclasses.replace(CHOICES, tied=False)
    g = GENOTYPES[1]
    sliced = elastic.slice_params(untied, choices, imp, g)
    assert sliced["lm_head"].shape == (32, 61)
    assert count_params(sliced) == elastic.costs(choices, g)["params"]
    tokens = jnp.asarray(_tokens((1, 8), seed=4))
    got = elastic.masked_forward(untied, CONFIG, elastic.masks(choices, imp, g), tokens)
    np.testing.assert_allclose(got, forward(sliced, tokens, CONFIG), rtol=1e-4, atol=1e-4)


def test_masks_are_top_k_of_the_orders(model):
    _, imp, _ = model
    m = elastic.masks(CHOICES, imp, GENOTYPES)  # a batch of genotypes
    assert m.channels.shape == (4, 48) and m.heads.shape == (4, 3, 6) and m.ffn.shape == (4, 3, 64)
    np.testing.assert_array_equal(m.channels.sum(-1), [48, 32, 16, 48])
    np.testing.assert_array_equal(m.layers[1], [True, False, True])
    np.testing.assert_array_equal(m.heads[1].sum(-1), [2, 6, 4])  # groups 1, 3, 2
    np.testing.assert_array_equal(m.ffn[1].sum(-1), [32, 64, 16])
    top = imp.channel_order[:16]
    np.testing.assert_array_equal(np.flatnonzero(m.channels[2]), np.sort(top))
    best = imp.group_order[0, 0]  # layer 0 of genotype 1 keeps 1 group: the best
    np.testing.assert_array_equal(np.flatnonzero(m.heads[1, 0]), [2 * best, 2 * best + 1])


# ----------------------------------------------------------------- population scoring
def _one_by_one(params, imp, windows, teacher):
    nll, kl = [], []
    log_t = jax.nn.log_softmax(teacher, axis=-1)
    for g in GENOTYPES:
        logits = forward(elastic.slice_params(params, CHOICES, imp, g), windows[:, :-1], CONFIG)
        log_p = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(log_p, windows[:, 1:, None], axis=-1)
        nll.append(-float(jnp.mean(picked)))
        kl.append(float(jnp.mean(jnp.sum(jnp.exp(log_t) * (log_t - log_p), axis=-1))))
    return np.asarray(nll), np.asarray(kl)


def test_population_in_one_call_equals_one_by_one(model):
    params, imp, _ = model
    windows = jnp.asarray(_tokens((2, 11), seed=5))
    teacher = forward(params, windows[:, :-1], CONFIG)
    scores = elastic.score_population(params, CHOICES, imp, GENOTYPES, windows, teacher)
    nll, kl = _one_by_one(params, imp, windows, teacher)
    np.testing.assert_allclose(scores.nll, nll, rtol=1e-4)
    np.testing.assert_allclose(scores.ppl, np.exp(nll), rtol=1e-3)
    np.testing.assert_allclose(scores.kl, kl, rtol=1e-3, atol=1e-5)
    assert abs(scores.kl[0]) < 1e-5  # the dense genotype is the teacher
    # no teacher, through shard_map (a one-device mesh here)
    sharded = elastic.score_population(params, CHOICES, imp, GENOTYPES[1:3], windows, shards=1)
    assert sharded.kl is None
    np.testing.assert_allclose(sharded.nll, scores.nll[1:3], rtol=1e-6)


SHARDED = """
import json, jax, numpy as np
from nasjax.llm import elastic, llama
config = llama.LlamaConfig(61, 48, 3, n_heads=6, n_kv_heads=3, head_dim=8, ffn_dim=64)
choices = elastic.ElasticChoices(config, step=16)
params = llama.init_params(jax.random.key(0), config)
perm = lambda k, shape: np.argsort(jax.random.uniform(jax.random.key(k), shape), -1)
imp = elastic.Importance(*[None] * 5, perm(1, (3, 3)), perm(2, (3, 64)), perm(3, (48,)))
g = elastic.random_genotypes(jax.random.key(4), 3, choices)
windows = np.asarray(jax.random.randint(jax.random.key(5), (2, 9), 0, 61))
teacher = llama.forward(params, windows[:, :-1], config)
runs = [elastic.score_population(params, choices, imp, g, windows, teacher, shards=s)
        for s in (None, 1)]  # None: both devices, P = 3 padded to 4
print(json.dumps([len(jax.devices())] + [r.nll.tolist() + r.kl.tolist() for r in runs]))
"""


def test_population_split_over_two_devices():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    devices, two, one = json.loads(run.stdout.strip().splitlines()[-1])
    assert devices == 2 and len(two) == 6
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_population_bad_input_is_one_line(model):
    params, imp, _ = model
    windows = _tokens((1, 5), seed=6)
    with pytest.raises(NasjaxError, match=r"got shape \(2, 9\)"):
        elastic.score_population(params, CHOICES, imp, GENOTYPES[:2, :9], windows)
    n = len(jax.local_devices())  # one more shard than this process has devices
    with pytest.raises(NasjaxError, match=rf"shards must be in 1..{n} .*got {n + 1}"):
        elastic.score_population(params, CHOICES, imp, GENOTYPES, windows, shards=n + 1)
    with pytest.raises(NasjaxError, match=r"windows must be int32\[B, T \+ 1\]"):
        elastic.score_population(params, CHOICES, imp, GENOTYPES, windows[0])


# ----------------------------------------------------------------- costs and baselines
def test_costs_by_hand():
    g = GENOTYPES[1]  # width 32; layer 0: 1 group, FFN 32; layer 2: 2 groups, FFN 16
    linear = 32 * (2 * 16 + 2 * 8 + 3 * 32) + 32 * (2 * 32 + 2 * 16 + 3 * 16)
    decoder = linear + 2 * 32 * 2 + 32
    c = elastic.costs(CHOICES, g, context=10)
    assert c == {
        "params": 61 * 32 + decoder,
        "decoder_params": decoder,
        "embedding_params": 61 * 32,
        "flops_per_token": 2 * (linear + 32 * 61) + 4 * (16 + 32) * 10,
        "kv_cache_bytes_per_token": 2 * (8 + 16) * 4,
    }
    batch = elastic.costs(CHOICES, GENOTYPES, context=10)
    assert batch["params"].shape == (4,) and batch["params"][1] == c["params"]
    assert elastic.costs(CHOICES, g, cache_bytes=2)["kv_cache_bytes_per_token"] == 96


def test_baselines_at_75_percent_of_smollm2():
    choices = ElasticChoices(SMOLLM2)
    target = 0.75 * choices.dense_params
    uniform = choices.shape_of(elastic.uniform_genotype(choices, target))
    assert uniform.kept == list(range(30)) and len(set(uniform.layers)) == 1
    assert uniform.width == 512 and uniform.layers[0] == (1, 2, 1280)  # 0.89, 0.67, 0.83
    params = elastic.costs(choices, elastic.uniform_genotype(choices, target))["params"]
    assert params == 99_908_096 and params / choices.dense_params > 0.74
    influence = np.linspace(1.0, 0.0, 30)  # the last blocks matter least
    imp = elastic.Importance(*([None] * 4), influence, *([None] * 3))
    depth = elastic.depth_genotype(choices, imp, target)
    shape = choices.shape_of(depth)
    assert shape.width == 576 and shape.kept == list(range(20))  # 10 blocks of 3.54 M
    assert elastic.costs(choices, depth)["params"] <= target
    assert elastic.costs(choices, np.r_[depth[:61], 1, depth[62:]])["params"] > target
    random = elastic.random_genotypes(jax.random.key(0), 5, choices, target)
    params = elastic.costs(choices, random)["params"]
    assert random.shape == (5, 91) and np.all((params <= target) & (params >= 0.98 * target))
    again = elastic.random_genotypes(jax.random.key(0), 5, choices, target)
    np.testing.assert_array_equal(random, again)
    assert len({tuple(r) for r in random}) == 5


# ----------------------------------------------------------------- SmolLM2-135M
@pytest.mark.slow
def test_smollm2_masked_perplexity_equals_sliced(llm_checkpoint):
    config, params, tokenizer = (
        llm_checkpoint.config,
        llm_checkpoint.params,
        llm_checkpoint.tokenizer,
    )
    calibration = calibration_windows(tokenizer, calibration_corpus(), 4, 64)
    imp = elastic.importance(params, config, calibration, batch_size=4)
    choices = ElasticChoices(config)
    g = elastic.uniform_genotype(choices, 0.75 * choices.dense_params)
    g[1 + 3 * int(np.argmin(imp.block_influence))] = 0  # and one block dropped
    windows = eval_windows(tokenizer, validation_corpus(), 128, max_windows=1).tokens
    masked = elastic.score_population(params, choices, imp, g[None], windows)
    sliced = elastic.slice_params(params, choices, imp, g)
    logits = forward(sliced, jnp.asarray(windows[:, :-1]), config)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -float(jnp.mean(jnp.take_along_axis(log_p, jnp.asarray(windows[:, 1:, None]), -1)))
    assert count_params(sliced) == elastic.costs(choices, g)["params"] < 0.75 * choices.dense_params
    np.testing.assert_allclose(masked.ppl[0], np.exp(nll), rtol=1e-4)
    assert 1.0 < masked.ppl[0] < 1e4
