"""A GPT-style decoder-only language model as pure functions: decoded, elastic, KV-cached.

The network is GPT-2's (Radford et al. 2019): token and learned position embeddings, a stack
of pre-norm blocks (LayerNorm -> causal multi-head self-attention -> residual, LayerNorm ->
GELU MLP -> residual), a final LayerNorm and an output layer tied to the token embedding.
Each block has its own number of heads, head dimension and MLP ratio (HAT, Wang et al.,
ACL 2020; AutoFormer, Chen et al., ICCV 2021; LiteTransformerSearch, Javaheripi et al.,
NeurIPS 2022).

Three ways to run it, sharing the same block math:

* :class:`TransformerLM` (what ``TransformerSpace.decode`` returns): a Flax module with only
  the chosen sizes, ``apply({"params": p}, tokens) -> logits``;
* :func:`elastic_forward`: the weight-sharing supernet (AutoFormer/HAT). Every weight has
  the largest shape; a sub-model uses the leading corner of each weight (first ``d``
  features, first ``h`` heads, first ``e`` dims of each head, first ``r * d`` hidden
  units). The genotype is a traced ``int32`` array turned into 0/1 masks, so one compiled
  function evaluates any sub-model and ``vmap`` over genotypes runs a population;
  :func:`slice_params` cuts the decoded model's weights out, and the two agree;
* greedy generation with a key/value cache (prefill, then one token per step), what a
  deployed model does: :mod:`nasjax.nets.transformer_generate`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError

INIT_STD = 0.02  # GPT-2's normal initialiser for weights and embeddings
LN_EPS = 1e-5
Params = dict[str, Any]


class LMSpec(NamedTuple):
    """The static sizes of one decoded model (hashable: a jit static argument).

    Attributes:
      width: model width ``d`` (embedding and residual stream).
      heads: heads per layer.
      head_dims: head dimension per layer.
      mlp_ratios: MLP hidden size per layer, as a multiple of ``width``.
      vocab_size: tokens (256 bytes).
      max_context: positions of the position embedding (the longest context).
    """

    width: int
    heads: tuple[int, ...]
    head_dims: tuple[int, ...]
    mlp_ratios: tuple[int, ...]
    vocab_size: int = 256
    max_context: int = 128

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks."""
        return len(self.heads)


def embed_shapes(width: int, vocab_size: int, max_context: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameters outside the blocks (embeddings and final LayerNorm)."""
    return {
        "tok_emb": (vocab_size, width),
        "pos_emb": (max_context, width),
        "lnf_scale": (width,),
        "lnf_bias": (width,),
    }


def layer_shapes(width: int, heads: int, head_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one block's parameters (a sub-model's are leading corners of the largest)."""
    return {
        "ln1_scale": (width,),
        "ln1_bias": (width,),
        "wq": (width, heads, head_dim),
        "bq": (heads, head_dim),
        "wk": (width, heads, head_dim),
        "bk": (heads, head_dim),
        "wv": (width, heads, head_dim),
        "bv": (heads, head_dim),
        "wo": (heads, head_dim, width),
        "bo": (width,),
        "ln2_scale": (width,),
        "ln2_bias": (width,),
        "w1": (width, hidden),
        "b1": (hidden,),
        "w2": (hidden, width),
        "b2": (width,),
    }


def init_value(key: jax.Array, name: str, shape: tuple[int, ...]) -> jax.Array:
    """GPT-2's initialiser by parameter name: LayerNorm scales 1, biases 0, else N(0, 0.02²)."""
    if name.endswith("scale"):
        return jnp.ones(shape, jnp.float32)
    if name.endswith("bias") or name.startswith("b"):
        return jnp.zeros(shape, jnp.float32)
    return INIT_STD * jax.random.normal(key, shape, jnp.float32)


# ---------------------------------------------------------------- block math


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, mask: Any = None) -> jax.Array:
    """LayerNorm over the last axis (in float32); with ``mask`` only over its active features."""
    x32 = x.astype(jnp.float32)
    if mask is None:
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    else:
        n = jnp.sum(mask)
        mean = jnp.sum(x32 * mask, -1, keepdims=True) / n
        var = jnp.sum(jnp.square(x32 - mean) * mask, -1, keepdims=True) / n
    y = (x32 - mean) * jax.lax.rsqrt(var + LN_EPS) * scale.astype(jnp.float32)
    y = y + bias.astype(jnp.float32)
    return (y if mask is None else y * mask).astype(x.dtype)


