"""The NAS-Bench-201 network with per-layer quantization and channel pruning, as functions.

The walk of :func:`nasjax.spaces.nb201_forward.forward` with quantizing, pruning hooks
(same parameters and ``init`` as :mod:`nasjax.spaces.nb201_functional`, same BatchNorm;
NAS-Bench-201, Dong & Yang, ICLR 2020): the architecture is a traced ``int32[6]`` and the
compression policy is traced data too, so ``lax.map``/``vmap`` over a population of differently
compressed networks is one compiled program (APQ, Wang et al., CVPR 2020, searched the
same three things jointly; HAQ, Wang et al., CVPR 2019, the per-layer bits).

The policy has one entry per *unit* (``UNITS``): ``w``/``a`` are the weight/activation
bit-widths (scalars, or ``float[K]`` one-hot-like weights over ``bit_choices`` for the
differentiable search of Wu et al. 2018), ``k`` the kept-channel fraction.

* Every convolution and the classifier quantize their weights per output channel and their
  input activation per tensor (:mod:`nasjax.nets.quantize`); activation ranges are
  running maxima kept next to the BatchNorm statistics (``state[...]["range"]``).
* Pruned channels are zeroed after the layer's BatchNorm. The layers writing into one
  stage's stream (stem or reduction output, every cell conv) keep prefixes of one shared
  L1 ranking (:mod:`nasjax.nets.prune`), so the live channels after each sum are
  a prefix too, as :mod:`nasjax.compression.costs` counts them.
* ``state["step"]`` counts training steps; before ``float_steps`` the network trains at
  full precision and unpruned, after it with the policy (a QAT fine-tune within one
  training run).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nasjax.nets.layers import conv
from nasjax.nets.prune import channel_rank, kept_count, l1_importance, mask_from_rank
from nasjax.nets.quantize import (
    FULL_PRECISION,
    mixed_quantize,
    quantize_activation,
    quantize_weight,
    running_range,
)
from nasjax.spaces.nb201_forward import Layers, Params, Site, State, forward
from nasjax.spaces.nb201_functional import NB201Functional
from nasjax.spaces.nb201_net import EDGES, OPS

UNITS: tuple[str, ...] = ("stem", "stage0", "reduce1", "stage1", "reduce2", "stage2", "head")
"""Compression units: the stem conv, each stage's cell convs, each reduction block's three
convs, the classifier. The head has bit-widths only (its outputs are the classes)."""

Policy = dict[str, dict[str, jax.Array]]

_CONV_OPS = {"nor_conv_1x1": OPS.index("nor_conv_1x1"), "nor_conv_3x3": OPS.index("nor_conv_3x3")}


class _Ctx(NamedTuple):
    """What every layer needs: mode, whether the policy is on, the bit choices."""

    train: bool
    calibrate: bool
    on: jax.Array
    bit_choices: tuple[int, ...]


def _bits(ctx: _Ctx, bits: jax.Array) -> jax.Array:
    return jnp.where(ctx.on, bits, FULL_PRECISION) if jnp.ndim(bits) == 0 else bits


def _wq(ctx: _Ctx, kernel: jax.Array, unit: dict) -> jax.Array:
    bits = unit["w"]
    if jnp.ndim(bits) == 0:
        return quantize_weight(kernel, _bits(ctx, bits))
    mixed = mixed_quantize(lambda b: quantize_weight(kernel, b), bits, ctx.bit_choices)
    return jnp.where(ctx.on, mixed, kernel)


def _aq(ctx: _Ctx, x: jax.Array, old: jax.Array, unit: dict, signed: bool):
    """Quantized activation and its updated range."""
    if ctx.calibrate:
        r = jax.lax.stop_gradient(jnp.max(jnp.abs(x)))
    elif ctx.train:
        r = running_range(old, x)
    else:
        r = old
    bits = unit["a"]
    if jnp.ndim(bits) == 0:
        return quantize_activation(x, _bits(ctx, bits), r, signed), r
    mixed = mixed_quantize(lambda b: quantize_activation(x, b, r, signed), bits, ctx.bit_choices)
    return jnp.where(ctx.on, mixed, x), r


def _chosen_l1(p: Params, op: jax.Array) -> jax.Array:
    total = 0.0
    for name, index in _CONV_OPS.items():
        total = total + jnp.where(op == index, l1_importance(p[name]["kernel"]), 0.0)
    return total


class CompressedNB201(NamedTuple):
    """NB201 network (``NB201Functional``'s shapes) under a traced compression policy.

    ``apply(params, state, x, genotype, train)`` has the interface of
    ``NB201Functional.apply``, so :func:`nasjax.evaluation.training.train_population`
    trains it; ``genotype`` is a :class:`nasjax.spaces.compress.CompressedSpace` genotype.
    """

    base: NB201Functional
    decode_policy: Any  # genotype -> (arch int32[6], Policy); a static, hashable callable
    bit_choices: tuple[int, ...]
    float_steps: int = 0

    def init(self, key: jax.Array) -> tuple[Params, State]:
        """The base network's parameters; its statistics plus activation ranges and a step."""
        params, state = self.base.init(key)
        zero = jnp.zeros((), jnp.float32)
        state["stem_range"], state["head_range"] = zero, zero
        for name in list(state):
            if name.startswith("reduction_"):
                state[name] = {**state[name], "ra": zero, "rb": zero, "rd": zero}
            if name.startswith("cell_"):
                for e in state[name]:
                    state[name][e] = {**state[name][e], "range": zero}
        state["step"] = jnp.zeros((), jnp.int32)
        return params, state

    def apply(
        self, params: Params, state: State, x: jax.Array, genotype: jax.Array, train: bool
    ) -> tuple[jax.Array, State]:
        """Logits and updated state for a compressed genotype (see the module doc)."""
        arch, policy = self.decode_policy(genotype)
        return self.apply_policy(params, state, x, arch, policy, train)

    def calibrate(self, params: Params, state: State, x: jax.Array, genotype: jax.Array) -> State:
        """Post-training quantization: activation ranges set to ``max|x|`` of a calibration
        batch ``x`` (BatchNorm in inference mode); returns the new state."""
        arch, policy = self.decode_policy(genotype)
        _, new = self.apply_policy(params, state, x, arch, policy, False, calibrate=True)
        return new

    def apply_policy(
        self,
        params: Params,
        state: State,
        x: jax.Array,
        arch: jax.Array,
        policy: Policy,
        train: bool,
        calibrate: bool = False,
    ) -> tuple[jax.Array, State]:
        """Forward pass for an explicit ``arch`` (``int32[6]``) and ``policy``."""
        on = state["step"] >= self.float_steps if train else jnp.bool_(True)
        ctx = _Ctx(train, calibrate, on, self.bit_choices)
        layers = _QatLayers(ctx, policy, self._stream_ranks(params, arch))
        logits, new = forward(layers, params, state, x, arch, self.base.cells_per_stage)
        return logits, {**new, "step": state["step"] + (1 if layers.train else 0)}

    # -------------------------------------------------------------- pruning
    def _stream_ranks(self, params: Params, arch: jax.Array) -> list[jax.Array]:
        """One L1 ranking per stage stream, plus each reduction's internal one."""
        ranks = []
        for stage in range(3):
            if stage == 0:
                total = l1_importance(params["stem"])
            else:
                red = params[f"reduction_{stage}"]
                total = l1_importance(red["conv_b"]) + l1_importance(red["downsample"])
            for i in range(self.base.cells_per_stage):
                cell = params[f"cell_{stage}_{i}"]
                for e in range(len(EDGES)):
                    total = total + _chosen_l1(cell[f"edge_{e}"], arch[e])
            ranks.append(channel_rank(total))
        for stage in (1, 2):
            ranks.append(channel_rank(l1_importance(params[f"reduction_{stage}"]["conv_a"])))
        return ranks


_RANGE_KEYS = {"stem": "stem_range", "conv_a": "ra", "conv_b": "rb", "downsample": "rd"}
"""Where a layer keeps its activation range in its state container (cell convs: "range")."""


class _QatLayers(Layers):
    """The walk's hooks under a policy: quantizing convs and classifier, channel masks."""

    def __init__(self, ctx: _Ctx, policy: Policy, ranks: list[jax.Array]) -> None:
        super().__init__(train=ctx.train and not ctx.calibrate)
        self.ctx, self.policy, self.ranks = ctx, policy, ranks

    def conv(
        self, x: jax.Array, kernel: jax.Array, site: Site, s: State, signed: bool, stride: int
    ) -> tuple[jax.Array, State]:
        """Fake-quantized input (range kept in ``s``) and weights, then the conv."""
        unit, key = self.policy[site.unit], _RANGE_KEYS.get(site.layer, "range")
        xq, r = _aq(self.ctx, x, s[key], unit, signed)
        y = conv(xq, _wq(self.ctx, kernel, unit), stride, kernel.shape[0] // 2)
        return y, {**s, key: r}

    def mask(self, y: jax.Array, site: Site, inner: bool = False) -> jax.Array:
        """Zeroes the pruned channels: prefixes of the stream's (or the block's) ranking."""
        rank = self.ranks[2 + site.stage if inner else site.stage]
        count = kept_count(self.policy[site.unit]["k"], rank.size)
        return y * jnp.where(self.ctx.on, mask_from_rank(rank, count), 1.0)

    def dense(self, x: jax.Array, params: Params, site: Site, s: State) -> tuple[jax.Array, State]:
        """The classifier with quantized input and weights."""
        unit = self.policy[site.unit]
        xq, r = _aq(self.ctx, x, s["head_range"], unit, False)
        kernel = _wq(self.ctx, params["kernel"], unit)
        return xq @ kernel + params["bias"], {**s, "head_range": r}
