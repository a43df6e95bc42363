"""Gumbel-softmax sampling with hard one-hot samples and straight-through gradients.

Jang et al. (ICLR 2017) and Maddison et al. (ICLR 2017) relax a categorical sample to
``softmax((logits + g) / tau)`` with Gumbel noise ``g``. GDAS (Dong & Yang, CVPR 2019) and
the differentiable mixed-precision search of Wu et al. (2018) take the *hard* sample
``one_hot(argmax)`` in the forward pass and the relaxed sample's gradient in the backward
pass (straight-through), so a network computes only the sampled choice while its logits
still receive gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gumbel_softmax(
    key: jax.Array, logits: jax.Array, temperature: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Hard straight-through Gumbel-softmax over the last axis.

    Args:
      key: PRNG key for the Gumbel noise.
      logits: ``float[..., K]`` unnormalised log-probabilities.
      temperature: ``tau > 0``; may be a traced scalar (annealed inside ``jit``).

    Returns:
      ``(hard, index)``: ``hard`` is ``float[..., K]``, exactly one-hot in value, with the
      gradient of ``softmax((logits + g) / tau)``; ``index`` is ``int32[...]``, the sampled
      choice (the position of the one).
    """
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
    index = jnp.argmax(soft, axis=-1).astype(jnp.int32)
    hard = jax.nn.one_hot(index, logits.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft)), index


def linear_temperature(
    step: jax.Array, total_steps: int, start: float = 10.0, end: float = 0.1
) -> jax.Array:
    """GDAS's schedule: ``tau`` falls linearly from ``start`` to ``end`` over the search."""
    fraction = jnp.clip(step / jnp.maximum(total_steps - 1, 1), 0.0, 1.0)
    return start - (start - end) * fraction
