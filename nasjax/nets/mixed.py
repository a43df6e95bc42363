"""The mixed operation on one edge of a relaxed cell, for every method of the DARTS family.

A relaxed edge holds all candidate ops ``o_k``; the methods differ in how they combine them:

* ``darts`` (Liu et al., ICLR 2019): the softmax-weighted sum ``sum_k w_k o_k(x)``.
* ``gdas`` (Dong & Yang, CVPR 2019): a hard one-hot sample ``h`` (straight-through
  Gumbel-softmax); only the sampled op runs, ``h_i o_i(x) + sum_{k != i} h_k``. The other
  terms are zero in value but carry the gradient of ``h_k``, as in the official code.
* ``pcdarts`` (Xu et al., ICLR 2020): partial channel connections. The first ``C/K``
  channels go through the weighted sum (ops built for ``C/K`` channels), the others bypass
  the edge, then the channels are shuffled in ``K`` groups. Edge normalisation (a softmax
  over each node's incoming edges, ``beta``) is applied by the cell, see
  :func:`edge_normalised_sum`.

Each op is a callable ``op(x) -> y``; the space closes over its parameters. All functions
are pure ``jnp`` and trace once per edge shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError, check_choice

MIXED_MODES = ("darts", "gdas", "pcdarts")
"""How a relaxed edge combines its candidate ops (the method that defines it)."""

Op = Callable[[jnp.ndarray], jnp.ndarray]


def weighted_sum(x: jnp.ndarray, ops: Sequence[Op], weights: jnp.ndarray) -> jnp.ndarray:
    """DARTS's continuous relaxation ``sum_k weights[k] * ops[k](x)`` (``weights`` ``[K]``)."""
    out = weights[0] * ops[0](x)
    for k in range(1, len(ops)):
        out = out + weights[k] * ops[k](x)
    return out


def sampled_op(
    x: jnp.ndarray, ops: Sequence[Op], hard: jnp.ndarray, index: jnp.ndarray
) -> jnp.ndarray:
    """GDAS's edge: only ``ops[index]`` runs (``lax.switch``), scaled by ``hard[index]``.

    Args:
      x: the edge's input.
      ops: the candidate ops.
      hard: ``[K]`` one-hot in value with straight-through gradients
        (:func:`nasjax.nets.gumbel.gumbel_softmax`).
      index: ``int32[]``, the position of the one in ``hard``.
    """
    chosen = jax.lax.switch(index, list(ops), x)
    others = jnp.sum(hard) - hard[index]  # zero in value, the gradient of the other h_k
    return hard[index] * chosen + others


def channel_shuffle(x: jnp.ndarray, groups: int) -> jnp.ndarray:
    """ShuffleNet's channel shuffle on a channels-last array (PC-DARTS uses it per edge)."""
    channels = x.shape[-1]
    x = x.reshape(x.shape[:-1] + (groups, channels // groups))
    return jnp.swapaxes(x, -1, -2).reshape(x.shape[:-2] + (channels,))


def partial_channel(
    x: jnp.ndarray,
    ops: Sequence[Op],
    weights: jnp.ndarray,
    k: int,
    bypass: Op | None = None,
) -> jnp.ndarray:
    """PC-DARTS's edge: the weighted sum over the first ``C/k`` channels, the rest bypass.

    Args:
      x: channels-last input with ``C`` channels, ``C`` divisible by ``k``.
      ops: the candidate ops, built for ``C/k`` input and output channels.
      weights: ``[K]`` op weights (softmax of alpha).
      k: the sampling ratio ``K`` (4 in the paper).
      bypass: applied to the bypassing channels so their shape matches the ops' output
        (a stride-2 max-pool on reduction edges); identity when ``None``.
    """
    channels = x.shape[-1]
    if channels % k:
        raise NasjaxError(
            f"partial channels: C={channels} is not divisible by K={k}; choose C a multiple of K"
        )
    part = channels // k
    mixed = weighted_sum(x[..., :part], ops, weights)
    rest = x[..., part:] if bypass is None else bypass(x[..., part:])
    return channel_shuffle(jnp.concatenate([mixed, rest], axis=-1), k)


def mixed_op(
    mode: str,
    x: jnp.ndarray,
    ops: Sequence[Op],
    weights: jnp.ndarray,
    index: jnp.ndarray | None = None,
    k: int = 4,
    bypass: Op | None = None,
) -> jnp.ndarray:
    """One relaxed edge under ``mode`` (one of :data:`MIXED_MODES`).

    ``weights`` are the softmax op weights (``darts``, ``pcdarts``) or the hard
    straight-through sample (``gdas``, with its ``index``). ``k`` and ``bypass`` are
    :func:`partial_channel`'s.
    """
    check_choice("mixed-op mode", mode, MIXED_MODES)
    if mode == "darts":
        return weighted_sum(x, ops, weights)
    if mode == "gdas":
        if index is None:
            raise NasjaxError("gdas edges need the sampled op index")
        return sampled_op(x, ops, weights, index)
    return partial_channel(x, ops, weights, k, bypass)


def edge_normalised_sum(edge_outputs: Sequence[jnp.ndarray], beta: jnp.ndarray) -> jnp.ndarray:
    """PC-DARTS's edge normalisation: a node sums its incoming edges weighted by
    ``softmax(beta)`` (``beta`` ``[len(edge_outputs)]``)."""
    weights = jax.nn.softmax(beta)
    out = weights[0] * edge_outputs[0]
    for e in range(1, len(edge_outputs)):
        out = out + weights[e] * edge_outputs[e]
    return out
