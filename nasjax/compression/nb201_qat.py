"""The NAS-Bench-201 network with per-layer quantization and channel pruning, as functions.

Built from the blocks of :mod:`nasjax.spaces.nb201_functional` (same parameters, same
``init``, same BatchNorm): the architecture is a traced ``int32[6]`` and the compression
policy is traced data too, so ``lax.map``/``vmap`` over a population of differently
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

from nasjax.nets.layers import avg_pool, conv
from nasjax.nets.prune import channel_rank, kept_count, l1_importance, mask_from_rank
from nasjax.nets.quantize import (
    FULL_PRECISION,
    mixed_quantize,
    quantize_activation,
    quantize_weight,
    running_range,
)
from nasjax.spaces.nb201_functional import NB201Functional, batch_norm
from nasjax.spaces.nb201_net import EDGES, OPS

UNITS: tuple[str, ...] = ("stem", "stage0", "reduce1", "stage1", "reduce2", "stage2", "head")
"""Compression units: the stem conv, each stage's cell convs, each reduction block's three
convs, the classifier. The head has bit-widths only (its outputs are the classes)."""

Params = dict[str, Any]
State = dict[str, Any]
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


def _qconv(
    ctx: _Ctx,
    x: jax.Array,
    kernel: jax.Array,
    unit: dict,
    old_range: jax.Array,
    signed: bool = False,
    stride: int = 1,
) -> tuple[jax.Array, jax.Array]:
    xq, r = _aq(ctx, x, old_range, unit, signed)
    return conv(xq, _wq(ctx, kernel, unit), stride, kernel.shape[0] // 2), r


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
        bn_train = train and not calibrate
        ranks = self._stream_ranks(params, arch)
        new: State = {"step": state["step"] + (1 if bn_train else 0)}
        unit = policy["stem"]
        y, new["stem_range"] = _qconv(ctx, x, params["stem"], unit, state["stem_range"], True)
        y, new["stem_bn"] = batch_norm(y, params["stem_bn"], state["stem_bn"], bn_train)
        x = y * self._mask(ctx, ranks[0], unit)
        for stage in range(3):
            if stage > 0:
                name = f"reduction_{stage}"
                unit = policy[f"reduce{stage}"]
                x, new[name] = self._reduction(
                    ctx, x, params[name], state[name], unit, ranks, stage
                )
            unit = policy[f"stage{stage}"]
            for i in range(self.base.cells_per_stage):
                name = f"cell_{stage}_{i}"
                mask = self._mask(ctx, ranks[stage], unit)
                x, new[name] = self._cell(ctx, x, params[name], state[name], arch, unit, mask)
        x, new["last_bn"] = batch_norm(x, params["last_bn"], state["last_bn"], bn_train)
        x = jnp.mean(jax.nn.relu(x), axis=tuple(range(1, 1 + self.base.ndim)))
        unit = policy["head"]
        xq, new["head_range"] = _aq(ctx, x, state["head_range"], unit, False)
        kernel = _wq(ctx, params["classifier"]["kernel"], unit)
        return xq @ kernel + params["classifier"]["bias"], new

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

    @staticmethod
    def _mask(ctx: _Ctx, rank: jax.Array, unit: dict) -> jax.Array:
        count = kept_count(unit["k"], rank.size)
        return jnp.where(ctx.on, mask_from_rank(rank, count), 1.0)

    # -------------------------------------------------------------- blocks
    def _reduction(
        self,
        ctx: _Ctx,
        x: jax.Array,
        p: Params,
        s: State,
        unit: dict,
        ranks: list[jax.Array],
        stage: int,
    ) -> tuple[jax.Array, State]:
        inner = self._mask(ctx, ranks[2 + stage], unit)
        outer = self._mask(ctx, ranks[stage], unit)
        bn_train = ctx.train and not ctx.calibrate
        y, ra = _qconv(ctx, jax.nn.relu(x), p["conv_a"], unit, s["ra"], stride=2)
        y, bn_a = batch_norm(y, p["bn_a"], s["bn_a"], bn_train)
        y, rb = _qconv(ctx, jax.nn.relu(y * inner), p["conv_b"], unit, s["rb"])
        y, bn_b = batch_norm(y, p["bn_b"], s["bn_b"], bn_train)
        short, rd = _qconv(ctx, avg_pool(x, 2, stride=2), p["downsample"], unit, s["rd"], True)
        out = (short + y) * outer
        return out, {"bn_a": bn_a, "bn_b": bn_b, "ra": ra, "rb": rb, "rd": rd}

    def _cell(
        self,
        ctx: _Ctx,
        x: jax.Array,
        p: Params,
        s: State,
        arch: jax.Array,
        unit: dict,
        mask: jax.Array,
    ) -> tuple[jax.Array, State]:
        nodes, new = [x], {}
        for node in range(1, 4):
            total = None
            for e, (src, dst) in enumerate(EDGES):
                if dst != node:
                    continue
                name = f"edge_{e}"
                out, new[name] = _edge(ctx, nodes[src], arch[e], p[name], s[name], unit, mask)
                total = out if total is None else total + out
            nodes.append(total)
        return nodes[-1], new


def _edge(
    ctx: _Ctx,
    h: jax.Array,
    op: jax.Array,
    p: Params,
    s: State,
    unit: dict,
    mask: jax.Array,
) -> tuple[jax.Array, State]:
    """One cell edge: ``lax.switch`` on the op; a conv op quantizes, prunes and moves its
    BatchNorm statistics and activation range, the others leave the state unchanged."""
    bn_train = ctx.train and not ctx.calibrate

    def conv_op(name: str) -> Any:
        def run(h: jax.Array) -> tuple[jax.Array, State]:
            y, r = _qconv(ctx, jax.nn.relu(h), p[name]["kernel"], unit, s["range"])
            y, stats = batch_norm(y, p[name], s[name], bn_train)
            return y * mask, {**s, name: stats, "range": r}

        return run

    branches = {
        "none": lambda h: (jnp.zeros_like(h), s),
        "skip_connect": lambda h: (h, s),
        "nor_conv_1x1": conv_op("nor_conv_1x1"),
        "nor_conv_3x3": conv_op("nor_conv_3x3"),
        "avg_pool_3x3": lambda h: (avg_pool(h, 3, stride=1, padding=1, include_pad=False), s),
    }
    return jax.lax.switch(op, [branches[name] for name in OPS], h)
