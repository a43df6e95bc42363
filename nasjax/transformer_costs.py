"""Costs of a decoder-only LM: parameters, FLOPs per token, latency, generation, memory.

Closed forms for a decoded model of the ``transformer`` space (:class:`nasjax.spaces.
transformer_net.LMSpec`), tested equal to counting the Flax parameters and the matrix
products of the traced forward pass:

* ``decoder_params``: every non-embedding parameter (blocks and final LayerNorm). The
  training-free proxy of LiteTransformerSearch (Javaheripi et al., NeurIPS 2022), who found
  it ranks GPT-style architectures by perplexity almost as well as training them.
  Per block: ``4 h e d + 3 h e`` (Q, K, V, output projections and biases)
  ``+ 2 d z + z`` (MLP, ``z = ratio * d``) ``+ 6 d`` (two LayerNorms, two output biases);
  plus ``2 d`` for the final LayerNorm.
* ``embedding_params``: token and position embeddings, ``(V + T_max) d`` (the output layer
  is tied to the token embedding, as in GPT-2); ``total_params`` is the sum.
* ``flops_per_token``: ``2 x`` the multiply-accumulates per token of a forward pass over a
  context of ``T`` tokens, as the model computes it: per block ``4 d h e + 2 d z`` for the
  projections and MLP and ``2 T h e`` for the attention scores and weighted sum (the full
  ``T x T`` matrix, masked), plus ``d V`` for the output layer (Kaplan et al. 2020 count the
  same terms).

Measured on the current device: the latency of a forward pass over a context
(``forward_latency_ms``), of generating tokens with a KV cache (``generate_latency_ms``,
per token), and XLA's peak memory of the forward program (``peak_memory_mb``). Timing on
a shared machine is noisy; the median of repeats is reported.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_positive
from nasjax.nets.transformer import LMSpec, embed_shapes, forward, layer_shapes
from nasjax.nets.transformer_generate import generate
from nasjax.objectives import compiled_memory_mb, device_name

PROXIES = ("decoder_params", "total_params", "flops_per_token")
"""Training-free proxies (larger = predicted better), scored by the proxy study."""


def param_counts(spec: LMSpec) -> dict[str, int]:
    """``decoder_params``, ``embedding_params`` and ``total_params`` (closed form)."""
    d = spec.width
    decoder = 2 * d
    for h, e, r in zip(spec.heads, spec.head_dims, spec.mlp_ratios):
        z = r * d
        decoder += 4 * h * e * d + 3 * h * e + 2 * d * z + z + 6 * d
    embedding = (spec.vocab_size + spec.max_context) * d
    return {
        "decoder_params": decoder,
        "embedding_params": embedding,
        "total_params": decoder + embedding,
    }


def flops_per_token(spec: LMSpec, context: int) -> int:
    """Forward FLOPs per token (``2 x`` MACs) over a context of ``context`` tokens."""
    d = spec.width
    macs = d * spec.vocab_size
    for h, e, r in zip(spec.heads, spec.head_dims, spec.mlp_ratios):
        macs += 4 * d * h * e + 2 * d * r * d + 2 * context * h * e
    return 2 * macs


def check_context(spec: LMSpec, context: int) -> None:
    """Refuses a context outside ``1..max_context``.

    Raises:
      NasjaxError: naming the context and the model's limit.
    """
    if not isinstance(context, (int, np.integer)) or not 1 <= context <= spec.max_context:
        raise NasjaxError(
            f"context {context!r} is not supported: the model's max_context is "
            f"{spec.max_context} (position embeddings); choose 1..{spec.max_context}"
        )


def training_free_costs(spec: LMSpec, context: int) -> dict[str, int]:
    """Every count of :func:`param_counts` and ``flops_per_token`` at ``context``."""
    check_context(spec, context)
    return {**param_counts(spec), "flops_per_token": flops_per_token(spec, context)}


def benchmark_params(spec: LMSpec, seed: int = 0) -> dict:
    """Stand-in weights for timing (numpy ``N(0, 0.02²)``, LayerNorm scales 1, biases 0)."""
    rng = np.random.default_rng(seed)

    def draw(shapes: dict) -> dict:
        out = {}
        for name, shape in shapes.items():
            if name.endswith("scale"):
                out[name] = jnp.ones(shape)
            elif name.endswith("bias") or name.startswith("b"):
                out[name] = jnp.zeros(shape)
            else:
                out[name] = jnp.asarray(0.02 * rng.standard_normal(shape), jnp.float32)
        return out

    params = draw(embed_shapes(spec.width, spec.vocab_size, spec.max_context))
    for i in range(spec.num_layers):
        z = spec.mlp_ratios[i] * spec.width
        params[f"layer_{i}"] = draw(layer_shapes(spec.width, spec.heads[i], spec.head_dims[i], z))
    return params


def _time_ms(fn: Callable[..., Any], args: tuple, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` in ms, after ``warmup`` (>= 1) untimed calls."""
    if repeats < 1:
        raise NasjaxError(f"repeats must be >= 1, got {repeats!r}")
    for _ in range(max(1, warmup)):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _forward_jit(params: dict, spec: LMSpec, tokens: jax.Array, dtype: Any) -> jax.Array:
    return forward(params, spec, tokens, dtype)


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _generate_jit(params: dict, spec: LMSpec, prompt: jax.Array, n: int, dtype: Any) -> Any:
    return generate(params, spec, prompt, n, dtype)


