"""Exact costs of a compressed NAS-Bench-201 network: size in bits, BitOps, MACs removed.

Counted layer by layer for one example, with the channel bookkeeping of
:mod:`nasjax.compression.nb201_qat` (prefix masks of one L1 ranking per stage stream):

* a pruned output channel removes that filter (its weights, BatchNorm scale and bias, and
  its MACs); a channel that is dead at a layer's *input* (every contribution to it pruned
  or ``none``) removes that input slice of the next layer's weights and MACs. The live
  channels of a cell node are the most of any incoming edge (a conv edge's kept count, a
  skip or pooling edge's source count, ``none`` nothing); a reduction block's output has
  its kept count. A dead channel reaching the final BatchNorm becomes a constant feature,
  folded into the classifier bias, so the classifier reads only the live ones.
* ``weight_bits``: every conv and classifier weight times its layer's weight bit-width.
  ``bits_total`` adds the 32-bit BatchNorm scales and biases of kept channels and the
  classifier bias (the float vectors a deployed int model keeps).
* ``bitops``: per layer MACs x weight bits x activation bits (full precision counts as 32),
  the measure of Wu et al. (2018) and APQ (Wang et al., CVPR 2020).
* ``mac_fraction_removed``: ``1 - macs_kept / macs_dense``, ``macs_dense`` being the same
  architecture unpruned (which equals :func:`nasjax.objectives.count_macs` of the decoded
  network; at 32 bits and no pruning ``bits_total`` is 32 x its parameter count -- tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nasjax.nets.prune import kept_channels
from nasjax.nets.quantize import FULL_PRECISION
from nasjax.spaces.nb201_net import EDGES, OPS

_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
FLOAT_BITS = 32


def _layer(name: str, positions: int, window: int, cin: int, cout: int, unit: Any) -> dict:
    weights = window * cin * cout
    w, a = unit[0], unit[1]
    return {
        "layer": name,
        "weights": weights,
        "macs": positions * weights,
        "w_bits": w,
        "a_bits": a,
        "bn_params": 0,
    }


def _downsampled(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple((n - 1) // 2 + 1 for n in shape)


def nb201_layers(
    arch: Sequence[int],
    policy: Mapping[str, Sequence[float]],
    *,
    spatial: Sequence[int],
    in_features: int,
    num_classes: int,
    channels: int,
    cells_per_stage: int,
) -> list[dict]:
    """Per-layer ``weights``, ``macs``, ``w_bits``, ``a_bits`` and ``bn_params`` (live ones).

    Args:
      arch: the NB201 genotype (6 op indices).
      policy: unit name -> ``(w_bits, a_bits, keep_ratio)`` (the head's keep is ignored).
      spatial: the input's spatial shape, e.g. ``(40,)``.
      in_features, num_classes: input channels and classes.
      channels, cells_per_stage: ``C`` and ``N`` of the network.
    """
    ndim, layers = len(spatial), []
    shape = tuple(spatial)
    unit = policy["stem"]
    alive = kept_channels(unit[2], channels)
    layers.append(_layer("stem", math.prod(shape), 3**ndim, in_features, alive, unit))
    layers[-1]["bn_params"] = 2 * alive
    for stage in range(3):
        f = channels * 2**stage
        if stage > 0:
            unit = policy[f"reduce{stage}"]
            kept = kept_channels(unit[2], f)
            shape = _downsampled(shape)
            pos = math.prod(shape)
            name = f"reduction_{stage}"
            layers.append(_layer(f"{name}.conv_a", pos, 3**ndim, alive, kept, unit))
            layers[-1]["bn_params"] = 2 * kept
            layers.append(_layer(f"{name}.conv_b", pos, 3**ndim, kept, kept, unit))
            layers[-1]["bn_params"] = 2 * kept
            layers.append(_layer(f"{name}.downsample", pos, 1, alive, kept, unit))
            alive = kept
        unit = policy[f"stage{stage}"]
        kept = kept_channels(unit[2], f)
        for i in range(cells_per_stage):
            nodes = [alive]
            for node in range(1, 4):
                live = 0
                for e, (src, dst) in enumerate(EDGES):
                    if dst != node:
                        continue
                    op = OPS[arch[e]]
                    if op in _KERNEL:
                        name = f"cell_{stage}_{i}.edge_{e}.{op}"
                        window = _KERNEL[op] ** ndim
                        layers.append(
                            _layer(name, math.prod(shape), window, nodes[src], kept, unit)
                        )
                        layers[-1]["bn_params"] = 2 * kept
                        live = max(live, kept)
                    elif op != "none":
                        live = max(live, nodes[src])
                nodes.append(live)
            alive = nodes[-1]
    layers.append(_layer("classifier", 1, 1, alive, num_classes, policy["head"]))
    layers[-1]["bn_params"] = 2 * alive + num_classes  # last BatchNorm + classifier bias
    return layers


def summarize(layers: list[dict], dense_layers: list[dict]) -> dict[str, float]:
    """Totals of :func:`nb201_layers`: ``weight_bits``, ``bits_total``, ``bitops``,
    ``macs_kept``, ``macs_dense``, ``mac_fraction_removed``, ``params_kept`` and ``bits_dense`` (the
    unpruned network at 32 bits)."""

    def bits(x: float) -> float:
        return min(float(x), FULL_PRECISION)

    weight_bits = sum(layer["weights"] * bits(layer["w_bits"]) for layer in layers)
    float_params = sum(layer["bn_params"] for layer in layers)
    macs = sum(layer["macs"] for layer in layers)
    dense = sum(layer["macs"] for layer in dense_layers)
    return {
        "weight_bits": int(weight_bits),
        "bits_total": int(weight_bits + FLOAT_BITS * float_params),
        "bitops": int(
            sum(layer["macs"] * bits(layer["w_bits"]) * bits(layer["a_bits"]) for layer in layers)
        ),
        "macs_kept": int(macs),
        "macs_dense": int(dense),
        "mac_fraction_removed": 1.0 - macs / dense if dense else 0.0,
        "params_kept": int(sum(layer["weights"] for layer in layers) + float_params),
        "bits_dense": int(
            FLOAT_BITS * sum(layer["weights"] + layer["bn_params"] for layer in dense_layers)
        ),
    }