def project_qkv(p: Params, h: jax.Array, head_mask: Any) -> tuple[jax.Array, ...]:
    """Queries, keys, values ``[..., heads, head_dim]`` of ``h [..., d]`` (masked if given)."""
    out = []
    for n in ("q", "k", "v"):
        y = jnp.einsum("...d,dhe->...he", h, p["w" + n]) + p["b" + n]
        out.append(y if head_mask is None else y * head_mask.astype(y.dtype))
    return tuple(out)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, scale: Any) -> Any:
    """Softmax attention of ``q [B,Q,H,E]`` over ``k, v [B,K,H,E]``; ``allowed [Q,K]``."""
    s = jnp.einsum("bqhe,bkhe->bhqk", q, k).astype(jnp.float32) * scale
    s = jnp.where(allowed, s, jnp.finfo(jnp.float32).min)
    a = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhe->bqhe", a, v)


def mlp(p: Params, h: jax.Array, hidden_mask: Any, width_mask: Any) -> jax.Array:
    """The GELU MLP of a block; masks (or ``None``) select the active hidden units and width."""
    z = jax.nn.gelu(h @ p["w1"] + p["b1"])
    if hidden_mask is not None:
        z = z * hidden_mask.astype(z.dtype)
    y = z @ p["w2"] + p["b2"]
    return y if width_mask is None else y * width_mask.astype(y.dtype)


def out_proj(p: Params, o: jax.Array, width_mask: Any) -> jax.Array:
    """The attention output projection ``[..., heads, head_dim] -> [..., d]``."""
    y = jnp.einsum("...he,hed->...d", o, p["wo"]) + p["bo"]
    return y if width_mask is None else y * width_mask.astype(y.dtype)


def block(p: Params, x: jax.Array, scale: Any, masks: Any = None) -> tuple[jax.Array, tuple]:
    """One pre-norm block over ``x [B, T, d]``; returns the new ``x`` and its ``(k, v)``.

    ``masks`` is ``None`` (a decoded block) or ``(width_mask, head_mask, hidden_mask)``.
    """
    wm, hm, zm = (None, None, None) if masks is None else masks
    q, k, v = project_qkv(p, layer_norm(x, p["ln1_scale"], p["ln1_bias"], wm), hm)
    t = x.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    x = x + out_proj(p, attend(q, k, v, causal, scale), wm)
    x = x + mlp(p, layer_norm(x, p["ln2_scale"], p["ln2_bias"], wm), zm, wm)
    return x, (k, v)


def cast_params(params: Params, dtype: Any) -> Params:
    """Every parameter cast to the compute dtype (float32 masters stay untouched)."""
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)


def check_tokens(tokens: Any, max_context: int) -> None:
    """Refuses token arrays that are not ``[B, T]`` with ``1 <= T <= max_context``."""
    shape = jnp.shape(tokens)
    if len(shape) != 2 or not 1 <= shape[1] <= max_context:
        raise NasjaxError(
            f"tokens must have shape (batch, context) with context 1..{max_context} "
            f"(the model's max_context), got shape {shape}"
        )


def embed(p: Params, tokens: jax.Array, start: Any = 0) -> jax.Array:
    """Token plus position embeddings of ``tokens [B, T]`` placed at positions ``start..``."""
    pos = jax.lax.dynamic_slice_in_dim(p["pos_emb"], start, tokens.shape[1])
    return p["tok_emb"][tokens] + pos


def final_logits(p: Params, x: jax.Array, width_mask: Any = None) -> jax.Array:
    """Final LayerNorm and the output layer tied to the token embedding (float32 logits)."""
    x = layer_norm(x, p["lnf_scale"], p["lnf_bias"], width_mask)
    return (x @ p["tok_emb"].T).astype(jnp.float32)


# ---------------------------------------------------------------- decoded model


def forward(
    params: Params, spec: LMSpec, tokens: jax.Array, dtype: Any = jnp.float32, cache: bool = False
) -> Any:
    """Logits ``float32[B, T, V]`` of a decoded model (with ``cache``, also each layer's k, v).

    Args:
      params: the decoded model's parameter tree (``TransformerLM`` layout).
      spec: its sizes.
      tokens: ``int32[B, T]``, ``T <= spec.max_context``.
      dtype: compute dtype (``bfloat16`` for mixed precision; params stay float32).
      cache: also return ``[(k, v)]`` per layer, each ``[B, T, heads, head_dim]``.
    """
    check_tokens(tokens, spec.max_context)
    p = cast_params(params, dtype)
    x = embed(p, tokens)
    kv = []
    for i in range(spec.num_layers):
        x, layer_kv = block(p[f"layer_{i}"], x, 1.0 / math.sqrt(spec.head_dims[i]))
        kv.append(layer_kv)
    logits = final_logits(p, x)
    return (logits, kv) if cache else logits


