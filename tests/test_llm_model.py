"""nasjax.llm.llama / gguf_file / tokenizer: the pure-functional LLaMA on a tiny random
config (KV cache = forward, block composition = forward, bf16 ~ f32, dropping a layer =
slicing), GGUF loading and its one-line errors, and SmolLM2-135M against Hugging Face
``transformers`` (tokenizer ids, logits, cached generation)."""

import dataclasses

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.llm import gguf_file, llama
from nasjax.llm.gguf_file import load_llama
from nasjax.llm.tokenizer import PRE_TOKENIZERS, LlamaTokenizer, byte_alphabet

CONFIG = llama.LlamaConfig(
    vocab_size=97,
    dim=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=8,
    ffn_dim=48,
    rope_base=10000.0,
    norm_eps=1e-5,
    max_context=64,
)
Q8_0 = gguf.GGMLQuantizationType.Q8_0


@pytest.fixture(scope="module")
def tiny():
    params = jax.jit(llama.init_params, static_argnums=1)(jax.random.key(0), CONFIG)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, CONFIG.vocab_size, jnp.int32)
    return params, tokens


def _layer(params, i):
    return jax.tree.map(lambda a: a[i], params["layers"])


def _one_line(error):
    assert "\n" not in str(error.value), str(error.value)


# --- the model on a tiny random config -------------------------------------------------


def test_forward_shapes_and_param_count(tiny):
    params, tokens = tiny
    logits = llama.forward(params, tokens, CONFIG)
    assert logits.shape == (2, 12, CONFIG.vocab_size) and logits.dtype == jnp.float32
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 48 + 2 * 32
    assert llama.count_params(params) == 97 * 32 + 32 + 2 * per_layer
    assert llama.n_layers(params) == 2


def test_causal(tiny):
    params, tokens = tiny
    changed = tokens.at[:, 7:].set((tokens[:, 7:] + 1) % CONFIG.vocab_size)
    a, b = llama.forward(params, tokens, CONFIG), llama.forward(params, changed, CONFIG)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_generate_equals_forward(tiny):
    params, tokens = tiny
    out, logits = llama.generate(params, tokens[:, :5], 7, CONFIG, return_logits=True)
    assert out.shape == (2, 12) and out.dtype == jnp.int32 and logits.shape == (2, 7, 97)
    np.testing.assert_array_equal(out[:, :5], tokens[:, :5])
    np.testing.assert_array_equal(out[:, 5:], jnp.argmax(logits, -1))
    full = llama.forward(params, out, CONFIG)
    np.testing.assert_allclose(logits, full[:, 4:11], atol=1e-5, rtol=0)


def test_prefill_in_chunks_and_decode_steps_equal_forward(tiny):
    params, tokens = tiny
    full = llama.forward(params, tokens, CONFIG)
    cache = llama.init_cache(CONFIG, 2, 2, 12)
    first, cache = llama.prefill(params, cache, tokens[:, :4], CONFIG)
    second, cache = llama.prefill(params, cache, tokens[:, 4:8], CONFIG, start=4)
    steps = []
    for position in range(8, 12):
        logits, cache = llama.decode_step(params, cache, tokens[:, position], position, CONFIG)
        steps.append(logits)
    cached = jnp.concatenate([first, second, jnp.stack(steps, 1)], axis=1)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)


def test_a_list_of_differently_shaped_blocks_runs_forward_cache_and_generate(tiny):
    """A structurally pruned model (``params["layers"]`` a list of blocks of different
    shapes): the list of the stack's own blocks gives the stack's logits, and a block with
    fewer heads / FFN channels runs forward, prefill + decode and generate consistently."""
    params, tokens = tiny
    as_list = {**params, "layers": [_layer(params, i) for i in range(2)]}
    np.testing.assert_allclose(
        llama.forward(as_list, tokens, CONFIG), llama.forward(params, tokens, CONFIG), atol=1e-5
    )
    narrow = dict(as_list["layers"][1])  # one KV group (2 query heads) and 16 FFN channels
    narrow.update(
        wq=narrow["wq"][:, :16], wk=narrow["wk"][:, :8], wv=narrow["wv"][:, :8],
        wo=narrow["wo"][:16], w_gate=narrow["w_gate"][:, :16], w_up=narrow["w_up"][:, :16],
        w_down=narrow["w_down"][:16],
    )  # fmt: skip
    pruned = {**params, "layers": [as_list["layers"][0], narrow]}
    assert llama.n_layers(pruned) == 2
    full = llama.forward(pruned, tokens, CONFIG)
    cache = llama.cache_for(pruned, CONFIG, 2, 12)
    assert [k.shape for k in cache["k"]] == [(2, 12, 2, 8), (2, 12, 1, 8)]
    first, cache = llama.prefill(pruned, cache, tokens[:, :8], CONFIG)
    last, cache = llama.decode_step(pruned, cache, tokens[:, 8], 8, CONFIG)
    np.testing.assert_allclose(first, full[:, :8], atol=1e-5, rtol=0)
    np.testing.assert_allclose(last, full[:, 8], atol=1e-5, rtol=0)
    out, logits = llama.generate(pruned, tokens[:, :5], 4, CONFIG, return_logits=True)
    np.testing.assert_allclose(logits, llama.forward(pruned, out, CONFIG)[:, 4:8], atol=1e-5)


