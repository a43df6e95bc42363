"""nasjax.spaces.llm: the registered elastic SmolLM2 space from its GGUF header alone
(layout, strings, exact costs, one-line errors, refused capabilities), and its network side
on a tiny random-weight model (decode = real slicing, population scoring = decoded)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.cli import main
from nasjax.errors import CapabilityError, NasjaxError
from nasjax.llm import elastic
from nasjax.llm.llama import LlamaConfig, count_params, forward, init_params
from nasjax.spaces import SPACES, LlamaElasticSpace, make_space
from nasjax.spaces import llm as llm_space

TINY = LlamaConfig(
    vocab_size=61, dim=48, n_layers=3, n_heads=6, n_kv_heads=3, head_dim=8, ffn_dim=64
)
DENSE = "w576|" + "|".join(f"L{i}:g3f1536" for i in range(30))


def _tiny_space(**kw):
    return LlamaElasticSpace(
        random_config=TINY, step=16, calibration=4, calibration_length=16, **kw
    )


@pytest.fixture(scope="module")
def space():
    return make_space("llm")


# ----------------------------------------------------------------- the registered space
def test_registered_space_reads_only_the_header(space):
    assert SPACES["llm"] is LlamaElasticSpace and isinstance(space, LlamaElasticSpace)
    cfg = space.config
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (
        576,
        30,
        9,
        3,
        1536,
    )
    assert space.num_choices == (9,) + (2, 3, 24) * 30 and space.data_kind == "text"
    assert space.gene_names()[4:7] == ["layer1.keep", "layer1.groups", "layer1.ffn"]
    loaded = llm_space._supernet.cache_info().misses
    c = space.costs(space.dense_genotype(), "bytes", context=256)
    assert c["params"] == 134_515_008 and c["embedding_params"] == 49152 * 576
    assert c["kv_cache_bytes_per_token"] == 2 * 30 * 3 * 64 * 4
    linear = 30 * 576 * (2 * 576 + 2 * 192 + 3 * 1536) + 576 * 49152
    assert c["flops_per_token"] == 2 * linear + 4 * 30 * 576 * 256
    assert llm_space._supernet.cache_info().misses == loaded  # no weights were read
    assert hash(space) == hash(make_space("llm")) and space == make_space("llm")


def test_strings_round_trip(space):
    dense = space.dense_genotype()
    assert space.to_string(dense) == DENSE
    np.testing.assert_array_equal(space.from_string(DENSE), dense)
    g = dense.copy()
    g[0], g[1 + 3 * 2], g[2 + 3 * 5], g[3 + 3 * 5] = 3, 0, 0, 4  # w256, L2 dropped, L5 g1f320
    text = space.to_string(g)
    assert text.startswith("w256|L0:g3f1536|L1:g3f1536|L2:-|L3:g3f1536|L4:g3f1536|L5:g1f320|")
    np.testing.assert_array_equal(space.from_string(text), g)
    for g in np.asarray(space.sample(jax.random.key(0), 8)):
        text = space.to_string(g)
        np.testing.assert_array_equal(space.from_string(text), space.canonical(g))
        assert space.to_string(space.from_string(text)) == text


@pytest.mark.parametrize(
    "text, match",
    [
        ("w500" + DENSE[4:], r"unknown width 500; valid choices: 64, 128, .*, 576$"),
        (DENSE.replace("|L3:g3f1536", ""), "lists 29 blocks; the model has 30"),
        (
            DENSE.replace("L1:g3f1536", "L1:g4f1536"),
            r"KV groups \(block 1\) 4; valid choices: 1, 2, 3",
        ),
        (DENSE.replace("L1:g3f1536", "L1:g2f100"), r"FFN channels \(block 1\) 100; valid .*1536$"),
        (DENSE.replace("L0:", "L1:", 1), r"block 0 is 'L1:g3f1536'; expected L0:- or L0:g"),
        ("bogus", r"malformed llm arch string 'bogus'; e.g. w576\|L0:g1f64\|L1:-"),
    ],
)
def test_bad_string_is_one_line(space, text, match):
    with pytest.raises(NasjaxError, match=match) as err:
        space.from_string(text)
    assert "\n" not in str(err.value)


def test_bad_genotype_is_one_line(space):
    dense = space.dense_genotype()
    bad = dense.copy()
    bad[2 + 3 * 7] = 3
    for genotype, match in [
        (dense[:-1], r"must be 91 integers .*got shape \(90,\)"),
        (bad, r"out of range: layer7.groups = 3 \(valid 0..2\)$"),
    ]:
        for call in (space.validate, space.to_string, lambda g: space.costs(g, "bytes")):
            with pytest.raises(NasjaxError, match=match) as err:
                call(genotype)
            assert "\n" not in str(err.value)
    with pytest.raises(NasjaxError, match="unknown dataset 'cifar10'; valid choices: bytes"):
        space.costs(dense, "cifar10")


@pytest.mark.parametrize("capability", ["functional", "relaxed", "cost_table"])
def test_missing_capabilities_point_to_the_experiment(space, capability):
    args = {
        "functional": ("bytes",),
        "relaxed": ("bytes", "darts"),
        "cost_table": ("params", "bytes"),
    }
    with pytest.raises(CapabilityError, match=rf"^space 'llm' has no .* \({capability}\); ") as err:
        getattr(space, capability)(*args[capability])
    assert "experiments/llm_nas.py" in str(err.value) or "costs" in str(err.value)


def test_cli_search_is_refused_in_one_line(tmp_path, capsys):
    argv = ["search", "--space", "llm", "--smoke", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apply_population" in err and "experiments/llm_nas.py" in err
    assert not list(tmp_path.iterdir())


def test_construction_errors(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(NasjaxError, match=r"not a GGUF file \(no GGUF magic number\): .*junk"):
        LlamaElasticSpace(model=str(junk))
    junk.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(NasjaxError, match=r"truncated or corrupted GGUF \(header cut short\)"):
        LlamaElasticSpace(model=str(junk))
    with pytest.raises(NasjaxError, match="not both"):
        LlamaElasticSpace(model="x.gguf", random_config=TINY)
    with pytest.raises(NasjaxError, match="model file not found: /nonexistent.gguf"):
        LlamaElasticSpace(model="/nonexistent.gguf")
    with pytest.raises(NasjaxError, match="step must be an integer >= 1, got 0"):
        LlamaElasticSpace(random_config=TINY, step=0)


# ----------------------------------------------------------------- the network side (tiny)
def test_decode_is_real_slicing_and_scores_match():
    space = _tiny_space()
    assert space == _tiny_space() and hash(space) == hash(_tiny_space())
    supernet = space.supernet()
    assert _tiny_space().supernet() is supernet  # cached outside equality and hash
    dense_params = init_params(jax.random.key(0), TINY)
    tokens = jnp.asarray(supernet.calibration[:2, :12])  # the shapes of test_llm_elastic
    dense = space.decode(space.dense_genotype(), "bytes")
    assert count_params(dense) == count_params(dense_params) == space.costs(
        space.dense_genotype(), "bytes")["params"]  # fmt: skip
    np.testing.assert_allclose(
        forward(dense, tokens, TINY), forward(dense_params, tokens, TINY), rtol=1e-4, atol=1e-4
    )
    genotypes = np.asarray(
        [[1, 1, 0, 1, 0, 2, 3, 1, 1, 0], [0, 0, 1, 2, 1, 0, 0, 1, 2, 2]], np.int32
    )  # w32 with layer 1 dropped; w16 with layer 0 dropped
    nll = []
    for g in genotypes:
        small = space.decode(g, "bytes", context=10)
        assert count_params(small) == space.costs(g, "bytes")["params"] < count_params(dense)
        logits = forward(small, tokens, TINY)
        np.testing.assert_allclose(supernet.apply(g, tokens), logits, rtol=1e-4, atol=1e-4)
        log_p = jax.nn.log_softmax(logits[:, :10], axis=-1)
        nll.append(-float(jnp.mean(jnp.take_along_axis(log_p, tokens[:, 1:11, None], -1))))
    scores = supernet.apply_population(genotypes, tokens[:, :11])
    np.testing.assert_allclose(scores.nll, nll, rtol=1e-4)
    assert scores.kl is None


# ----------------------------------------------------------------- SmolLM2-135M
@pytest.mark.slow
def test_smollm2_space_decodes_a_smaller_model():
    space = LlamaElasticSpace(calibration=2, calibration_length=64)
    target = 0.75 * space.choices.dense_params
    g = elastic.uniform_genotype(space.choices, target)
    small = space.decode(g, "bytes")
    assert count_params(small) == space.costs(g, "bytes")["params"] <= target
    tokens = jnp.asarray(space.supernet().tokenizer.encode("def f(x):\n    return x")[None])
    logits = forward(small, tokens, space.config)
    assert logits.shape == (1, tokens.shape[1], 49152) and bool(jnp.all(jnp.isfinite(logits)))


def test_layers_keeps_a_prefix_of_the_blocks():
    space = _tiny_space(layers=1)
    assert space.config.n_layers == 1 and space.num_decisions == 4
    params = space.decode(space.dense_genotype())
    assert len(params["layers"]) == 1
    assert space.costs(space.dense_genotype())["params"] == count_params(params)
    with pytest.raises(NasjaxError) as error:
        _tiny_space(layers=TINY.n_layers + 1)
    assert "\n" not in str(error.value) and "layers" in str(error.value)