def _tokens(batch_size: int, length: int) -> jax.Array:
    if batch_size < 1:
        raise NasjaxError(f"batch_size must be >= 1, got {batch_size!r}")
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(0, 256, (batch_size, length)), jnp.int32)


def forward_latency_ms(
    spec: LMSpec,
    context: int,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    dtype: Any = jnp.float32,
) -> float:
    """Median latency (ms) of one compiled forward pass over ``batch_size x context`` tokens."""
    check_context(spec, context)
    args = (benchmark_params(spec), spec, _tokens(batch_size, context), dtype)
    return _time_ms(_forward_jit, args, warmup, repeats)


def generate_latency_ms(
    spec: LMSpec,
    prompt: int,
    num_tokens: int,
    batch_size: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    dtype: Any = jnp.float32,
) -> float:
    """Median ms per generated token: prefill ``prompt`` tokens, then ``num_tokens`` greedy
    steps with a KV cache (one compiled call, divided by ``num_tokens``)."""
    check_context(spec, prompt + num_tokens)
    args = (benchmark_params(spec), spec, _tokens(batch_size, prompt), num_tokens, dtype)
    return _time_ms(_generate_jit, args, warmup, repeats) / num_tokens


def peak_memory_mb(
    spec: LMSpec, context: int, batch_size: int = 1, dtype: Any = jnp.float32
) -> float:
    """XLA's memory analysis of the compiled forward pass, MiB: temporaries + arguments
    (weights, tokens) + outputs (logits) - aliased. Nothing runs."""
    check_context(spec, context)
    params = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), benchmark_params(spec)
    )
    tokens = jax.ShapeDtypeStruct((batch_size, context), jnp.int32)
    return compiled_memory_mb(_forward_jit.lower(params, spec, tokens, dtype).compile())


def measured_costs(
    spec: LMSpec,
    context: int,
    generate_tokens: int = 32,
    repeats: int = 20,
) -> dict[str, Any]:
    """Latency of a forward pass over ``context`` tokens (batch 1), ms per generated token
    (prompt of ``context - generate_tokens``), peak memory, and the device name."""
    check_context(spec, context)
    if not 1 <= generate_tokens < context:
        raise NasjaxError(
            f"generate_tokens must be in 1..{context - 1} (inside the context), "
            f"got {generate_tokens!r}"
        )
    return {
        "latency_ms": forward_latency_ms(spec, context, repeats=repeats),
        "generate_ms_per_token": generate_latency_ms(
            spec, context - generate_tokens, generate_tokens, repeats=max(1, repeats // 2)
        ),
        "peak_mem_mb": peak_memory_mb(spec, context),
        "device": device_name(),
    }


def inference_costs(
    spec: LMSpec, context: int, batch_size: int = 1, repeats: int = 20
) -> dict[str, Any]:
    """What ``nasjax info --latency`` measures: ``latency_ms`` of a forward pass over
    ``context``, ``generate_ms_per_token`` (prefill half the context, generate the other
    half with a KV cache; None for a context of 1), ``peak_mem_mb``, ``device``,
    ``batch_size``."""
    check_context(spec, context)
    check_positive(batch_size=batch_size, repeats=repeats)
    half, generate = max(1, context // 2), None  # None: no room for prompt and generation
    if context > 1:
        reps = max(1, repeats // 2)
        generate = generate_latency_ms(spec, context - half, half, batch_size, reps)
    return {
        "latency_ms": forward_latency_ms(spec, context, batch_size, repeats),
        "generate_ms_per_token": generate,
        "peak_mem_mb": peak_memory_mb(spec, context, batch_size),
        "device": device_name(),
        "batch_size": batch_size,
    }
