"""What a search space provides to gradient-based search: its relaxed network.

A relaxed network is the space's supernet as pure functions of explicit parameters, with
one logit vector per decision kept apart from the network weights (the DARTS split):

* ``alpha`` — ``float[*alpha_shape]``, the op logits of every relaxed edge, last axis the
  candidate ops (``(6, 5)`` for NAS-Bench-201; ``(2, 14, 8)`` for the DARTS space's normal
  and reduction cells);
* ``beta`` — ``float[*beta_shape]``, PC-DARTS's edge-normalisation logits (one per edge);
  the other methods ignore it.

``apply(params, x, arch)`` runs the network with :class:`ArchWeights` built by the method
(softmax weights, or a hard Gumbel sample and its index). BatchNorm in search networks
uses batch statistics only (DARTS searches with ``affine=False`` BN in training mode), so
``apply`` is stateless. ``discretize(alpha, beta)`` maps logits back to an ordinary
genotype of the space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError

Params = Any


class ArchWeights(NamedTuple):
    """The architecture as a relaxed network's ``apply`` consumes it.

    Attributes:
      weights: ``float[*alpha_shape]`` op weights per edge (softmax of alpha), or a hard
        straight-through one-hot sample for GDAS.
      index: ``int32[*alpha_shape[:-1]]``, the sampled op of each edge (GDAS), else None.
      beta: ``float[*beta_shape]`` edge-normalisation logits (PC-DARTS), else None.
    """

    weights: jnp.ndarray
    index: jnp.ndarray | None = None
    beta: jnp.ndarray | None = None


class RelaxedNetwork(NamedTuple):
    """A space's supernet for one mixed-op mode (see :mod:`nasjax.nets.mixed`).

    Attributes:
      mode: ``"darts"``, ``"gdas"`` or ``"pcdarts"``; fixed at construction because
        PC-DARTS builds its ops for ``C/K`` channels.
      init: ``key -> params``, the network weights.
      apply: ``(params, x, arch) -> logits``, training-mode forward pass.
      alpha_shape: shape of the op logits.
      beta_shape: shape of the edge-normalisation logits.
      discretize: ``(alpha, beta or None) -> np.int32[D]``, a genotype of the space.
    """

    mode: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jnp.ndarray, ArchWeights], jnp.ndarray]
    alpha_shape: tuple[int, ...]
    beta_shape: tuple[int, ...]
    discretize: Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def check_arch_logits(net: RelaxedNetwork, alpha: object, beta: object = None) -> None:
    """Raise ``NasjaxError`` unless ``alpha`` (and ``beta``) have ``net``'s shapes."""
    got = np.shape(alpha)
    if got != net.alpha_shape:
        raise NasjaxError(
            f"alpha has shape {got}; this space's relaxed network expects {net.alpha_shape} "
            "(edges x candidate ops)"
        )
    if beta is not None and np.shape(beta) != net.beta_shape:
        raise NasjaxError(
            f"beta has shape {np.shape(beta)}; this space's relaxed network expects "
            f"{net.beta_shape} (one logit per edge)"
        )
