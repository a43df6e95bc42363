"""The compression space: strings, errors, exact hand-counted costs, the compressed network."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import cli
from nasjax.compression.nb201_qat import UNITS
from nasjax.errors import NasjaxError
from nasjax.objectives import network_cost
from nasjax.relaxation.bit_search import expected_cost, unit_costs
from nasjax.spaces import make_space
from nasjax.spaces.compress import CompressedSpace
from nasjax.spaces.nb201 import NB201Space

CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
POLICY = {
    "stem": (8, 8, 0.5),
    "stage0": (4, 4, 0.75),
    "reduce1": (2, 8, 0.5),
    "stage1": (8, 4, 1.0),
    "reduce2": (6, 6, 0.25),
    "stage2": (4, 8, 0.5),
    "head": (8, 8, 1.0),
}
NET = {"channels": 4, "cells_per_stage": 1}


@pytest.fixture(scope="module")
def space() -> CompressedSpace:
    return make_space("compress:nb201")


def _genotype(space: CompressedSpace, cell: str = CELL, policy: dict = POLICY) -> np.ndarray:
    return space.encode(NB201Space().from_string(cell), policy)


def test_registry_and_string_round_trip(space):
    assert isinstance(space, CompressedSpace) and space.num_decisions == 6 + 6 * 3 + 2
    g = _genotype(space)
    text = space.to_string(g)
    assert text.endswith(
        ";stem=w8a8k0.5,stage0=w4a4k0.75,reduce1=w2a8k0.5,stage1=w8a4k1,"
        "reduce2=w6a6k0.25,stage2=w4a8k0.5,head=w8a8"
    )
    np.testing.assert_array_equal(space.from_string(text), g)
    for sample in np.asarray(space.sample(jax.random.key(0), 20)):
        np.testing.assert_array_equal(space.from_string(space.to_string(sample)), sample)
    fixed = CompressedSpace(fixed_arch=tuple(int(v) for v in NB201Space().from_string(CELL)))
    assert fixed.num_decisions == 20
    np.testing.assert_array_equal(fixed.from_string(text), g[6:])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("stem=w8a8k0.5", "stem=w3a8k1", "weight bit-width 3 of stem is not in the space; valid"),
        ("stem=w8a8k0.5", "stem=w8a7k1", "activation bit-width 7 of stem"),
        ("stem=w8a8k0.5", "stem=w8a8k0.3", "keep-ratio 0.3 of stem is not in the space; valid"),
        ("stem=", "trunk=", "unknown unit 'trunk'.*valid choices: stem, stage0"),
        ("stem=w8a8k0.5", "stem=w8a8", "malformed policy 'w8a8' of stem"),
        (",head=w8a8", "", "misses units head"),
        (";", "", "malformed compressed arch"),
    ],
)
def test_bad_strings_name_the_value_and_the_choices(space, old, new, message):
    text = space.to_string(_genotype(space))
    with pytest.raises(NasjaxError, match=message):
        space.from_string(text.replace(old, new))


def test_bad_base_part_and_out_of_range_genes(space):
    with pytest.raises(NasjaxError, match="unknown op 'conv_9x9'"):
        space.from_string(CELL.replace("nor_conv_3x3", "conv_9x9") + ";stem=w8a8k1")
    g = _genotype(space)
    bad_base = g.copy()
    bad_base[2] = 7
    with pytest.raises(NasjaxError, match="invalid base architecture part"):
        space.validate(bad_base)
    assert not bool(space.is_valid(bad_base))
    bad_gene = g.copy()
    bad_gene[6 + 3] = 9  # stage0's weight bits
    with pytest.raises(NasjaxError, match=r"stage0.w = 9 \(valid 0..4\)"):
        space.validate(bad_gene)
    with pytest.raises(NasjaxError, match="differs from this space's fixed one"):
        CompressedSpace(fixed_arch=(3,) * 6).from_string(space.to_string(g))


def test_bad_choices_and_a_keep_ratio_that_removes_every_channel():
    with pytest.raises(NasjaxError, match="keep-ratio 0.0 is outside"):
        CompressedSpace(keep_ratios=(0.0, 1.0))
    with pytest.raises(NasjaxError, match="bit-width 1 is not supported"):
        CompressedSpace(bit_choices=(1, 8))
    with pytest.raises(NasjaxError, match="removes every one of 2 channels"):
        CompressedSpace().functional("mnist1d", channels=2, cells_per_stage=1)
    with pytest.raises(NasjaxError, match="valid choices: nb201"):
        make_space("compress:darts")


def test_costs_equal_a_hand_count(space):
    """MNIST-1D (1 input channel, length 40, 10 classes), C=4, one cell per stage."""
    # (weights, positions, w bits, a bits, float params) per layer; input channels are the
    # live channels of the producing layer (pruned stem -> 2 inputs for cell 0's conv).
    layers = [
        (3 * 1 * 2, 40, 8, 8, 2 * 2),  # stem: keep 0.5 of 4 -> 2
        (3 * 2 * 3, 40, 4, 4, 2 * 3),  # cell0 e0 3x3: 2 live in -> 3 kept (0.75 of 4)
        (1 * 3 * 3, 40, 4, 4, 2 * 3),  # cell0 e2 1x1 (node1 has 3)
        (1 * 3 * 3, 40, 4, 4, 2 * 3),  # cell0 e5 1x1 (node2 = max(skip 2, conv 3))
        (3 * 3 * 4, 20, 2, 8, 2 * 4),  # reduce1 conv_a: 3 live in -> 4 (0.5 of 8)
        (3 * 4 * 4, 20, 2, 8, 2 * 4),  # reduce1 conv_b
        (1 * 3 * 4, 20, 2, 8, 0),  # reduce1 downsample
        (3 * 4 * 8, 20, 8, 4, 2 * 8),  # cell1 e0: keep 1 of 8
        (1 * 8 * 8, 20, 8, 4, 2 * 8),  # cell1 e2
        (1 * 8 * 8, 20, 8, 4, 2 * 8),  # cell1 e5
        (3 * 8 * 4, 10, 6, 6, 2 * 4),  # reduce2 conv_a: 8 in -> 4 (0.25 of 16)
        (3 * 4 * 4, 10, 6, 6, 2 * 4),  # reduce2 conv_b
        (1 * 8 * 4, 10, 6, 6, 0),  # reduce2 downsample
        (3 * 4 * 8, 10, 4, 8, 2 * 8),  # cell2 e0: 4 in -> 8 (0.5 of 16)
        (1 * 8 * 8, 10, 4, 8, 2 * 8),  # cell2 e2
        (1 * 8 * 8, 10, 4, 8, 2 * 8),  # cell2 e5
        (8 * 10, 1, 8, 8, 2 * 8 + 10),  # last BN of 8 live channels, classifier + bias
    ]
    costs = space.costs(_genotype(space), "mnist1d", **NET)
    weight_bits = sum(w * wb for w, _, wb, _, _ in layers)
    assert costs["weight_bits"] == weight_bits
    assert costs["bits_total"] == weight_bits + 32 * sum(f for *_, f in layers)
    assert costs["macs_kept"] == sum(w * p for w, p, *_ in layers)
    assert costs["bitops"] == sum(w * p * wb * ab for w, p, wb, ab, _ in layers)
    dense = network_cost(space.decode(_genotype(space), "mnist1d", **NET), (40, 1))
    assert costs["macs_dense"] == dense["macs"]
    assert costs["mac_fraction_removed"] == pytest.approx(1 - costs["macs_kept"] / dense["macs"])


@pytest.mark.parametrize("cell", [CELL, "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"])
def test_uncompressed_costs_match_the_decoded_network(space, cell):
    g = space.uniform(NB201Space().from_string(cell), 32, 32, 1.0)
    for net in (NET, {"channels": 8, "cells_per_stage": 2}):
        costs = space.costs(g, "mnist1d", **net)
        dense = network_cost(space.decode(g, "mnist1d", **net), (40, 1))
        assert costs["bits_total"] == costs["bits_dense"] == 32 * dense["params"]
        assert costs["macs_kept"] == costs["macs_dense"] == dense["macs"]
        assert costs["bitops"] == dense["macs"] * 32 * 32


def test_cli_info_prints_the_compression_costs(space, capsys):
    arch = space.to_string(_genotype(space))
    argv = ["info", "--space", "compress:nb201", "--dataset", "mnist1d", "--arch", arch]
    assert cli.main(argv + ["--channels", "4", "--cells-per-stage", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bits_total"] == space.costs(_genotype(space), "mnist1d", **NET)["bits_total"]
    assert {"bitops", "mac_fraction_removed", "compression_ratio", "params"} <= set(record)
    bad = arch.replace("stem=w8a8k0.5", "stem=w3a8k1")
    assert cli.main(["info", "--space", "compress:nb201", "--arch", bad]) == 2
    assert "weight bit-width 3" in capsys.readouterr().err


# ----------------------------------------------------------------- the compressed network
# Marked slow: each compiles the compressed network (the four take ~30 s at load 5 on the
# 2-core CPU, minutes at load 10). One network (float_steps=1), one program per mode: the
# genotype is traced, so every genotype reuses them. ``on`` is a state past the float phase.
SPACE1 = CompressedSpace(float_steps=1)


@pytest.fixture(scope="module")
def net():
    net = SPACE1.functional("mnist1d", **NET)
    params, state = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 40, 1))
    train = jax.jit(lambda p, s, g: net.apply(p, s, x, g, True))
    return {
        "net": net,
        "params": params,
        "state": state,
        "on": {**state, "step": jnp.int32(1)},
        "x": x,
        "train": train,
        "eval": jax.jit(lambda p, s, g: net.apply(p, s, x, g, False)),
    }


def _float64(tree):
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


# Two programs for the same compressed network (vmapped or not, a one-hot or a scalar
# bit-width) round differently, and in float32 an activation can then land on the other
# side of a quantization boundary on one CPU and not another, moving logits by a whole
# step. These comparisons run in float64, where such a flip has negligible probability, so
# their tolerances stay tight (a wrong member or unit policy moves logits by ~1e-1).
@pytest.mark.slow  # compiles the whole compressed network (twice, in float64)
def test_population_under_vmap_equals_member_by_member(net):
    space = SPACE1
    pop = np.stack([_genotype(space), space.uniform(np.array([3] * 6), 2, 2, 0.25)])
    pop = np.concatenate([pop, np.asarray(space.sample(jax.random.key(3), 2))])
    with jax.enable_x64(True):
        params, on = _float64(net["params"]), _float64(net["on"])
        x = net["x"].astype(jnp.float64)

        def forward(g):
            return net["net"].apply(params, on, x, g, True)[0]

        batched = jax.jit(jax.vmap(forward))(jnp.asarray(pop))
        alone = jax.jit(forward)
        assert batched.dtype == jnp.float64
        for i, g in enumerate(pop):
            np.testing.assert_allclose(batched[i], alone(jnp.asarray(g)), rtol=1e-10, atol=1e-10)


@pytest.mark.slow  # compiles the whole compressed network
def test_pruned_filters_get_no_gradient(net):
    g = jnp.asarray(_genotype(SPACE1))

    def loss(p):
        return jnp.sum(net["train"](p, net["on"], g)[0] ** 2)

    grads = jax.jit(jax.grad(loss))(net["params"])
    stem = np.asarray(grads["stem"])  # keep 0.5 of 4 -> exactly 2 dead filters
    assert np.sum(np.all(stem == 0, axis=(0, 1))) == 2
    conv_a = np.asarray(grads["reduction_2"]["conv_a"])  # keep 0.25 of 16 -> 12 dead
    assert np.sum(np.all(conv_a == 0, axis=(0, 1))) == 12


@pytest.mark.slow  # compiles the whole compressed network
def test_float_steps_then_policy_and_ptq_calibration(net):
    params, state, x = net["params"], net["state"], net["x"]
    arch = NB201Space().from_string(CELL)
    full = jnp.asarray(SPACE1.uniform(arch, 32, 32, 1.0))
    low = jnp.asarray(SPACE1.uniform(arch, 2, 2, 0.5))
    out_float, s1 = net["train"](params, state, full)
    out_low, s2 = net["train"](params, state, low)  # step 0 < float_steps: no policy
    np.testing.assert_allclose(out_low, out_float, rtol=1e-5, atol=1e-6)
    assert int(s2["step"]) == 1
    out_on, _ = net["train"](params, s2, low)  # step 1: the policy is on
    assert not np.allclose(out_on, net["train"](params, s1, full)[0], atol=1e-3)
    # Post-training quantization: ranges from one calibration batch, then 8-bit inference.
    w8 = jnp.asarray(SPACE1.uniform(arch, 8, 8, 1.0))
    calibrated = jax.jit(net["net"].calibrate)(params, s1, x, w8)
    assert float(calibrated["stem_range"]) == pytest.approx(float(jnp.max(jnp.abs(x))))
    ref, _ = net["eval"](params, s1, full)
    ptq, _ = net["eval"](params, calibrated, w8)
    assert float(jnp.max(jnp.abs(ptq - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))


@pytest.mark.slow  # compiles the whole compressed network (twice, in float64)
def test_mixed_policy_with_one_hot_bits_equals_the_genotype(net):
    """One-hot bit weights route each unit's bits exactly as the genotype's scalar bits
    (float64: a constant bit-width lets XLA fold ``x / levels`` into a multiply)."""
    arch = NB201Space().from_string(CELL)
    with jax.enable_x64(True):
        params, on = _float64(net["params"]), _float64(net["on"])
        x = net["x"].astype(jnp.float64)
        eye = jnp.eye(len(SPACE1.bit_choices), dtype=jnp.float64)
        w, a = SPACE1.bit_choices.index(4), SPACE1.bit_choices.index(8)
        policy = {u: {"w": eye[w], "a": eye[a], "k": 1.0} for u in UNITS}

        def mixed_forward(p, s):
            return net["net"].apply_policy(p, s, x, jnp.asarray(arch), policy, True)[0]

        def direct_forward(p, s, g):
            return net["net"].apply(p, s, x, g, True)[0]

        mixed = jax.jit(mixed_forward)(params, on)
        direct = jax.jit(direct_forward)(params, on, jnp.asarray(SPACE1.uniform(arch, 4, 8, 1.0)))
        assert mixed.dtype == direct.dtype == jnp.float64
        np.testing.assert_allclose(mixed, direct, rtol=1e-10, atol=1e-10)


def test_dnas_expected_cost_is_relative_to_full_precision():
    fixed = CompressedSpace(fixed_arch=tuple(int(v) for v in NB201Space().from_string(CELL)))
    costs = unit_costs(fixed, "mnist1d", 4, 1)
    dense = network_cost(fixed.decode(np.zeros(20, np.int32), "mnist1d", **NET), (40, 1))
    assert costs[:, 1].sum() == dense["macs"]
    bits = jnp.asarray(fixed.bit_choices, jnp.float32)
    full = jnp.full((len(UNITS), 2, 5), -1e9).at[..., -1].set(0.0)
    assert float(expected_cost(full, jnp.asarray(costs), bits)) == pytest.approx(2.0)
    two = jnp.full((len(UNITS), 2, 5), -1e9).at[..., 0].set(0.0)
    expected = 2 / 32 + 4 / 32**2
    assert float(expected_cost(two, jnp.asarray(costs), bits)) == pytest.approx(expected)