@jax.jit
def _compose(params, tokens):
    """The model run block by block, with what each tap should equal recomputed from the
    block's own weights; one compiled program (eager op-by-op dispatch is slow here)."""
    x, checks = llama.embed(params, tokens), []
    for i in range(CONFIG.n_layers):
        layer = _layer(params, i)
        y, taps = llama.block_taps(layer, x, CONFIG)
        mid = x + taps["attn_out"] @ layer["wo"]
        ffn_in = taps["ffn_in"]
        expected = {
            "block": y,
            "attn_in": llama.rms_norm(x, layer["attn_norm"], CONFIG.norm_eps),
            "ffn_in": llama.rms_norm(mid, layer["ffn_norm"], CONFIG.norm_eps),
            "ffn_hidden": jax.nn.silu(ffn_in @ layer["w_gate"]) * (ffn_in @ layer["w_up"]),
            "y": mid + taps["ffn_hidden"] @ layer["w_down"],
        }
        checks.append((y, llama.block(layer, x, CONFIG), taps, expected))
        x = y
    return llama.head(params, x, CONFIG), checks


def test_blocks_compose_to_forward_and_taps_feed_the_linears(tiny):
    params, tokens = tiny
    logits, checks = _compose(params, tokens)
    np.testing.assert_allclose(logits, llama.forward(params, tokens, CONFIG), atol=1e-5, rtol=0)
    for i, (y, y_block, taps, expected) in enumerate(checks):
        layer = _layer(params, i)
        np.testing.assert_array_equal(y, y_block)
        for name in llama.LINEAR_NAMES:  # every linear's input is a tap of the right width
            assert taps[llama.LINEAR_INPUT[name]].shape[-1] == layer[name].shape[0]
        for name in ("attn_in", "ffn_in", "ffn_hidden"):
            np.testing.assert_allclose(taps[name], expected[name], atol=1e-5)
        np.testing.assert_allclose(y, expected["y"], atol=1e-5)


def test_bf16_close_to_f32(tiny):
    params, tokens = tiny
    f32 = llama.forward(params, tokens, CONFIG)
    bf16 = llama.forward(params, tokens, CONFIG, jnp.bfloat16)
    assert bf16.dtype == jnp.float32
    error = float(jnp.max(jnp.abs(bf16 - f32)) / jnp.max(jnp.abs(f32)))
    assert 0 < error < 0.03, f"bf16 vs f32: max |dlogit| / max |logit| = {error:.4f}"
    out = llama.generate(params, tokens[:, :5], 3, CONFIG, jnp.bfloat16)
    assert out.shape == (2, 8)


def test_dropping_a_layer_is_slicing(tiny):
    params, tokens = tiny
    dropped = {**params, "layers": jax.tree.map(lambda a: a[1:], params["layers"])}
    assert llama.n_layers(dropped) == 1
    one_block = lambda p, t: llama.head(
        p, llama.block(_layer(p, 1), llama.embed(p, t), CONFIG), CONFIG
    )
    expected = jax.jit(one_block)(params, tokens)
    np.testing.assert_allclose(llama.forward(dropped, tokens, CONFIG), expected, atol=1e-5)
    out, logits = llama.generate(dropped, tokens[:, :5], 4, CONFIG, return_logits=True)
    full = llama.forward(dropped, out, CONFIG)
    np.testing.assert_allclose(logits, full[:, 4:8], atol=1e-5, rtol=0)


def test_untied_head(tiny):
    params, tokens = tiny
    untied = {**params, "lm_head": params["embed"].T}
    np.testing.assert_allclose(
        llama.forward(untied, tokens, CONFIG), llama.forward(params, tokens, CONFIG), atol=1e-5
    )
    untied = jax.eval_shape(lambda k: llama.init_params(k, CONFIG, tied=False), jax.random.key(2))
    assert untied["lm_head"].shape == (CONFIG.dim, CONFIG.vocab_size)


