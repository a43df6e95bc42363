"""The NAS-Bench-201 network as pure functions over stacked per-edge parameters.

The same network as :class:`nasjax.spaces.nb201_net.NB201Network` (Dong & Yang, ICLR 2020,
the benchmark's ``TinyNetwork``), written for training many *different* architectures in
one compiled program:

* plain ``jax`` functions over a parameter dict, so tracing the training program takes
  about half the time of the Flax module (whose lifted ``nn.switch`` re-traces every
  branch with all variable collections);
* the genotype is a traced ``int32[6]``: under ``lax.map`` each switch executes only the
  chosen op, forward and backward (the specialised network's cost); under ``vmap`` it
  becomes a select over the ops (the right trade on wide accelerators);
* BatchNorm running statistics are ordinary arrays; an op that is not chosen keeps its
  statistics and receives zero gradients, so a member trains exactly the decoded network.

:func:`to_flax_variables` turns one member's parameters into the decoded
``NB201Network``'s variables, which is how the tests pin this formulation to the Flax
one and how a trained member is exported.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nasjax.nets.layers import avg_pool, conv
from nasjax.spaces.nb201_net import _BN_EPSILON, _BN_MOMENTUM, EDGES, OPS

TRUNCATED_NORMAL_STD = 0.87962566103423978
"""Standard deviation of a unit normal truncated to [-2, 2]; lecun-normal divides by it."""

Params = dict[str, Any]
State = dict[str, Any]


def _bn_params(shape: tuple[int, ...]) -> tuple[Params, State]:
    return (
        {"scale": jnp.ones(shape), "bias": jnp.zeros(shape)},
        {"mean": jnp.zeros(shape), "var": jnp.ones(shape)},
    )


def batch_norm(
    x: jnp.ndarray, params: Params, state: State, train: bool
) -> tuple[jnp.ndarray, State]:
    """Flax's ``nn.BatchNorm`` over every axis but the last, as a function.

    Training mode normalises with the batch statistics (variance as E[x^2] - E[x]^2,
    flax's default) and returns the updated running statistics (PyTorch momentum 0.1).
    """
    if train:
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes)
        var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
        state = {
            "mean": _BN_MOMENTUM * state["mean"] + (1 - _BN_MOMENTUM) * mean,
            "var": _BN_MOMENTUM * state["var"] + (1 - _BN_MOMENTUM) * var,
        }
    else:
        mean, var = state["mean"], state["var"]
    # Scale folded into the per-channel factor: one full-size multiply, as flax does.
    factor = jax.lax.rsqrt(var + _BN_EPSILON) * params["scale"]
    return (x - mean) * factor + params["bias"], state


def _relu_conv_bn(
    x: jnp.ndarray, kernel: jnp.ndarray, bn: Params, stats: State, train: bool, stride: int = 1
) -> tuple[jnp.ndarray, State]:
    y = conv(jax.nn.relu(x), kernel, stride, kernel.shape[0] // 2)
    return batch_norm(y, bn, stats, train)


class NB201Functional(NamedTuple):
    """The NB201 network of one dataset's shape as ``init`` / ``apply`` functions.

    Attributes:
      num_classes: classifier outputs.
      in_features: input channels.
      channels: ``C`` of the first stage.
      cells_per_stage: ``N``.
      ndim: 1 for signals ``[B, L, C]``, 2 for images ``[B, H, W, C]``.
    """

    num_classes: int
    in_features: int
    channels: int = 16
    cells_per_stage: int = 5
    ndim: int = 2

    def _kernel_shape(self, size: int, cin: int, cout: int) -> tuple[int, ...]:
        return (size,) * self.ndim + (cin, cout)

    def init(self, key: jax.Array) -> tuple[Params, State]:
        """Parameters (lecun-normal kernels, as flax's ``Conv``/``Dense``) and BN statistics.

        All kernels come from one truncated-normal draw, cut and scaled per kernel: the
        same distribution as flax's ``lecun_normal`` with one random-bits kernel in the
        compiled program instead of one per parameter (which cost ~15% of XLA's compile).
        """
        c, n = self.channels, self.cells_per_stage
        shapes: dict[tuple[str, ...], tuple[int, ...]] = {}
        params: Params = {}
        state: State = {}
        shapes[("stem",)] = self._kernel_shape(3, self.in_features, c)
        params["stem_bn"], state["stem_bn"] = _bn_params((c,))
        cin = c
        for stage in range(3):
            f = c * 2**stage
            if stage > 0:
                name = f"reduction_{stage}"
                shapes[(name, "conv_a")] = self._kernel_shape(3, cin, f)
                shapes[(name, "conv_b")] = self._kernel_shape(3, f, f)
                shapes[(name, "downsample")] = self._kernel_shape(1, cin, f)
                red_p: Params = {}
                red_s: State = {}
                red_p["bn_a"], red_s["bn_a"] = _bn_params((f,))
                red_p["bn_b"], red_s["bn_b"] = _bn_params((f,))
                params[name], state[name] = red_p, red_s
            for i in range(n):
                cell_p, cell_s = {}, {}
                for e in range(len(EDGES)):
                    edge_p, edge_s = {}, {}
                    for op, size in (("nor_conv_1x1", 1), ("nor_conv_3x3", 3)):
                        edge_p[op], edge_s[op] = _bn_params((f,))
                        shapes[(f"cell_{stage}_{i}", f"edge_{e}", op, "kernel")] = (
                            self._kernel_shape(size, f, f)
                        )
                    cell_p[f"edge_{e}"], cell_s[f"edge_{e}"] = edge_p, edge_s
                params[f"cell_{stage}_{i}"], state[f"cell_{stage}_{i}"] = cell_p, cell_s
            cin = f
        params["last_bn"], state["last_bn"] = _bn_params((cin,))
        params["classifier"] = {"bias": jnp.zeros((self.num_classes,))}
        shapes[("classifier", "kernel")] = (cin, self.num_classes)

        sizes = [math.prod(shape) for shape in shapes.values()]
        draws = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),))
        offset = 0
        for (*parents, leaf), shape, size in zip(shapes, shapes.values(), sizes):
            fan_in = math.prod(shape[:-1])
            std = 1.0 / math.sqrt(fan_in) / TRUNCATED_NORMAL_STD
            node = params
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = std * draws[offset : offset + size].reshape(shape)
            offset += size
        return params, state

    def apply(
        self, params: Params, state: State, x: jnp.ndarray, genotype: jnp.ndarray, train: bool
    ) -> tuple[jnp.ndarray, State]:
        """Logits of ``x`` for ``int32[6]`` ``genotype``, and the updated BN statistics."""
        new_state: State = {}
        x = conv(x, params["stem"], 1, 1)
        x, new_state["stem_bn"] = batch_norm(x, params["stem_bn"], state["stem_bn"], train)
        for stage in range(3):
            if stage > 0:
                name = f"reduction_{stage}"
                x, new_state[name] = _reduction(x, params[name], state[name], train)
            for i in range(self.cells_per_stage):
                name = f"cell_{stage}_{i}"
                x, new_state[name] = _cell(x, params[name], state[name], genotype, train)
        x, new_state["last_bn"] = batch_norm(x, params["last_bn"], state["last_bn"], train)
        x = jnp.mean(jax.nn.relu(x), axis=tuple(range(1, 1 + self.ndim)))
        logits = x @ params["classifier"]["kernel"] + params["classifier"]["bias"]
        return logits, new_state


def _reduction(x: jnp.ndarray, p: Params, s: State, train: bool) -> tuple[jnp.ndarray, State]:
    """The benchmark's ``ResNetBasicblock`` with stride 2."""
    y, bn_a = _relu_conv_bn(x, p["conv_a"], p["bn_a"], s["bn_a"], train, stride=2)
    y, bn_b = _relu_conv_bn(y, p["conv_b"], p["bn_b"], s["bn_b"], train)
    shortcut = conv(avg_pool(x, 2, stride=2), p["downsample"])
    return shortcut + y, {"bn_a": bn_a, "bn_b": bn_b}


@functools.partial(jax.jit, static_argnames="train")
def _edge(
    h: jnp.ndarray, op: jnp.ndarray, p: Params, s: State, train: bool
) -> tuple[jnp.ndarray, State]:
    """One edge: ``lax.switch`` on ``op`` (an index into ``OPS``); only that op's BN moves."""

    def conv_op(name: str) -> Any:
        def run(h: jnp.ndarray) -> tuple[jnp.ndarray, State]:
            q = p[name]
            y, stats = _relu_conv_bn(h, q["kernel"], q, s[name], train)
            return y, {**s, name: stats}

        return run

    branches = {
        "none": lambda h: (jnp.zeros_like(h), s),
        "skip_connect": lambda h: (h, s),
        "nor_conv_1x1": conv_op("nor_conv_1x1"),
        "nor_conv_3x3": conv_op("nor_conv_3x3"),
        "avg_pool_3x3": lambda h: (avg_pool(h, 3, stride=1, padding=1, include_pad=False), s),
    }
    return jax.lax.switch(op, [branches[name] for name in OPS], h)


def _cell(
    x: jnp.ndarray, p: Params, s: State, genotype: jnp.ndarray, train: bool
) -> tuple[jnp.ndarray, State]:
    """A 4-node cell; node ``j`` sums ``op(node i)`` over its incoming edges ``i -> j``."""
    nodes, new_state = [x], {}
    for node in range(1, 4):
        total = None
        for e, (src, dst) in enumerate(EDGES):
            if dst != node:
                continue
            name = f"edge_{e}"
            out, new_state[name] = _edge(nodes[src], genotype[e], p[name], s[name], train)
            total = out if total is None else total + out
        nodes.append(total)
    return nodes[-1], new_state


def to_flax_variables(
    net: NB201Functional, params: Params, state: State, genotype: Any
) -> dict[str, Any]:
    """One member's parameters as the decoded ``NB201Network``'s ``{"params", "batch_stats"}``.

    Only the ops ``genotype`` chooses are exported, under the decoded network's names.
    """
    g = [int(v) for v in genotype]
    out_p: Params = {
        "stem_conv": {"kernel": params["stem"]},
        "stem_bn": params["stem_bn"],
        "last_bn": params["last_bn"],
        "classifier": params["classifier"],
    }
    out_s: State = {"stem_bn": state["stem_bn"], "last_bn": state["last_bn"]}
    for stage in range(3):
        if stage > 0:
            rp, rs = params[f"reduction_{stage}"], state[f"reduction_{stage}"]
            out_p[f"reduction_{stage}"] = {
                "conv_a": {"Conv_0": {"kernel": rp["conv_a"]}, "BatchNorm_0": rp["bn_a"]},
                "conv_b": {"Conv_0": {"kernel": rp["conv_b"]}, "BatchNorm_0": rp["bn_b"]},
                "downsample": {"kernel": rp["downsample"]},
            }
            out_s[f"reduction_{stage}"] = {
                "conv_a": {"BatchNorm_0": rs["bn_a"]},
                "conv_b": {"BatchNorm_0": rs["bn_b"]},
            }
        for i in range(net.cells_per_stage):
            name = f"cell_{stage}_{i}"
            cell_p, cell_s = {}, {}
            for e, op in enumerate(g):
                if OPS[op] not in ("nor_conv_1x1", "nor_conv_3x3"):
                    continue
                q = params[name][f"edge_{e}"][OPS[op]]
                bn = {"scale": q["scale"], "bias": q["bias"]}
                cell_p[f"edge_{e}"] = {
                    OPS[op]: {"Conv_0": {"kernel": q["kernel"]}, "BatchNorm_0": bn}
                }
                stats = state[name][f"edge_{e}"][OPS[op]]
                cell_s[f"edge_{e}"] = {OPS[op]: {"BatchNorm_0": stats}}
            if cell_p:
                out_p[name], out_s[name] = cell_p, cell_s
    return {"params": out_p, "batch_stats": out_s}
