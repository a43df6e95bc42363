"""A pure-functional LLaMA (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation
Language Models") in JAX: pre-RMSNorm blocks, rotary position embedding (Su et al. 2021,
RoFormer), grouped-query attention (Ainslie et al. 2023, GQA) and a SwiGLU feed-forward
(Shazeer 2020).

Params are a plain pytree of stacked per-layer arrays, every matrix laid out ``[in, out]``
so that ``y = x @ W``::

    {"embed": [V, D], "final_norm": [D],
     "layers": {"attn_norm": [L, D], "wq": [L, D, H*hd], "wk": [L, D, KV*hd],
                "wv": [L, D, KV*hd], "wo": [L, H*hd, D], "ffn_norm": [L, D],
                "w_gate": [L, D, F], "w_up": [L, D, F], "w_down": [L, F, D]},
     "lm_head": [D, V]}            # only when the checkpoint does not tie it to "embed"

The layer count and head counts are read from the array shapes, not from the config, so
dropping layers is slicing the stack (``tree.map(lambda a: a[keep], params["layers"])``).
``params["layers"]`` may also be a **list** of per-block dicts (leaves without the L
axis) whose shapes differ from block to block: a structurally pruned model (fewer heads,
FFN channels or a narrower residual stream in some blocks, :mod:`nasjax.llm.elastic`).
Such a model runs its blocks one after another instead of under ``lax.scan``; every
function here takes either layout.

RoPE rotates *adjacent* pairs ``(2i, 2i+1)`` of each head by ``position * base**(-2i/hd)``,
the layout of llama.cpp's GGUF files (see :mod:`nasjax.llm.gguf_file`).

One implementation: :func:`forward` is ``embed`` -> ``lax.scan`` of :func:`block` ->
:func:`head`; :func:`block` is :func:`block_taps` without its taps; the KV-cache paths
(:func:`prefill`, :func:`decode_step`, :func:`generate`) run the same layer with a cache.
``dtype`` is the compute dtype of the matmuls (``jnp.float32`` or ``jnp.bfloat16``); the
residual stream, norms, RoPE and softmax stay in float32 and matmuls accumulate in float32.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nasjax.errors import NasjaxError, check_positive

Params = dict[str, Any]
"""The model's params pytree (layout in the module docstring)."""
Layer = dict[str, jax.Array]
"""One block's params: ``params["layers"]`` without the leading L axis."""
Cache = dict[str, Any]
"""A KV cache: ``{"k", "v"}`` of ``[L, B, S, KV, hd]``, or for a list of blocks, lists of
per-block ``[B, S, KV_l, hd]``."""
DType = Any
"""A JAX dtype such as ``jnp.float32`` or ``jnp.bfloat16``."""

LINEAR_NAMES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
"""The linear layers of a block, in the order the block applies them."""

LINEAR_INPUT = {
    "wq": "attn_in",
    "wk": "attn_in",
    "wv": "attn_in",
    "wo": "attn_out",
    "w_gate": "ffn_in",
    "w_up": "ffn_in",
    "w_down": "ffn_hidden",
}
"""Which tap of :func:`block_taps` feeds each linear (its calibration input)."""


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shapes and constants of a LLaMA model (hashable: a static ``jit`` argument).

    ``n_layers`` and the head counts describe the checkpoint as loaded; the forward pass
    takes the layer count from the params, so a sliced model keeps this config.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    max_context: int = 2048

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads or self.head_dim % 2:
            raise NasjaxError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                f"({self.n_kv_heads}) and head_dim ({self.head_dim}) even"
            )


class Widths(NamedTuple):
    """0/1 float masks that run a narrower model inside full-size weights (structured
    pruning without slicing, :mod:`nasjax.llm.elastic`): residual ``channels [D]``, query
    ``heads [H]`` and FFN channels ``ffn [F]`` kept. With them a block computes exactly what
    the sliced block computes, on zeros."""

    channels: jax.Array
    heads: jax.Array
    ffn: jax.Array


def rms_norm(
    x: jax.Array, weight: jax.Array, eps: float, channels: jax.Array | None = None
) -> jax.Array:
    """RMSNorm (Zhang & Sennrich 2019) in float32; with a 0/1 ``channels`` mask, the mean
    is over the kept channels only (the norm of the sliced model)."""
    x = x.astype(jnp.float32)
    if channels is None:
        mean = jnp.mean(x * x, axis=-1, keepdims=True)
    else:
        mean = jnp.sum(x * x * channels, axis=-1, keepdims=True) / jnp.sum(channels)
    return x * lax.rsqrt(mean + eps) * weight.astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotates adjacent pairs of ``x[..., T, heads, hd]`` by their position's angles."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (base ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    angle = positions.astype(jnp.float32)[:, None] * inv_freq  # [T, hd/2]
    cos, sin = jnp.cos(angle)[:, None, :], jnp.sin(angle)[:, None, :]
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], hd // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    return jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(x.shape)


