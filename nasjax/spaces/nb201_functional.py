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
:class:`~nasjax.spaces.nb201_forward.Layers` (edges traced once per shape); this module
holds the parameter layout (``init``) and the export to Flax.

:func:`to_flax_variables` turns one member's parameters into the decoded
``NB201Network``'s variables, which is how the tests pin this formulation to the Flax
one and how a trained member is exported.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nasjax.spaces.nb201_forward import CachedLayers, Params, State, forward
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
        return forward(CachedLayers(train), params, state, x, genotype, self.cells_per_stage)


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
