"""Short language-model training of a population of ``transformer``-space sub-models.

Each member is trained from the same initial weights (the supernet's, sliced: common
random numbers make the ranking less noisy), on the same sequence of random byte windows,
with AdamW (Loshchilov & Hutter 2019; GPT-2-style betas, warm-up then cosine decay,
gradient clipping), and scored by the validation cross-entropy over fixed windows of the
held-out split, in bits per byte (lower is better) and per-byte perplexity. Fitness for
a search is ``-bits_per_byte`` (maximised, like every fitness in nasjax).

Two ways to run the same computation (tested equal):

* ``mode="decoded"``: each member is the specialised model, compiled at its own sizes
  (cost proportional to the member; one compile per distinct architecture). The faster
  choice on CPUs, where a masked model pays for the largest one.
* ``mode="elastic"``: the weight-sharing supernet of AutoFormer/HAT with the member's
  masks; one compile for the whole population, members under ``lax.map`` with
  ``member_batch`` of them ``vmap``-ped together (wide accelerators).

``compute_dtype="bfloat16"`` trains in mixed precision: float32 master weights and
optimiser state, forward and backward in bfloat16, softmax, LayerNorm and loss in float32.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.errors import NasjaxError, check_choice
from nasjax.nets.transformer import elastic_forward, forward, init_elastic, slice_params
from nasjax.spaces.transformer import TransformerSpace
from nasjax.text import TextData, bits_per_byte, check_context, eval_windows, random_windows

MODES = ("decoded", "elastic")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class LMTrainConfig(NamedTuple):
    """How each sub-model is trained and scored.

    Attributes:
      steps: optimiser steps.
      batch_size: windows per step.
      context: tokens per window (at most the space's ``max_context``).
      learning_rate: peak AdamW learning rate.
      weight_decay: decoupled weight decay.
      warmup_steps: linear warm-up (capped at a fifth of ``steps``), then cosine to 10 %.
      compute_dtype: ``"float32"`` or ``"bfloat16"`` (mixed precision).
      mode: ``"decoded"`` or ``"elastic"`` (module docstring).
      member_batch: members ``vmap``-ped together in ``elastic`` mode.
      eval_windows: validation windows (evenly spaced over the valid split).
    """

    steps: int = 300
    batch_size: int = 16
    context: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    compute_dtype: str = "float32"
    mode: str = "decoded"
    member_batch: int = 1
    eval_windows: int = 64


def check_config(config: LMTrainConfig, space: TransformerSpace, data: TextData) -> None:
    """Refuses bad settings with one message naming the value and the valid range."""
    check_choice("mode", config.mode, MODES)
    check_choice("compute_dtype", config.compute_dtype, DTYPES)
    for name in ("steps", "batch_size", "member_batch", "eval_windows"):
        if getattr(config, name) < 1:
            raise NasjaxError(f"{name} must be >= 1, got {getattr(config, name)!r}")
    if not 1 <= config.context <= space.max_context:
        raise NasjaxError(
            f"context {config.context} is longer than the space supports: max_context is "
            f"{space.max_context}; choose 1..{space.max_context}"
        )
    check_context(data, config.context)


def make_lm_optimizer(config: LMTrainConfig) -> optax.GradientTransformation:
    """AdamW (betas 0.9, 0.95), warm-up + cosine schedule, global-norm clipping at 1."""
    warmup = min(config.warmup_steps, config.steps // 5)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, config.steps, 0.1 * config.learning_rate
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=config.weight_decay),
    )


def cross_entropy(logits: jax.Array, windows: jax.Array) -> jax.Array:
    """Mean next-byte cross-entropy (nats) of ``logits [B, T, V]`` for ``windows [B, T+1]``."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:])
    return jnp.mean(losses)


def _train(
    logits_fn: Any, params: Any, key: jax.Array, tokens: jax.Array, valid: jax.Array, config: Any
) -> tuple[jax.Array, jax.Array, Any]:
    """Trains ``params`` under ``lax.scan``; returns (valid CE, mean CE of the last tenth,
    the trained params)."""
    dtype = DTYPES[config.compute_dtype]
    opt = make_lm_optimizer(config)

    def loss_fn(p: Any, w: jax.Array) -> jax.Array:
        return cross_entropy(logits_fn(p, w[:, :-1], dtype), w)

    def step(carry: tuple, i: jax.Array) -> tuple:
        p, state = carry
        w = random_windows(jax.random.fold_in(key, i), tokens, config.batch_size, config.context)
        loss, grads = jax.value_and_grad(loss_fn)(p, w)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(config.steps))
    tail = max(1, config.steps // 10)
    valid_ce = cross_entropy(logits_fn(params, valid[:, :-1], jnp.float32), valid)
    return valid_ce, jnp.mean(losses[-tail:]), params


# keep_params (static): also return the trained weights; without, XLA drops them.
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_elastic(
    space: TransformerSpace, config: LMTrainConfig, keep_params: bool, *arrays: Any
) -> Any:
    key_init, key_data, genotypes, tokens, valid = arrays
    params0 = init_elastic(key_init, space.largest_spec())

    def member(g: jax.Array) -> tuple:
        masks = space.masks(g)
        fn = lambda p, x, dtype: elastic_forward(p, masks, x, dtype)  # noqa: E731
        out = _train(fn, params0, key_data, tokens, valid, config)
        return out if keep_params else out[:2]

    return jax.lax.map(member, genotypes, batch_size=config.member_batch)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_decoded(
    spec: Any, config: LMTrainConfig, keep_params: bool, params: Any, *arrays: Any
) -> Any:
    fn = lambda p, x, dtype: forward(p, spec, x, dtype)  # noqa: E731
    out = _train(fn, params, *arrays, config)
    return out if keep_params else out[:2]


def train_lm_population(
    key: jax.Array,
    genotypes: Any,
    data: TextData,
    space: TransformerSpace,
    config: LMTrainConfig,
    *,
    keep_params: bool = False,
) -> dict[str, Any]:
    """Trains every genotype of ``int32[P, D]`` and scores it on the validation split.

    The same ``key`` gives the same numbers for the same architecture, whatever else is in
    the population (an architecture's score is a function of the architecture).

    Returns:
      ``valid_bpb``, ``valid_ppl``, ``train_bpb`` (last tenth of the steps), each
      ``float[P]``, and ``wall_s`` (seconds, compiles included); with ``keep_params``
      also ``params``, each member's trained weights in the decoded model's layout
      (``space.decode(g).apply({"params": params[i]}, tokens)``).

    Raises:
      NasjaxError: for an invalid genotype or configuration.
    """
    check_config(config, space, data)
    genotypes = np.stack([space.validate(g) for g in np.asarray(genotypes)])
    start = time.perf_counter()
    key_init, key_data = jax.random.split(key)
    tokens = jnp.asarray(data.train, jnp.int32)
    valid = jnp.asarray(eval_windows(data.valid, config.context, config.eval_windows))
    specs = [space.spec(g) for g in genotypes]
    if config.mode == "elastic":
        arrays = (key_init, key_data, jnp.asarray(genotypes), tokens, valid)
        out = _train_elastic(space, config, keep_params, *arrays)
        valid_ce, train_ce = (np.asarray(a) for a in out[:2])
        trained = []
        if keep_params:  # member i's weights, sliced to its decoded model
            take = lambda i: jax.tree.map(lambda a: a[i], out[2])  # noqa: E731
            trained = [slice_params(take(i), spec) for i, spec in enumerate(specs)]
    else:
        params0 = init_elastic(key_init, space.largest_spec())
        outs = [
            _train_decoded(
                spec, config, keep_params, slice_params(params0, spec), key_data, tokens, valid
            )
            for spec in specs
        ]
        valid_ce, train_ce = (np.array([float(o[i]) for o in outs]) for i in (0, 1))
        trained = [o[2] for o in outs] if keep_params else []
    result: dict[str, Any] = {
        "valid_bpb": np.asarray(bits_per_byte(valid_ce), np.float64),
        "valid_ppl": np.exp(np.asarray(valid_ce, np.float64)),
        "train_bpb": np.asarray(bits_per_byte(train_ce), np.float64),
        "wall_s": time.perf_counter() - start,
    }
    if keep_params:
        result["params"] = trained
    return result


def module_bits_per_byte(
    module: Any, variables: Any, data: TextData, config: LMTrainConfig
) -> float:
    """Validation bits per byte of a decoded model (a saved network reloaded): the same
    windows as :func:`train_lm_population` scores, one forward pass in float32."""
    valid = jnp.asarray(eval_windows(data.valid, config.context, config.eval_windows))
    logits = jax.jit(module.apply)(variables, valid[:, :-1])
    return float(bits_per_byte(cross_entropy(logits, valid)))
