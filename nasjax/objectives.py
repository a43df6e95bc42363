"""Efficiency metrics of a decoded network: parameter count and multiply-accumulates.

``params`` counts every trainable scalar (BatchNorm scale and bias included, running
statistics not), as NAS-Bench-201 counts them. ``macs`` counts the multiply-accumulates of
one example's forward pass through the network's matrix products (convolutions written as
im2col products, and dense layers), found by tracing the network abstractly (no FLOPs are
spent) and reading the shapes of every ``dot_general`` in its jaxpr. Pooling, BatchNorm and
additions are not MACs.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxprs_in_params


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


def init_abstract(module: nn.Module, input_shape: tuple[int, ...], *args: Any) -> Any:
    """The variables of ``module`` as shapes only (``jax.eval_shape``), for one example."""
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), x, *args))


def _dot_macs(jaxpr: Any) -> int:
    """MACs of every ``dot_general`` in ``jaxpr``; a ``scan`` body counts ``length`` times,
    a ``cond``/``switch`` its most expensive branch (an upper bound)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += math.prod(out) * math.prod(lhs[d] for d in contract)
        elif name == "while":
            raise ValueError("cannot count MACs through a while loop of unknown length")
        else:
            subs = [_dot_macs(sub) for sub in jaxprs_in_params(eqn.params)]
            if name == "cond":
                total += max(subs, default=0)
            else:
                total += sum(subs) * (eqn.params["length"] if name == "scan" else 1)
    return total


def count_macs(module: nn.Module, variables: Any, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one example's inference forward pass.

    Args:
      module: a decoded network, called as ``module.apply(variables, x)``.
      variables: its variables (arrays or ``ShapeDtypeStruct``s).
      input_shape: shape of one example, channels last.
    """
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: module.apply(v, x))(variables, x)
    return _dot_macs(closed.jaxpr)


def network_cost(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` of a decoded network for one example."""
    variables = init_abstract(module, input_shape)
    return {
        "params": count_params(variables["params"]),
        "macs": count_macs(module, variables, input_shape),
    }