def linear(x: jax.Array, w: jax.Array, dtype: DType) -> jax.Array:
    """``x @ w`` in ``dtype``, accumulated in float32."""
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_pos: jax.Array,
    k_pos: jax.Array,
    dtype: DType = jnp.float32,
) -> jax.Array:
    """Causal grouped-query attention: query head ``h`` reads KV head ``h // (H // KV)``.

    Args:
      q: ``[B, T, H, hd]``; k, v: ``[B, S, KV, hd]``.
      q_pos: ``int[T]`` query positions; k_pos: ``int[S]`` key positions (a key is seen by
        every query at the same or a later position).
      dtype: the dtype of the two matmuls (softmax in float32).

    Returns:
      ``float32[B, T, H * hd]``.
    """
    b, t, h, hd = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, hd).astype(dtype)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(dtype), preferred_element_type=jnp.float32)
    mask = k_pos[None, :] <= q_pos[:, None]
    scores = jnp.where(mask, scores * hd**-0.5, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    v = v.astype(dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h * hd)


def _layer(
    layer: Layer,
    x: jax.Array,
    config: LlamaConfig,
    positions: jax.Array,
    dtype: DType,
    cache: tuple[jax.Array, jax.Array] | None = None,
    widths: Widths | None = None,
) -> tuple[jax.Array, dict[str, jax.Array], tuple[jax.Array, jax.Array] | None]:
    """One block; returns ``(x, taps, cache)``. With a cache ``(k, v)`` of ``[B, S, KV, hd]``,
    the new keys/values are written at ``positions`` (contiguous) and all S are attended.
    ``widths`` masks run the narrower block inside these weights."""
    b, t, _ = x.shape
    hd = config.head_dim
    channels = None if widths is None else widths.channels
    attn_in = rms_norm(x, layer["attn_norm"], config.norm_eps, channels).astype(dtype)
    q = linear(attn_in, layer["wq"], dtype).reshape(b, t, -1, hd)
    k = linear(attn_in, layer["wk"], dtype).reshape(b, t, -1, hd)
    v = linear(attn_in, layer["wv"], dtype).reshape(b, t, -1, hd)
    q, k = rope(q, positions, config.rope_base), rope(k, positions, config.rope_base)
    if cache is None:
        keys, values, key_pos = k, v, positions
    else:
        start = (0, positions[0], 0, 0)
        keys = lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start)
        values = lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start)
        cache, key_pos = (keys, values), jnp.arange(keys.shape[1])
    attn_out = attention(q, keys, values, positions, key_pos, dtype)
    if widths is not None:
        attn_out = attn_out * jnp.repeat(widths.heads, hd)
    attn_out = attn_out.astype(dtype)
    x = x + _masked(linear(attn_out, layer["wo"], dtype), channels)
    ffn_in = rms_norm(x, layer["ffn_norm"], config.norm_eps, channels).astype(dtype)
    gate, up = linear(ffn_in, layer["w_gate"], dtype), linear(ffn_in, layer["w_up"], dtype)
    ffn_hidden = _masked(jax.nn.silu(gate) * up, None if widths is None else widths.ffn)
    ffn_hidden = ffn_hidden.astype(dtype)
    x = x + _masked(linear(ffn_hidden, layer["w_down"], dtype), channels)
    taps = {"attn_in": attn_in, "attn_out": attn_out, "ffn_in": ffn_in, "ffn_hidden": ffn_hidden}
    return x, taps, cache


def _masked(y: jax.Array, mask: jax.Array | None) -> jax.Array:
    return y if mask is None else y * mask


def _positions(x: jax.Array, positions: jax.Array | None) -> jax.Array:
    return jnp.arange(x.shape[1]) if positions is None else jnp.asarray(positions)