def test_bad_config_and_too_long_generation(tiny):
    with pytest.raises(NasjaxError, match="multiple of n_kv_heads") as error:
        llama.LlamaConfig(97, 32, 2, n_heads=3, n_kv_heads=2, head_dim=8, ffn_dim=48)
    _one_line(error)
    params, tokens = tiny
    with pytest.raises(NasjaxError, match="max_context 64"):
        llama.generate(params, tokens, 60, CONFIG)


# --- GGUF files written here: round trip and loading errors ----------------------------


def _write_gguf(path, params, arch="llama"):
    """A tiny GGUF laid out as llama.cpp writes LLaMA models (weights [out, in]); wq in Q8_0."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in {
        "block_count": CONFIG.n_layers,
        "context_length": CONFIG.max_context,
        "embedding_length": CONFIG.dim,
        "feed_forward_length": CONFIG.ffn_dim,
        "attention.head_count": CONFIG.n_heads,
        "attention.head_count_kv": CONFIG.n_kv_heads,
    }.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", CONFIG.rope_base)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", CONFIG.norm_eps)
    spelling = byte_alphabet()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(["<|endoftext|>"] + [spelling[b] for b in range(96)])
    writer.add_token_types([3] + [1] * 96)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    np_params = jax.tree.map(np.asarray, params)
    writer.add_tensor("token_embd.weight", np_params["embed"])
    writer.add_tensor("output_norm.weight", np_params["final_norm"])
    names = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm", **gguf_file._LINEARS}
    for i in range(CONFIG.n_layers):
        for ours, theirs in names.items():
            w = np_params["layers"][ours][i]
            w = np.ascontiguousarray(w.T) if w.ndim == 2 else w
            if ours == "wq":
                q8 = gguf.quants.quantize(w, Q8_0)
                writer.add_tensor(f"blk.{i}.{theirs}.weight", q8, raw_dtype=Q8_0)
            else:
                writer.add_tensor(f"blk.{i}.{theirs}.weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_round_trip(tiny, tmp_path):
    params, tokens = tiny
    checkpoint = load_llama(_write_gguf(tmp_path / "tiny.gguf", params))
    assert checkpoint.config == dataclasses.replace(CONFIG, norm_eps=float(np.float32(1e-5)))
    assert checkpoint.source.endswith("tiny.gguf")
    loaded = checkpoint.params
    for name in ("embed", "final_norm"):
        np.testing.assert_array_equal(loaded[name], params[name])
    for name, value in params["layers"].items():
        if name == "wq":  # Q8_0 in the file: the dequantized grid
            rows = np.asarray(value).transpose(0, 2, 1)
            grid = gguf.quants.dequantize(gguf.quants.quantize(rows, Q8_0), Q8_0)
            np.testing.assert_array_equal(loaded["layers"][name], grid.transpose(0, 2, 1))
        else:
            np.testing.assert_array_equal(loaded["layers"][name], value)
    assert checkpoint.tokenizer.vocab_size == 97
    assert list(checkpoint.tokenizer.encode("<|endoftext|>AB")) == [0, 1 + 0x41, 1 + 0x42]


def test_loading_errors_are_one_line(tiny, tmp_path):
    params, _ = tiny
    good = _write_gguf(tmp_path / "good.gguf", params).read_bytes()
    cases = {
        "missing.gguf": (None, "model file not found"),
        "empty.gguf": (b"", "not a GGUF file"),
        "text.gguf": (b"hello, not a model\n" * 10, "not a GGUF file"),
        "header.gguf": (good[:200], "truncated or corrupted GGUF"),
        "data.gguf": (good[:-100], "truncated GGUF file: tensor"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(NasjaxError, match=message) as error:
            load_llama(tmp_path / name)
        _one_line(error)
    path = _write_gguf(tmp_path / "gpt2.gguf", params, arch="gpt2")
    with pytest.raises(NasjaxError, match="'gpt2' is not LLaMA-family; valid choices: llama"):
        load_llama(path)


def test_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(gguf_file, "PACKAGE", "nasjax_no_such_package")
    monkeypatch.setattr(gguf_file, "DISTRIBUTION", "nasjax-no-such-package")
    with pytest.raises(NasjaxError, match="not installed.*make install.*--no-deps") as error:
        gguf_file.default_model_path()
    _one_line(error)


def test_unknown_pre_tokenizer():
    with pytest.raises(NasjaxError, match="tokenizer.ggml.pre 'nope'; valid choices") as error:
        LlamaTokenizer(["a"], [], None, 0, 0, pre="nope")
    _one_line(error)
    assert "smollm" in PRE_TOKENIZERS


# --- SmolLM2-135M, the real model ------------------------------------------------------


def _pydoc_text():
    from pydoc_data.topics import topics

    return "\n".join(topics[name] for name in sorted(topics))


def test_real_config_and_tokenizer_round_trip(llm_checkpoint):
    config, params, tokenizer, source = llm_checkpoint
    assert source.endswith(gguf_file.MODEL_FILE)
    assert (config.n_layers, config.dim, config.n_heads, config.n_kv_heads) == (30, 576, 9, 3)
    assert (config.head_dim, config.ffn_dim, config.vocab_size) == (64, 1536, 49152)
    assert config.rope_base == 1e5 and config.norm_eps == float(np.float32(1e-5))
    assert config.max_context == 8192 and "lm_head" not in params
    assert llama.count_params(params) == 134_515_008
    text = _pydoc_text()[:20000]
    assert tokenizer.decode(tokenizer.encode(text)) == text
    chat = "<|im_start|>user\nHi  12 café 😀<|im_end|>"
    ids = tokenizer.encode(chat)
    assert ids.dtype == np.int32 and ids[0] == 1 and ids[-1] == 2
    assert tokenizer.decode(ids) == chat
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size) == (1, 2, 49152)


@pytest.mark.slow
def test_tokenizer_matches_transformers(llm_checkpoint):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    path = gguf_file.default_model_path()
    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = llm_checkpoint.tokenizer
    text = _pydoc_text()[:65536]
    # transformers rebuilds "smollm" as plain GPT-2 ByteLevel: same ids as ours with that
    # pre-tokenizer (vocabulary, merges, special tokens all equal)...
    expected = theirs(text, add_special_tokens=False)["input_ids"]
    assert ours.with_pre_tokenizer("gpt2").encode(text).tolist() == expected
    # ...while the file's "smollm" (llama.cpp; SmolLM2's own tokenizer.json) also splits
    # digits: equal to transformers' tokenizer given that digit split.
    backend = theirs.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer]
    )
    assert ours.encode(text).tolist() == backend.encode(text, add_special_tokens=False).ids
    assert ours.token(ours.encode("x  1")[1]) == "ĠĠ"  # where the two differ


def _transformers_model(path):
    """transformers' LlamaForCausalLM with the weights read, dequantized and Q/K-unpermuted by
    transformers' own GGUF loader. ``from_pretrained(gguf_file=...)`` runs the same loader
    but requires ``accelerate`` (not in the bench requirements) and reads the file twice;
    the config is the file's, as pinned in ``test_real_config_and_tokenizer_round_trip``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    torch.set_num_threads(2)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=float(np.float32(1e-5)),
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
        tie_word_embeddings=True,
    )
    with no_init_weights():  # every weight is overwritten below
        model = LlamaForCausalLM(config).to(torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    missing, unexpected = model.load_state_dict(tensors["tensors"], strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied to the embedding
    model.tie_weights()
    return model.eval()


@pytest.mark.slow
def test_logits_match_transformers(llm_checkpoint):
    import torch

    config, params, tokenizer, source = llm_checkpoint
    window = tokenizer.encode(_pydoc_text())[4096 : 4096 + 512]
    assert window.shape == (512,)
    ours = np.asarray(llama.forward(params, jnp.asarray(window)[None], config))[0]
    model = _transformers_model(gguf_file.Path(source))
    with torch.no_grad():
        theirs = model(torch.as_tensor(window, dtype=torch.long)[None]).logits[0].numpy()
    delta = float(np.abs(ours - theirs).max())
    agree = float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))
    report = f"max |dlogit| = {delta:.2e}, top-1 agreement = {agree:.2%} over 512 tokens"
    assert delta <= 1e-3 and agree >= 0.999, report
    print(report)


@pytest.mark.slow
def test_cached_generation_equals_forward_on_the_real_model(llm_checkpoint):
    config, params, tokenizer, _ = llm_checkpoint
    prompt = tokenizer.encode(_pydoc_text()[:2000])[:24][None]
    out, logits = llama.generate(params, jnp.asarray(prompt), 8, config, return_logits=True)
    full = llama.forward(params, out, config)[:, 23:31]
    delta = float(jnp.max(jnp.abs(logits - full)))
    np.testing.assert_array_equal(jnp.argmax(full, -1), out[:, 24:])
    assert delta <= 1e-3, f"cached vs full forward: max |dlogit| = {delta:.2e}"


def test_truncated_copy_of_the_real_file(llm_checkpoint, tmp_path):
    source = gguf_file.Path(llm_checkpoint.source)
    cut = tmp_path / "cut.gguf"
    with open(source, "rb") as handle:  # the header and half of the tensor data
        cut.write_bytes(handle.read(source.stat().st_size // 2))
    with pytest.raises(NasjaxError, match="truncated GGUF file: tensor") as error:
        load_llama(cut)
    _one_line(error)
