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

The forward pass itself is :func:`nasjax.spaces.nb201_forward.forward` with the plain
:class:`~nasjax.spaces.nb201_forward.Layers`' values; this module holds the parameter
layout (``init``), the export to Flax and two hand-written backward passes
(:class:`FastLayers`), which is where population training spends its time:

* each edge is a ``jax.custom_vjp`` whose backward is a second ``lax.switch`` over the
  ops' backward passes. Differentiating the plain ``lax.switch`` makes every branch
  return the residuals of *all* branches (zeros for the others: im2col columns, centred
  activations, the idle op's parameter gradients): about nine activation-sized fills and
  copies per edge and step. Here the only residual is the chosen convolution's output
  before BatchNorm (zeros for the other ops), and the backward recomputes the ReLU and
  im2col columns (slices) instead of storing them;
* BatchNorm in training mode has the closed-form backward
  ``dx = scale * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))``, which keeps no centred
  copy of its input.

Measured on the 2-core CPU, population training at P=32 (1D network, C=16, N=1, one
MNIST-1D epoch), both programs in one process, runs interleaved, other jobs sharing the
machine: these two and the separable pooling of :func:`nasjax.nets.layers.avg_pool` make
it 1.26x faster than differentiating the plain switch (0.506 vs 0.639 s per
architecture-epoch; the edges alone 1.2-1.25x), and XLA compiles it in 10.9 s instead of
13.8 s. The running statistics a training step returns are buffers, as in PyTorch: no
gradient flows through them. Forward-mode differentiation works through reverse mode
(``jax.jvp`` of a ``jax.grad``, as GraSP's Hessian-vector product), not on ``apply``
alone.

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

from nasjax.nets.layers import BN_EPSILON, conv
from nasjax.spaces.nb201_forward import (
    Layers,
    Params,
    Site,
    State,
    avg_pool_3x3,
    batch_norm,
    forward,
)
from nasjax.spaces.nb201_net import EDGES, OPS

TRUNCATED_NORMAL_STD = 0.87962566103423978
"""Standard deviation of a unit normal truncated to [-2, 2]; lecun-normal divides by it."""


def _bn_params(shape: tuple[int, ...]) -> tuple[Params, State]:
    return (
        {"scale": jnp.ones(shape), "bias": jnp.zeros(shape)},
        {"mean": jnp.zeros(shape), "var": jnp.ones(shape)},
    )


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
        return forward(FastLayers(train), params, state, x, genotype, self.cells_per_stage)


# ---------------------------------------------------------------- hand-written backward
def _moments(y: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Batch mean and ``rsqrt(var + eps)`` over every axis but the last, as
    :func:`~nasjax.spaces.nb201_forward.batch_norm` computes them (var = E[y^2] - E[y]^2)."""
    axes = tuple(range(y.ndim - 1))
    mean = jnp.mean(y, axes)
    var = jnp.maximum(jnp.mean(jnp.square(y), axes) - jnp.square(mean), 0.0)
    return mean, jax.lax.rsqrt(var + BN_EPSILON)


def _bn_backward(
    y: jnp.ndarray, scale: jnp.ndarray, mean: jnp.ndarray, rstd: jnp.ndarray,
    dout: jnp.ndarray, batch_stats: bool,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:  # fmt: skip
    """``(dy, dscale, dbias)`` of ``out = (y - mean) * rstd * scale + bias``; with
    ``batch_stats`` the mean and rstd are ``y``'s own (training mode)."""
    axes = tuple(range(y.ndim - 1))
    xhat = (y - mean) * rstd
    dbias = jnp.sum(dout, axes)
    dscale = jnp.sum(dout * xhat, axes)
    if not batch_stats:
        return dout * (scale * rstd), dscale, dbias
    n = y.size // y.shape[-1]
    return (scale * rstd) * (dout - dbias / n - xhat * (dscale / n)), dscale, dbias


@jax.custom_vjp
def _batch_norm_train(y: jnp.ndarray, params: Params, stats: State) -> tuple[jnp.ndarray, State]:
    return batch_norm(y, params, stats, True)


def _batch_norm_train_fwd(y: jnp.ndarray, params: Params, stats: State) -> tuple[Any, Any]:
    out = batch_norm(y, params, stats, True)
    return out, (y, params["scale"], *_moments(y))


def _batch_norm_train_bwd(res: tuple, cts: tuple) -> tuple:
    y, scale, mean, rstd = res
    dy, dscale, dbias = _bn_backward(y, scale, mean, rstd, cts[0], True)
    return dy, {"scale": dscale, "bias": dbias}, None


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def _pre_bn(h: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """A convolution op before its BatchNorm: ReLU, then the convolution."""
    return conv(jax.nn.relu(h), kernel, 1, kernel.shape[0] // 2)


def _edge_forward(train: bool) -> list:
    """One branch per op: ``(h, p, s) -> (out, new s, residuals)``; residuals are the
    convolution's output before BatchNorm and its batch moments (zeros for other ops)."""

    def conv_op(name: str) -> Any:
        def run(h: jnp.ndarray, p: Params, s: State) -> tuple:
            y = _pre_bn(h, p[name]["kernel"])
            out, stats = batch_norm(y, p[name], s[name], train)
            moments = _moments(y) if train else (s[name]["mean"], s[name]["var"])
            return out, {**s, name: stats}, (y, *moments)

        return run

    def other(op: Any) -> Any:
        def run(h: jnp.ndarray, p: Params, s: State) -> tuple:
            c = jnp.zeros(h.shape[-1:], h.dtype)
            return op(h), s, (jnp.zeros_like(h), c, c)

        return run

    branches = {
        "none": other(jnp.zeros_like),
        "skip_connect": other(lambda h: h),
        "avg_pool_3x3": other(avg_pool_3x3),
    }
    return [branches[name] if name in branches else conv_op(name) for name in OPS]


def _edge_backward(train: bool) -> list:
    """One branch per op: ``(h, p, residuals, dout) -> (dh, dp)``."""
    zeros = lambda p: jax.tree.map(jnp.zeros_like, p)

    def conv_op(name: str) -> Any:
        def run(h: jnp.ndarray, p: Params, res: tuple, dout: jnp.ndarray) -> tuple:
            y, mean, moment = res
            rstd = moment if train else jax.lax.rsqrt(moment + BN_EPSILON)
            dy, dscale, dbias = _bn_backward(y, p[name]["scale"], mean, rstd, dout, train)
            _, pullback = jax.vjp(_pre_bn, h, p[name]["kernel"])
            dh, dkernel = pullback(dy)
            dp = zeros(p)
            dp[name] = {"kernel": dkernel, "scale": dscale, "bias": dbias}
            return dh, dp

        return run

    def pool(h: jnp.ndarray, p: Params, res: tuple, dout: jnp.ndarray) -> tuple:
        return jax.vjp(avg_pool_3x3, h)[1](dout)[0], zeros(p)

    branches = {
        "none": lambda h, p, res, dout: (jnp.zeros_like(h), zeros(p)),
        "skip_connect": lambda h, p, res, dout: (dout, zeros(p)),
        "avg_pool_3x3": pool,
    }
    return [branches[name] if name in branches else conv_op(name) for name in OPS]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _edge(h: jnp.ndarray, op: jnp.ndarray, p: Params, s: State, train: bool) -> tuple:
    out, new, _ = jax.lax.switch(op, _edge_forward(train), h, p, s)
    return out, new


def _edge_fwd(h: jnp.ndarray, op: jnp.ndarray, p: Params, s: State, train: bool) -> tuple:
    out, new, res = jax.lax.switch(op, _edge_forward(train), h, p, s)
    return (out, new), (h, op, p, res)


def _edge_bwd(train: bool, saved: tuple, cts: tuple) -> tuple:
    h, op, p, res = saved
    dh, dp = jax.lax.switch(op, _edge_backward(train), h, p, res, cts[0])
    return dh, None, dp, None


_edge.defvjp(_edge_fwd, _edge_bwd)


@functools.partial(jax.jit, static_argnames="train")
def _cached_edge(
    h: jnp.ndarray, op: jnp.ndarray, p: Params, s: State, train: bool
) -> tuple[jnp.ndarray, State]:
    """:func:`_edge` traced once per shape (a nested ``jit``: shorter tracing)."""
    return _edge(h, op, p, s, train)


class FastLayers(Layers):
    """The plain network's values with hand-written backward passes (module docstring):
    what :meth:`NB201Functional.apply` runs."""

    def bn(self, y: jnp.ndarray, params: Params, stats: State) -> tuple[jnp.ndarray, State]:
        """BatchNorm; in training mode with the closed-form backward."""
        if not self.train:
            return batch_norm(y, params, stats, False)
        return _batch_norm_train(y, params, stats)

    def edge(
        self, h: jnp.ndarray, arch: Any, e: int, p: Params, s: State, site: Site
    ) -> tuple[jnp.ndarray, State]:
        """Edge ``e``: ``lax.switch`` on ``arch[e]``, backward by a second switch."""
        del site
        return _cached_edge(h, arch[e], p, s, self.train)


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