class _LayerParams(nn.Module):
    """Declares one block's parameters (shapes given as ``((name, shape), ...)``)."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @nn.compact
    def __call__(self) -> Params:
        return {n: self.param(n, init_value, n, s) for n, s in self.shapes}


class TransformerLM(nn.Module):
    """A decoded decoder-only LM: ``apply({"params": p}, tokens int32[B, T]) -> logits``."""

    spec: LMSpec
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        s = self.spec
        shapes = embed_shapes(s.width, s.vocab_size, s.max_context)
        params = {n: self.param(n, init_value, n, shape) for n, shape in shapes.items()}
        for i in range(s.num_layers):
            hidden = s.mlp_ratios[i] * s.width
            shapes = layer_shapes(s.width, s.heads[i], s.head_dims[i], hidden)
            params[f"layer_{i}"] = _LayerParams(tuple(shapes.items()), name=f"layer_{i}")()
        return forward(params, s, tokens, self.dtype)


# ---------------------------------------------------------------- elastic supernet


class ElasticMasks(NamedTuple):
    """0/1 masks of one sub-model inside the largest weights (traced arrays)."""

    width: jax.Array  # [d_max]
    heads: jax.Array  # [L_max, H_max, E_max]
    hidden: jax.Array  # [L_max, R_max * d_max]
    layer_on: jax.Array  # [L_max] bool
    scale: jax.Array  # [L_max], 1 / sqrt(head_dim)


def elastic_forward(
    params: Params, masks: ElasticMasks, tokens: jax.Array, dtype: Any = jnp.float32
) -> jax.Array:
    """Logits ``float32[B, T, V]`` of the sub-model ``masks`` selects in the supernet.

    ``params`` holds the largest weights, blocks stacked on a leading ``L_max`` axis
    (``params["layers"]``); the blocks run under ``lax.scan`` and a block that is off
    passes its input through. Equal to :func:`forward` of the sliced model.
    """
    check_tokens(tokens, params["pos_emb"].shape[0])
    p = cast_params(params, dtype)
    wm = masks.width.astype(dtype)
    x = embed(p, tokens) * wm

    def body(x: jax.Array, layer: tuple) -> tuple:
        lp, hm, zm, on, scale = layer
        y, _ = block(lp, x, scale, (wm, hm.astype(dtype), zm.astype(dtype)))
        return jnp.where(on, y, x), None

    xs = (p["layers"], masks.heads, masks.hidden, masks.layer_on, masks.scale)
    x, _ = jax.lax.scan(body, x, xs)
    return final_logits(p, x, masks.width)


def slice_corner(array: Any, shape: tuple[int, ...]) -> Any:
    """The leading corner ``array[:s0, :s1, ...]`` of the given shape."""
    return array[tuple(slice(0, n) for n in shape)]


def init_elastic(key: jax.Array, spec_max: LMSpec) -> Params:
    """Largest weights of the supernet; blocks stacked on a leading axis of ``L_max``."""
    s = spec_max
    shapes = embed_shapes(s.width, s.vocab_size, s.max_context)
    keys = jax.random.split(key, len(shapes) + 1)
    params: Params = {n: init_value(k, n, shape) for k, (n, shape) in zip(keys, shapes.items())}
    hidden = max(s.mlp_ratios) * s.width
    lshapes = layer_shapes(s.width, max(s.heads), max(s.head_dims), hidden)
    lkeys = jax.random.split(keys[-1], len(lshapes))
    params["layers"] = {
        n: init_value(k, n, (s.num_layers,) + shape)
        for k, (n, shape) in zip(lkeys, lshapes.items())
    }
    return params


def slice_params(params: Params, spec: LMSpec) -> Params:
    """The decoded model's weights: the leading corners of the supernet's for ``spec``."""
    out = {
        n: slice_corner(params[n], shape)
        for n, shape in embed_shapes(spec.width, spec.vocab_size, spec.max_context).items()
    }
    for i in range(spec.num_layers):
        hidden = spec.mlp_ratios[i] * spec.width
        shapes = layer_shapes(spec.width, spec.heads[i], spec.head_dims[i], hidden)
        out[f"layer_{i}"] = {
            n: slice_corner(params["layers"][n][i], shape) for n, shape in shapes.items()
        }
    return out