def block_taps(
    layer: Layer,
    x: jax.Array,
    config: LlamaConfig,
    positions: jax.Array | None = None,
    dtype: DType = jnp.float32,
    widths: Widths | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One block (``layer``: leaves without the L axis) on ``float32[B, T, D]``.

    Returns:
      ``(y, taps)``: the block's output, and the inputs of its linears keyed by
      ``LINEAR_INPUT``'s values (``attn_in``, ``attn_out``, ``ffn_in``, ``ffn_hidden``), in
      the compute dtype, ``[B, T, D]`` or ``[B, T, H*hd]`` or ``[B, T, F]``.
    """
    y, taps, _ = _layer(layer, x, config, _positions(x, positions), dtype, widths=widths)
    return y, taps


def block(
    layer: Layer,
    x: jax.Array,
    config: LlamaConfig,
    positions: jax.Array | None = None,
    dtype: DType = jnp.float32,
    widths: Widths | None = None,
) -> jax.Array:
    """One block without its taps; ``positions`` defaults to ``0..T-1``; ``widths`` runs
    the narrower block inside these weights (:class:`Widths`)."""
    return block_taps(layer, x, config, positions, dtype, widths)[0]


def embed(params: Params, tokens: jax.Array) -> jax.Array:
    """Token embeddings, ``float32[B, T, D]``."""
    return params["embed"][tokens].astype(jnp.float32)


def head(
    params: Params,
    x: jax.Array,
    config: LlamaConfig,
    dtype: DType = jnp.float32,
    channels: jax.Array | None = None,
) -> jax.Array:
    """Final RMSNorm and the LM head (the embedding, transposed, when tied): float32 logits.
    ``channels``: the 0/1 mask of kept residual channels (:class:`Widths`)."""
    h = rms_norm(x, params["final_norm"], config.norm_eps, channels).astype(dtype)
    if "lm_head" in params:
        return linear(h, params["lm_head"], dtype)
    table = params["embed"].astype(dtype)
    return jnp.einsum("...d,vd->...v", h, table, preferred_element_type=jnp.float32)


def n_layers(params: Params) -> int:
    """The number of blocks in ``params`` (the length of the stacks or of the list)."""
    layers = params["layers"]
    return len(layers) if isinstance(layers, (list, tuple)) else layers["attn_norm"].shape[0]


def _run_blocks(
    params: Params,
    x: jax.Array,
    config: LlamaConfig,
    positions: jax.Array,
    dtype: DType,
    cache: Cache | None = None,
) -> tuple[jax.Array, Cache | None]:
    """Every block of ``params`` in order (a scan over stacks, a loop over a list)."""
    layers = params["layers"]
    if isinstance(layers, (list, tuple)):
        keys, values = [], []
        for i, layer in enumerate(layers):
            kv = None if cache is None else (cache["k"][i], cache["v"][i])
            x, _, kv = _layer(layer, x, config, positions, dtype, kv)
            if kv is not None:
                keys.append(kv[0])
                values.append(kv[1])
        return x, None if cache is None else {"k": keys, "v": values}
    if cache is None:

        def body(x: jax.Array, layer: Layer) -> tuple[jax.Array, None]:
            return _layer(layer, x, config, positions, dtype)[0], None

        return lax.scan(body, x, layers)[0], None

    def cached_body(x: jax.Array, inputs: tuple) -> tuple[jax.Array, tuple]:
        layer, k, v = inputs
        x, _, kv = _layer(layer, x, config, positions, dtype, (k, v))
        return x, kv

    x, (k, v) = lax.scan(cached_body, x, (layers, cache["k"], cache["v"]))
    return x, {"k": k, "v": v}


@partial(jax.jit, static_argnames=("config", "dtype"))
def forward(
    params: Params, tokens: jax.Array, config: LlamaConfig, dtype: DType = jnp.float32
) -> jax.Array:
    """Causal LM logits ``float32[B, T, V]`` of ``int32[B, T]`` tokens at positions 0..T-1."""
    x, _ = _run_blocks(params, embed(params, tokens), config, jnp.arange(tokens.shape[1]), dtype)
    return head(params, x, config, dtype)


def init_cache(
    config: LlamaConfig, n_layers: int, batch: int, max_len: int, dtype: DType = jnp.float32
) -> Cache:
    """An empty KV cache: ``{"k", "v"}`` of ``[n_layers, batch, max_len, KV, hd]``."""
    shape = (n_layers, batch, max_len, config.n_kv_heads, config.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def cache_for(
    params: Params, config: LlamaConfig, batch: int, max_len: int, dtype: DType = jnp.float32
) -> Cache:
    """An empty KV cache shaped for ``params``: :func:`init_cache` for stacked blocks, and for
    a list of blocks one ``[batch, max_len, KV_l, hd]`` pair per block (``KV_l`` read from
    the block's ``wk``)."""
    layers = params["layers"]
    if not isinstance(layers, (list, tuple)):
        return init_cache(config, n_layers(params), batch, max_len, dtype)
    shapes = [
        (batch, max_len, ly["wk"].shape[-1] // config.head_dim, config.head_dim) for ly in layers
    ]
    return {"k": [jnp.zeros(s, dtype) for s in shapes], "v": [jnp.zeros(s, dtype) for s in shapes]}


def _cached(
    params: Params,
    cache: Cache,
    tokens: jax.Array,
    start: jax.Array | int,
    config: LlamaConfig,
    dtype: DType,
    last_only: bool = False,
) -> tuple[jax.Array, Cache]:
    positions = start + jnp.arange(tokens.shape[1])
    x, cache = _run_blocks(params, embed(params, tokens), config, positions, dtype, cache)
    return head(params, x[:, -1:] if last_only else x, config, dtype), cache


@partial(jax.jit, static_argnames=("config", "dtype"))
def prefill(
    params: Params,
    cache: Cache,
    tokens: jax.Array,
    config: LlamaConfig,
    start: jax.Array | int = 0,
    dtype: DType = jnp.float32,
) -> tuple[jax.Array, Cache]:
    """Runs ``int32[B, T]`` tokens at positions ``start..start+T-1`` into the cache, which
    must hold them (``start + T <= max_len``; XLA clamps an update that would not fit).

    Returns:
      ``(logits float32[B, T, V], cache)``.
    """
    return _cached(params, cache, tokens, start, config, dtype)


@partial(jax.jit, static_argnames=("config", "dtype"))
def decode_step(
    params: Params,
    cache: Cache,
    tokens: jax.Array,
    position: jax.Array | int,
    config: LlamaConfig,
    dtype: DType = jnp.float32,
) -> tuple[jax.Array, Cache]:
    """One token per row (``int32[B]``) at ``position`` (``< max_len`` of the cache):
    ``(logits float32[B, V], cache)``."""
    logits, cache = _cached(params, cache, tokens[:, None], position, config, dtype)
    return logits[:, 0], cache


@partial(jax.jit, static_argnames=("steps", "config", "dtype", "return_logits"))
def generate(
    params: Params,
    prompt: jax.Array,
    steps: int,
    config: LlamaConfig,
    dtype: DType = jnp.float32,
    return_logits: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Greedy decoding with a KV cache: one prefill, then ``steps - 1`` cached steps (a scan).

    Args:
      prompt: ``int32[B, T0]``.
      steps: tokens to generate (static).
      return_logits: also return the logits each generated token was chosen from.

    Returns:
      ``int32[B, T0 + steps]`` (prompt then generated tokens), and with ``return_logits``
      also ``float32[B, steps, V]``, whose step ``i`` equals ``forward(tokens)[:, T0-1+i]``.
    """
    batch, t0 = prompt.shape
    check_positive(steps=steps)
    if t0 + steps > config.max_context:
        raise NasjaxError(f"prompt + steps = {t0 + steps} exceeds max_context {config.max_context}")
    cache = cache_for(params, config, batch, t0 + steps, dtype)
    logits, cache = _cached(params, cache, prompt, 0, config, dtype, last_only=True)
    first = logits[:, -1]

    def step(carry: tuple, position: jax.Array) -> tuple[tuple, tuple]:
        cache, logits = carry
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        new, cache = _cached(params, cache, token[:, None], position, config, dtype)
        return (cache, new[:, 0]), (token, logits)

    positions = t0 + jnp.arange(steps - 1)
    (_, last), (tokens, chosen) = lax.scan(step, (cache, first), positions)
    tokens = jnp.concatenate([tokens, jnp.argmax(last, axis=-1).astype(jnp.int32)[None]])
    chosen = jnp.concatenate([chosen, last[None]])
    out = jnp.concatenate([prompt.astype(jnp.int32), tokens.T], axis=1)
    return (out, jnp.swapaxes(chosen, 0, 1)) if return_logits else out


def init_params(key: jax.Array, config: LlamaConfig, tied: bool = True) -> Params:
    """Random params of ``config``'s shapes (for tests and toy models): weights
    ``N(0, 1/fan_in)``, norms ``1 + N(0, 0.1)``, embedding ``N(0, 1)``; float32."""
    d, f, hd, n_l = config.dim, config.ffn_dim, config.head_dim, config.n_layers
    shapes = {
        "wq": (d, config.n_heads * hd),
        "wk": (d, config.n_kv_heads * hd),
        "wv": (d, config.n_kv_heads * hd),
        "wo": (config.n_heads * hd, d),
        "w_gate": (d, f),
        "w_up": (d, f),
        "w_down": (f, d),
    }
    keys = jax.random.split(key, len(shapes) + 5)
    layers = {
        name: jax.random.normal(k, (n_l, *shape)) * shape[0] ** -0.5
        for k, (name, shape) in zip(keys, shapes.items())
    }
    layers["attn_norm"] = 1 + 0.1 * jax.random.normal(keys[-1], (n_l, d))
    layers["ffn_norm"] = 1 + 0.1 * jax.random.normal(keys[-2], (n_l, d))
    params = {
        "embed": jax.random.normal(keys[-3], (config.vocab_size, d)),
        "final_norm": 1 + 0.1 * jax.random.normal(keys[-4], (d,)),
        "layers": layers,
    }
    if not tied:
        params["lm_head"] = jax.random.normal(keys[-5], (d, config.vocab_size)) * d**-0.5
    return params


def count_params(params: Params) -> int:
    """The number of parameters (array elements) in ``params``."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))
