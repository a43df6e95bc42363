"""Perplexity, bits per byte and throughput of a LLaMA-family model on fixed token windows.

Each window of ``length + 1`` tokens is scored in one causal forward pass (inputs
``w[:-1]``, targets ``w[1:]``); windows are batched and the per-window negative
log-likelihood is summed inside one jitted program, so the ``[B, T, vocab]`` logits never
leave it. ``perplexity = exp(total NLL / scored tokens)`` (per token, tokenizer-specific);
``bits_per_byte = total NLL / ln 2 / UTF-8 bytes of the scored text`` (comparable across
tokenizers). Throughput is timed after compiling, on whatever device JAX runs on.
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import check_positive
from nasjax.llm.corpus import Windows
from nasjax.llm.llama import LlamaConfig, forward, generate


class Perplexity(NamedTuple):
    """What :func:`evaluate` measured."""

    ppl: float
    bits_per_byte: float
    tokens: int
    seconds: float
    tokens_per_s: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._asdict().items()}


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def window_nll(
    params: dict, windows: jax.Array, config: LlamaConfig, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    """Summed next-token NLL (nats) of each ``int32[B, T + 1]`` window -> ``float32[B]``."""
    logits = forward(params, windows[:, :-1], config, dtype=dtype).astype(jnp.float32)
    targets = windows[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return (jax.nn.logsumexp(logits, axis=-1) - picked).sum(axis=-1)


_SCORERS: dict = {}


def _compiled_scorer(params: dict, batch: np.ndarray, config: LlamaConfig, dtype: jnp.dtype):
    """:func:`window_nll` compiled for these shapes, once per process: a sweep scores many
    models of one shape (pruned and quantized ones), and ``lower().compile()`` alone
    would compile again for each."""
    leaves, treedef = jax.tree.flatten(params)
    key = (treedef, tuple((x.shape, str(x.dtype)) for x in leaves), batch.shape, config, dtype)
    if key not in _SCORERS:
        lowered = window_nll.lower(params, batch, config=config, dtype=dtype)
        _SCORERS[key] = lowered.compile()
    return _SCORERS[key]


def evaluate(
    params: dict,
    config: LlamaConfig,
    windows: Windows,
    batch_size: int = 4,
    dtype: jnp.dtype = jnp.float32,
) -> Perplexity:
    """Scores every window (batched, padded to a whole batch with repeats that are dropped).

    The first batch is compiled before the clock starts, so ``tokens_per_s`` is steady-state
    throughput of the forward pass.
    """
    check_positive(batch_size=batch_size)
    tokens = windows.tokens
    count = len(tokens)
    padded = -(-count // batch_size) * batch_size
    if padded > count:
        tokens = np.concatenate([tokens, np.repeat(tokens[-1:], padded - count, axis=0)])
    batches = tokens.reshape(padded // batch_size, batch_size, -1)
    score = _compiled_scorer(params, batches[0], config, dtype)
    start = time.perf_counter()
    nll = np.concatenate([np.asarray(score(params, b)) for b in batches])
    seconds = time.perf_counter() - start
    total = float(nll[:count].astype(np.float64).sum())
    scored = count * (tokens.shape[1] - 1)
    return Perplexity(
        ppl=math.exp(total / scored),
        bits_per_byte=total / math.log(2.0) / windows.target_bytes,
        tokens=scored,
        seconds=seconds,
        tokens_per_s=padded * (tokens.shape[1] - 1) / seconds,
    )


def decode_latency_ms(
    params: dict,
    config: LlamaConfig,
    prompt: np.ndarray,
    steps: int = 16,
    dtype: jnp.dtype = jnp.float32,
    repeats: int = 1,
) -> float:
    """Milliseconds per generated token of greedy KV-cache decoding (batch of ``prompt``'s
    rows; prefill included, compile excluded): the latency a user of the model sees.

    ``repeats`` timed calls after one untimed call; their median is returned (robust to a
    call slowed down by other work on a shared machine).
    """
    check_positive(steps=steps, repeats=repeats)
    run = generate.lower(params, prompt, steps=steps, config=config, dtype=dtype).compile()
    jax.block_until_ready(run(params, prompt))  # first call: buffers, caches
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(params, prompt))
        seconds.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(seconds)) / steps
