"""Layer-wise one-shot compression, depth pruning, corpora and perplexity (nasjax.llm), on
a tiny random LLaMA; the real model only in the experiment's smoke run."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from nasjax.errors import NasjaxError
from nasjax.llm.corpus import (
    Corpus,
    calibration_corpus,
    calibration_windows,
    eval_windows,
    validation_corpus,
)
from nasjax.llm.evaluate import evaluate
from nasjax.llm.llama import (
    LINEAR_NAMES,
    LlamaConfig,
    block_taps,
    embed,
    forward,
    head,
    init_params,
)
from nasjax.llm.one_shot import (
    block_influence,
    compress_layerwise,
    drop_layers,
    layer,
    layers_to_drop,
    prune_compressor,
    quant_compressor,
)
from nasjax.llm.sparsity import accumulate, init_stats

CONFIG = LlamaConfig(
    vocab_size=61, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64
)


class ByteTokenizer:
    """Bytes as tokens (mod the tiny vocabulary): enough to exercise the corpora."""

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids: np.ndarray) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def tiny():
    return init_params(jax.random.key(0), CONFIG)


def _tokens(n, t, seed=1):
    return np.asarray(jax.random.randint(jax.random.key(seed), (n, t), 0, CONFIG.vocab_size))


def test_identity_compressor_keeps_the_model(tiny):
    calib = _tokens(3, 12)
    out = compress_layerwise(tiny, CONFIG, calib, lambda name, W, stats: W, batch_size=2)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(tiny), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_calibration_is_sequential_on_the_compressed_model(tiny):
    """Block 1's statistics are taken from block 0 *as compressed* (SparseGPT/Wanda's
    sequential order), and batching the calibration does not change them."""
    calib = _tokens(4, 10)
    seen = []

    def spy(name, W, stats):
        if name == "wq":
            seen.append(np.asarray(stats.xtx))
        return W * 0.5 if name == "w_down" else W

    out = compress_layerwise(tiny, CONFIG, calib, spy, batch_size=3)
    assert len(seen) == CONFIG.n_layers
    half = {**layer(tiny, 0), "w_down": layer(tiny, 0)["w_down"] * 0.5}
    x1 = block_taps(half, embed(tiny, jnp.asarray(calib)), CONFIG)[0]
    expected = accumulate(
        init_stats(CONFIG.dim), block_taps(layer(tiny, 1), x1, CONFIG)[1]["attn_in"]
    )
    np.testing.assert_allclose(seen[1], np.asarray(expected.xtx), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(
        np.asarray(out["layers"]["w_down"][1]), np.asarray(tiny["layers"]["w_down"][1]) * 0.5
    )


def test_data_free_methods_run_no_block_and_prune_exactly(tiny):
    out = compress_layerwise(tiny, CONFIG, None, prune_compressor("magnitude", "2:4"))
    for name in LINEAR_NAMES:
        w = np.asarray(out["layers"][name])
        groups = (w != 0).reshape(w.shape[0], -1, 4, w.shape[2])
        assert groups.sum(axis=2).max() <= 2, name
        assert np.mean(w == 0) == 0.5, name


@pytest.mark.parametrize(
    "make",
    [
        lambda: prune_compressor("wanda", "unstructured_0.5"),
        lambda: prune_compressor("sparsegpt", "4:8"),
        lambda: quant_compressor("gptq", "3_g16"),
    ],
)
def test_calibrated_methods_compress_every_linear(tiny, make):
    out = compress_layerwise(tiny, CONFIG, _tokens(2, 16), make())
    for name in LINEAR_NAMES:
        assert not np.array_equal(np.asarray(out["layers"][name]), np.asarray(tiny["layers"][name]))


def test_unknown_methods_are_one_line():
    with pytest.raises(NasjaxError, match="unknown pruning method 'obd'; valid choices"):
        prune_compressor("obd", "2:4")
    with pytest.raises(NasjaxError, match="unknown quantization method"):
        quant_compressor("awq", "4_g128")


def test_block_influence_ranks_a_do_nothing_block_lowest(tiny):
    layers = dict(tiny["layers"])
    for name in ("wo", "w_down"):  # block 1 adds nothing to the residual stream
        layers[name] = layers[name].at[1].set(0.0)
    params = {**tiny, "layers": layers}
    influence = block_influence(params, CONFIG, _tokens(4, 8), batch_size=2)
    assert influence.shape == (CONFIG.n_layers,)
    assert abs(influence[1]) < 1e-6 and influence.argmin() == 1
    assert layers_to_drop("block_influence", 1, influence, 3) == [1]
    assert layers_to_drop("last", 2, influence, 3) == [1, 2]
    with pytest.raises(NasjaxError, match="layers to drop must be in 0..2"):
        layers_to_drop("last", 3, influence, 3)
    with pytest.raises(NasjaxError, match="unknown depth rule"):
        layers_to_drop("random", 1, influence, 3)


def test_dropping_blocks_equals_running_the_kept_ones(tiny):
    smaller = drop_layers(tiny, [1])
    assert smaller["layers"]["wq"].shape[0] == 2
    tokens = jnp.asarray(_tokens(1, 6))
    x = embed(tiny, tokens)
    for i in (0, 2):
        x = block_taps(layer(tiny, i), x, CONFIG)[0]
    expected = forward(smaller, tokens, CONFIG)
    np.testing.assert_allclose(np.asarray(head(tiny, x, CONFIG)), np.asarray(expected), atol=1e-5)


def test_perplexity_is_the_mean_token_nll_and_batching_does_not_change_it(tiny):
    corpus = Corpus("the quick brown fox jumps over the lazy dog " * 4, "test", "")
    tok = ByteTokenizer()
    windows = eval_windows(tok, corpus, 16)
    assert windows.tokens.shape == (10, 17) and windows.target_bytes == 160
    windows = windows._replace(tokens=windows.tokens % CONFIG.vocab_size)
    logits = forward(tiny, jnp.asarray(windows.tokens[:, :-1]), CONFIG)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -np.take_along_axis(np.asarray(logp), windows.tokens[:, 1:, None], -1).sum()
    one = evaluate(tiny, CONFIG, windows, batch_size=1)
    three = evaluate(tiny, CONFIG, windows, batch_size=3)  # 10 windows: one padded batch
    assert one.tokens == three.tokens == 160
    assert one.ppl == pytest.approx(math.exp(nll / 160), rel=1e-5)
    assert three.ppl == pytest.approx(one.ppl, rel=1e-5)
    assert one.bits_per_byte == pytest.approx(nll / math.log(2) / 160, rel=1e-5)
    assert one.tokens_per_s > 0


def test_corpora_are_fixed_and_disjoint():
    valid, calib = validation_corpus(), calibration_corpus()
    assert valid.sha256 == validation_corpus().sha256 and "pydoc_data" in valid.source
    assert len(calib.text) > 100_000 and "docstrings" in calib.source
    assert valid.text[:200] not in calib.text
    tok = ByteTokenizer()
    a = calibration_windows(tok, calib, 5, 64)
    assert a.shape == (5, 64) and np.array_equal(a, calibration_windows(tok, calib, 5, 64))
    assert len({row.tobytes() for row in a}) == 5
    with pytest.raises(NasjaxError, match="calibration sequences must be in 1.."):
        calibration_windows(tok, calib, 0, 64)
    with pytest.raises(NasjaxError, match="no window of"):
        eval_windows(tok, Corpus("short", "tiny text", ""), 64)


@pytest.mark.slow
def test_llm_compress_smoke_and_resume(llm_checkpoint, tmp_path):
    """The sweep on the real model's first 2 blocks: results.json's layout, the methods'
    expected ordering at this tiny size (calibrated beats magnitude), and --resume."""
    script = load_experiment("llm_compress")
    out = tmp_path / "run"
    results = script.run(script.parse_args(["--smoke", "--out", str(out)]))
    assert set(results) >= {"dense", "prune", "quant", "depth", "wall_s"}
    assert set(results["dense"]) >= {"ppl", "params", "tokens"}
    assert set(results["prune"]) == {"magnitude", "wanda", "sparsegpt"}
    for by in results["prune"].values():
        assert set(by) == {"unstructured_0.5", "2:4"}
        for r in by.values():
            assert set(r) >= {"ppl", "sparsity", "seconds"} and r["sparsity"] == pytest.approx(
                0.5, abs=1e-4
            )
    assert set(results["quant"]) == {"rtn", "gptq"}
    assert set(results["quant"]["gptq"]["3_g128"]) >= {"ppl", "bytes", "seconds"}
    assert set(results["depth"]) == {"block_influence", "last"}
    assert set(results["depth"]["last"]["1"]) >= {"ppl", "params"}
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["dense"] == results["dense"]
    for name in ("results.md", "ppl_vs_sparsity.png", "ppl_vs_bits.png"):
        assert (out / name).stat().st_size > 0
    lines = (out / "results.jsonl").read_text().splitlines()
    again = script.run(script.parse_args(["--smoke", "--out", str(out), "--resume"]))
    assert (out / "results.jsonl").read_text().splitlines() == lines  # nothing recomputed
    assert again["prune"] == results["prune"]
    with pytest.raises(NasjaxError, match="different flags"):
        script.run(script.parse_args(["--smoke", "--out", str(out), "--resume", "--act-order"]))
