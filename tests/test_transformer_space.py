"""The transformer space: genotypes, strings, validity, decoded model = elastic supernet,
KV-cached generation, and the closed-form costs against hand counts and the traced model."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.nets.transformer import LMSpec, forward
from nasjax.nets.transformer_generate import decode_step, generate, prefill
from nasjax.objectives import _dot_macs, count_params
from nasjax.spaces import SPACES, make_space
from nasjax.spaces.transformer import TransformerSpace
from nasjax.strategies import make_strategy
from nasjax.transformer_costs import (
    flops_per_token,
    forward_latency_ms,
    generate_latency_ms,
    param_counts,
    peak_memory_mb,
    training_free_costs,
)

TINY = TransformerSpace(
    widths=(16, 32),
    layers=(1, 2, 3),
    heads=(1, 2, 4),
    mlp_ratios=(1, 2),
    head_dims=(4, 8),
    max_context=12,
)


def test_registered_and_layout():
    assert SPACES["transformer"] is TransformerSpace
    space = make_space("transformer")
    assert space.num_choices == (3, 4) + (3, 3, 2) * 4
    assert space.size == 3 * 4 * 18**4
    assert hash(space) == hash(TransformerSpace())  # a static jit argument


def test_sample_mutate_neighbours_stay_valid():
    space = TransformerSpace()
    pop = jax.jit(space.sample, static_argnums=1)(jax.random.key(0), 200)
    chex.assert_shape(pop, (200, space.num_decisions))
    assert bool(jnp.all(space.is_valid(pop)))
    children = jax.jit(space.mutate)(jax.random.key(1), pop)
    assert bool(jnp.all(space.is_valid(children)))
    assert bool(jnp.all(jnp.any(children != pop, axis=1)))  # never a no-op
    rows = jax.jit(space.neighbours)(pop[0])
    assert bool(jnp.all(space.is_valid(rows)))


def test_repair_keeps_a_changed_head_count():
    space = TransformerSpace()
    g = space.from_string("d64-L1:h1e1d32")
    g2 = g.copy()
    g2[2] = 2  # 4 heads x 32 > 64
    assert not bool(space.is_valid(g2))
    fixed = np.asarray(space.repair(g2, jnp.asarray(g2 != g)))
    assert space.to_string(fixed) == "d64-L1:h4e1d16"  # heads kept, head dim lowered
    assert space.to_string(np.asarray(space.repair(g2))) == "d64-L1:h2e1d32"


def test_strings_round_trip():
    space = TransformerSpace()
    text = "d128-L2:h4e2d32|h2e4d16"
    g = space.from_string(text)
    assert space.to_string(g) == text
    for g in np.asarray(space.sample(jax.random.key(2), 30)):
        s = space.to_string(g)
        assert space.to_string(space.from_string(s)) == s
        np.testing.assert_array_equal(space.from_string(s), space.canonical(g))


@pytest.mark.parametrize(
    "text, message",
    [
        ("d100-L1:h1e1d16", "unknown width 100; valid choices: 64, 96, 128"),
        ("d64-L5:h1e1d16|h1e1d16|h1e1d16|h1e1d16|h1e1d16", "valid choices: 1, 2, 3, 4"),
        ("d64-L1:h3e1d16", "unknown heads (layer 0) 3; valid choices: 1, 2, 4"),
        ("d64-L1:h1e8d16", "unknown MLP ratio (layer 0) 8; valid choices: 1, 2, 4"),
        ("d64-L1:h1e1d64", "unknown head dim (layer 0) 64; valid choices: 16, 32"),
        ("d64-L2:h1e1d16", "says L2 but lists 1 layers"),
        ("d64-L1:h1x1d16", "malformed layer 'h1x1d16'"),
        ("128/3", "malformed transformer arch string"),
        ("d64-L1:h4e1d32", "4 heads x head dim 32 = 128 > width 64"),
    ],
)
def test_bad_strings(text, message):
    with pytest.raises(NasjaxError) as err:
        TransformerSpace().from_string(text)
    assert message in str(err.value)


def test_out_of_limits_genotype_is_refused():
    space = TransformerSpace()
    g = np.zeros(space.num_decisions, np.int32)
    g[2], g[4] = 2, 1  # 4 heads of 32 dims at width 64
    assert not bool(space.is_valid(g))
    with pytest.raises(NasjaxError, match="heads that fit with head dim 32: 1, 2"):
        space.decode(g)
    with pytest.raises(NasjaxError, match="out of range"):
        space.validate(np.full(space.num_decisions, 7))
    with pytest.raises(NasjaxError, match="must fit the smallest width"):
        TransformerSpace(widths=(16,), heads=(4,), head_dims=(8,))


def _population(space, n, seed=0):
    return space.sample(jax.random.key(seed), n)


def test_elastic_supernet_equals_decoded_models():
    supernet = TINY.supernet()
    params = supernet.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 256)
    pop = _population(TINY, 4)
    batched = jax.jit(supernet.apply_population)(params, pop, tokens)
    chex.assert_shape(batched, (4, 2, 9, 256))
    for g, logits in zip(np.asarray(pop), batched):
        decoded = TINY.decode(g)
        variables = supernet.slice(params, g)
        # The decoded model's own init has the same tree of shapes as the slice.
        shapes = jax.eval_shape(decoded.init, jax.random.key(0), tokens)
        chex.assert_trees_all_equal_shapes(shapes, variables)
        expected = jax.jit(decoded.apply)(variables, tokens)
        np.testing.assert_allclose(logits, expected, atol=2e-5, rtol=1e-5)
    alone = jax.jit(supernet.apply)(params, pop[-1], tokens)  # one member, no vmap
    np.testing.assert_allclose(alone, expected, atol=2e-5, rtol=1e-5)


def test_kv_cache_matches_full_forward():
    g = TINY.from_string("d32-L2:h4e2d8|h2e1d4")
    spec = TINY.spec(g)
    params = TINY.supernet().slice(TINY.supernet().init(jax.random.key(0)), g)["params"]
    tokens = jax.random.randint(jax.random.key(3), (2, 10), 0, 256)
    fwd = jax.jit(forward, static_argnums=1)
    full = fwd(params, spec, tokens)
    logits, kv = jax.jit(prefill, static_argnums=1)(params, spec, tokens[:, :4])
    np.testing.assert_allclose(logits, full[:, :4], atol=1e-5)
    step = jax.jit(decode_step, static_argnums=1)
    for pos in range(4, 10):  # teacher-forced steps with the cache
        out, kv = step(params, spec, tokens[:, pos], pos, kv)
        np.testing.assert_allclose(out, full[:, pos], atol=1e-5)
    out = jax.jit(generate, static_argnums=(1, 3))(params, spec, tokens[:, :4], 5)
    chex.assert_shape(out, (2, 5))
    # Greedy without a cache: each generated token is the argmax of the full forward pass
    # over the prompt and the tokens generated before it.
    seq = jnp.concatenate([tokens[:, :4], out], axis=1)
    greedy = jnp.argmax(fwd(params, spec, seq[:, :-1])[:, 3:], -1)
    np.testing.assert_array_equal(out, greedy)


def test_context_longer_than_the_model_is_refused():
    g = TINY.from_string("d16-L1:h1e1d4")
    model = TINY.decode(g)
    with pytest.raises(NasjaxError, match="context 1..12"):
        model.init(jax.random.key(0), jnp.zeros((1, 13), jnp.int32))
    spec = TINY.spec(g)
    params = TINY.supernet().slice(TINY.supernet().init(jax.random.key(0)), g)["params"]
    with pytest.raises(NasjaxError, match="must fit the model's max_context 12"):
        generate(params, spec, jnp.zeros((1, 8), jnp.int32), 5)
    with pytest.raises(NasjaxError, match="max_context is 12"):
        training_free_costs(spec, 13)


def test_bfloat16_forward_is_close():
    g = TINY.from_string("d32-L2:h4e2d8|h2e1d4")
    params = TINY.supernet().slice(TINY.supernet().init(jax.random.key(0)), g)
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 256)
    f32 = jax.jit(TINY.decode(g).apply)(params, tokens)
    bf16 = jax.jit(TINY.decode(g, dtype=jnp.bfloat16).apply)(params, tokens)
    assert bf16.dtype == jnp.float32  # logits for the loss stay float32
    np.testing.assert_allclose(bf16, f32, atol=0.05)


def test_param_counts_by_hand():
    spec = LMSpec(width=8, heads=(2,), head_dims=(4,), mlp_ratios=(2,), max_context=16)
    # final LN 2*8; block: QKV 3*(8*2*4 + 2*4) = 216, out 2*4*8 + 8 = 72,
    # 2 LNs 4*8 = 32, MLP 8*16 + 16 + 16*8 + 8 = 280  -> 600
    assert param_counts(spec) == {
        "decoder_params": 16 + 600,
        "embedding_params": (256 + 16) * 8,
        "total_params": 616 + 2176,
    }
    for g in np.asarray(_population(TINY, 4, seed=4)):
        variables = jax.eval_shape(TINY.decode(g).init, jax.random.key(0), jnp.zeros((1, 4), int))
        assert count_params(variables["params"]) == param_counts(TINY.spec(g))["total_params"]


def test_flops_per_token_counts_the_traced_matmuls():
    spec = LMSpec(width=8, heads=(2,), head_dims=(4,), mlp_ratios=(2,), max_context=16)
    # per token: QKV 3*8*8 + out 8*8 + MLP 2*8*16 + attention 2*T*8 + head 8*256, T = 10
    assert flops_per_token(spec, 10) == 2 * (192 + 64 + 256 + 160 + 2048)
    for g in np.asarray(_population(TINY, 4, seed=5)):
        spec = TINY.spec(g)
        params = jax.eval_shape(TINY.decode(g).init, jax.random.key(0), jnp.zeros((1, 4), int))
        jaxpr = jax.make_jaxpr(lambda p, t, s=spec: forward(p["params"], s, t))(
            params, jax.ShapeDtypeStruct((1, 10), jnp.int32)
        )
        assert 2 * _dot_macs(jaxpr.jaxpr) == 10 * flops_per_token(spec, 10)


def test_measured_costs_run():
    spec = TINY.spec(TINY.from_string("d16-L1:h2e1d4"))
    assert forward_latency_ms(spec, 8, repeats=2, warmup=1) > 0
    assert generate_latency_ms(spec, 4, 4, repeats=1, warmup=1) > 0
    assert peak_memory_mb(spec, 8) > 0
    with pytest.raises(NasjaxError, match="repeats must be >= 1"):
        forward_latency_ms(spec, 8, repeats=0)


def test_repaired_strategies_ask_valid_genotypes():
    space = TransformerSpace()
    for name in ("nsga2",):
        strategy = space.repaired_strategy(make_strategy(name, space))
        state = strategy.init(jax.random.key(0))
        pop, state = jax.jit(strategy.ask)(jax.random.key(1), state)
        assert bool(jnp.all(space.is_valid(pop)))
