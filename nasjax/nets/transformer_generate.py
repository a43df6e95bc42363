"""Greedy generation with a key/value cache for the decoded decoder-only LM.

A deployed GPT-style model (Radford et al. 2019) runs the prompt once (``prefill``, keeping
every layer's keys and values), then one token per step (``decode_step``) attending to the
cache instead of recomputing the prefix. Used to measure generation latency
(:func:`nasjax.transformer_costs.generate_latency_ms`); tested equal to re-running the full
forward pass of :mod:`nasjax.nets.transformer`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError
from nasjax.nets.transformer import (
    LMSpec,
    Params,
    attend,
    cast_params,
    embed,
    final_logits,
    forward,
    layer_norm,
    mlp,
    out_proj,
    project_qkv,
)


def decode_step(
    params: Params, spec: LMSpec, token: jax.Array, pos: Any, kv: list, dtype: Any = jnp.float32
) -> tuple[jax.Array, list]:
    """One generation step: the logits ``float32[B, V]`` of ``token int32[B]`` at ``pos``.

    ``kv`` holds each layer's cache ``(k, v)``, ``[B, max_context, heads, head_dim]``; the
    step writes position ``pos`` and attends to positions ``<= pos``.
    """
    p = cast_params(params, dtype)
    x = embed(p, token[:, None], pos)
    allowed = (jnp.arange(spec.max_context) <= pos)[None, :]
    new_kv = []
    for i in range(spec.num_layers):
        lp = p[f"layer_{i}"]
        q, k, v = project_qkv(lp, layer_norm(x, lp["ln1_scale"], lp["ln1_bias"]), None)
        ck = jax.lax.dynamic_update_slice_in_dim(kv[i][0], k.astype(kv[i][0].dtype), pos, 1)
        cv = jax.lax.dynamic_update_slice_in_dim(kv[i][1], v.astype(kv[i][1].dtype), pos, 1)
        scale = 1.0 / math.sqrt(spec.head_dims[i])
        x = x + out_proj(lp, attend(q, ck.astype(dtype), cv.astype(dtype), allowed, scale), None)
        x = x + mlp(lp, layer_norm(x, lp["ln2_scale"], lp["ln2_bias"]), None, None)
        new_kv.append((ck, cv))
    return final_logits(p, x)[:, 0], new_kv


def prefill(
    params: Params, spec: LMSpec, prompt: jax.Array, dtype: Any = jnp.float32
) -> tuple[jax.Array, list]:
    """Runs the prompt ``int32[B, T0]`` once: its logits and a cache padded to ``max_context``."""
    logits, kv = forward(params, spec, prompt, dtype, cache=True)
    pad = [(0, 0), (0, spec.max_context - prompt.shape[1]), (0, 0), (0, 0)]
    return logits, [(jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in kv]


def generate(
    params: Params, spec: LMSpec, prompt: jax.Array, num_tokens: int, dtype: Any = jnp.float32
) -> jax.Array:
    """Greedy generation with a KV cache: ``int32[B, num_tokens]`` after ``prompt [B, T0]``.

    Raises:
      NasjaxError: if ``T0 + num_tokens`` exceeds ``spec.max_context``.
    """
    t0 = jnp.shape(prompt)[-1]
    if num_tokens < 1 or t0 + num_tokens > spec.max_context:
        raise NasjaxError(
            f"prompt of {t0} tokens + {num_tokens} generated must fit the model's "
            f"max_context {spec.max_context} (and num_tokens >= 1)"
        )
    logits, kv = prefill(params, spec, prompt, dtype)
    first = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)

    def step(carry: tuple, pos: jax.Array) -> tuple:
        token, kv = carry
        logits, kv = decode_step(params, spec, token, pos, kv, dtype)
        nxt = jnp.argmax(logits, -1).astype(jnp.int32)
        return (nxt, kv), nxt

    _, rest = jax.lax.scan(step, (first, kv), t0 + jnp.arange(num_tokens - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)
