"""Tests for nasjax.llm.latency: the per-block decode-latency table of pruned LLaMA models.

Timings are never compared with numbers; the one measured comparison (1 block against 5
blocks of the same shape) has a gap far wider than the noise of a loaded machine.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.llm import latency as lat
from nasjax.llm import llama
from nasjax.llm.evaluate import decode_latency_ms
from nasjax.objectives import device_name

CONFIG = llama.LlamaConfig(
    vocab_size=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=512
)
SMOKE = {"widths": (128,), "kv_groups": (2,), "ffn": (64, 512)}
TIMING = {"prompt_len": 8, "steps": 8, "probe_blocks": 2, "repeats": 5}


def synthetic_table(**changes) -> lat.LatencyTable:
    """A table whose block cost is bilinear in (width, ffn): interpolation is exact."""
    widths, groups, ffn = (64, 128), (1, 2), (64, 256, 512)
    w, g, f = np.meshgrid(widths, groups, ffn, indexing="ij")
    block = 1e-3 * w * (g + f / 64) + 0.01
    fields = dict(
        widths=widths,
        kv_groups=groups,
        ffn=ffn,
        overhead_ms=np.asarray([1.0, 1.5]),
        block_ms=block,
        measured_block_ms=block,
        config=dataclasses.asdict(CONFIG),
        device="cpu:synthetic",
        dtype="float32",
        build_s=0.0,
        **{k: v for k, v in TIMING.items()},
    )
    return lat.LatencyTable(**{**fields, **changes})


def one_line_error(fn, *args, match: str) -> str:
    with pytest.raises(NasjaxError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_predict_is_overhead_plus_interpolated_blocks():
    table = synthetic_table()
    exact = lambda w, g, f: 1e-3 * w * (g + f / 64) + 0.01  # noqa: E731
    blocks = [(1, 64), (2, 192), (2, 512), (1, 448)]
    want = 1.0 + 0.5 * (96 - 64) / 64 + sum(exact(96, g, f) for g, f in blocks)
    np.testing.assert_allclose(table.predict(96, blocks), want, rtol=1e-12)
    assert table.predict(128, []) == 1.5
    assert table.block(64, 2, 256) == pytest.approx(exact(64, 2, 256))


def test_predict_is_monotone_in_blocks_groups_ffn_and_width():
    table = synthetic_table()
    base = table.predict(64, [(1, 128)] * 3)
    assert table.predict(64, [(1, 128)] * 4) > base
    assert table.predict(64, [(2, 128)] + [(1, 128)] * 2) > base
    assert table.predict(64, [(1, 192)] + [(1, 128)] * 2) > base
    assert table.predict(128, [(1, 128)] * 3) > base


def test_predict_rejects_shapes_outside_the_grid():
    table = synthetic_table()
    assert "192" in one_line_error(table.predict, 192, [(1, 64)], match="width 192.*64..128")
    one_line_error(table.predict, 32, [], match="width 32")
    one_line_error(table.predict, 64, [(3, 64)], match="block 0: kv_groups 3.*1, 2")
    one_line_error(table.predict, 64, [(1, 64), (1, 1024)], match="block 1: ffn 1024.*64..512")
    one_line_error(table.predict, 64, [(1, 32)], match="ffn 32")
    one_line_error(table.predict, 64, [(1,)], match="block 0.*not a .kv_groups, ffn. pair")


def test_smoothing_keeps_a_plane_and_makes_noise_monotone():
    groups, ffn = (1, 2, 3), (64, 768, 1536)
    g, f = np.meshgrid(groups, ffn, indexing="ij")
    plane = np.stack([0.1 + 0.2 * g + 1e-3 * f, 0.2 + 0.3 * g + 2e-3 * f])  # two widths
    np.testing.assert_allclose(lat._smooth(plane, groups, ffn), plane, rtol=1e-9)
    noisy = np.random.default_rng(0).normal(size=(4, 3, 3))
    noisy[1, :, 0] = [5.0, 0.0, 0.0]  # a slope that the fit must not turn negative
    clean = lat._smooth(noisy, groups, ffn)
    assert clean.shape == noisy.shape and (clean >= 0).all()
    for axis in range(3):
        assert (np.diff(clean, axis=axis) >= -1e-12).all()


def test_json_round_trip_and_bad_files(tmp_path):
    table = synthetic_table()
    table.to_json(tmp_path / "t.json")
    back = lat.LatencyTable.from_json(tmp_path / "t.json")
    assert back.widths == table.widths and back.ffn == table.ffn and back.device == table.device
    np.testing.assert_array_equal(back.block_ms, table.block_ms)
    assert back.predict(96, [(2, 320)]) == table.predict(96, [(2, 320)])
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    one_line_error(lat.LatencyTable.from_json, tmp_path / "other.json", match="not a nasjax LLM")
    one_line_error(lat.LatencyTable.from_json, tmp_path / "none.json", match="cannot read")


def test_random_subnet_has_the_asked_shapes_and_runs():
    blocks = [(1, 64), (2, 512), (1, 256)]
    params = lat.random_subnet(jax.random.key(0), CONFIG, 64, blocks)
    assert params["embed"].shape == (256, 64) and "lm_head" not in params
    assert lat.subnet_shape(params, CONFIG) == (64, blocks)
    assert params["layers"][0]["wq"].shape == (64, 2 * 32)  # one group: 2 query heads
    assert params["layers"][1]["wo"].shape == (4 * 32, 64)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    again = lat.random_subnet(jax.random.key(0), CONFIG, 64, blocks)
    np.testing.assert_array_equal(params["layers"][2]["w_up"], again["layers"][2]["w_up"])


def test_bad_subnets_and_grids_get_one_line_errors():
    key = jax.random.key(0)
    one_line_error(lat.random_subnet, key, CONFIG, 96, [], match="width 96.*multiple of 64")
    one_line_error(lat.random_subnet, key, CONFIG, 64, [(0, 64)], match="kv_groups 0.*1..2")
    one_line_error(lat.random_subnet, key, CONFIG, 64, [(1, 576)], match="ffn 576.*64..512")
    one_line_error(lat.build_table, key, CONFIG, (128, 64), match="widths .*increasing")
    one_line_error(lat.build_table, key, CONFIG, (64,), (3,), match="kv_groups 3")
    one_line_error(decode_latency_ms, {}, CONFIG, None, 4, None, 0, match="repeats must be")


def test_sample_subnets_spread_from_tiny_to_near_dense():
    table = synthetic_table()
    config = dataclasses.replace(CONFIG, n_layers=8)
    subnets = lat.sample_subnets(jax.random.key(1), table, config, 6)
    for width, blocks in subnets:
        table.predict(width, blocks)  # inside the grid
        lat.check_subnet(config, width, blocks)
        assert 1 <= len(blocks) <= 8
    sizes = [table.predict(w, b) for w, b in subnets]
    assert sizes[0] < sizes[-1]
    assert subnets == lat.sample_subnets(jax.random.key(1), table, config, 6)


def test_check_table_refuses_another_device_or_model():
    one_line_error(lat.check_table, jax.random.key(0), synthetic_table(), CONFIG, match="device")
    other = synthetic_table(device=device_name(), config={**dataclasses.asdict(CONFIG), "dim": 64})
    one_line_error(lat.check_table, jax.random.key(0), other, CONFIG, match="another model")


@pytest.fixture(scope="module")
def smoke_table() -> lat.LatencyTable:
    return lat.build_table(jax.random.key(0), CONFIG, **SMOKE, **TIMING)


def test_built_table_structure_and_json(smoke_table, tmp_path):
    table = smoke_table
    assert (table.widths, table.kv_groups, table.ffn) == (SMOKE["widths"], (2,), (64, 512))
    assert table.block_ms.shape == table.measured_block_ms.shape == (1, 1, 2)
    assert table.overhead_ms.shape == (1,) and table.overhead_ms[0] > 0
    assert (table.block_ms >= 0).all() and (np.diff(table.block_ms, axis=-1) >= 0).all()
    assert table.device == device_name() and table.build_s > 0
    assert table.predict(128, [(2, 512)] * 2) >= table.predict(128, [(2, 64)] * 2)
    table.to_json(tmp_path / "table.json")
    back = lat.LatencyTable.from_json(tmp_path / "table.json")
    assert back.predict(128, [(2, 256)]) == table.predict(128, [(2, 256)])
    assert back._replace(block_ms=0, measured_block_ms=0, overhead_ms=0) == table._replace(
        block_ms=0, measured_block_ms=0, overhead_ms=0
    )


def test_built_table_ranks_one_block_below_five(smoke_table):
    """Blocks of the largest grid shape; smoothing makes its entry no smaller than any
    other (monotone), so a positive measurement anywhere makes it positive."""
    timing = {k: TIMING[k] for k in ("prompt_len", "steps", "repeats")}
    predicted, measured = [], []
    for count in (1, 5):
        blocks = [(2, 512)] * count
        params = lat.random_subnet(jax.random.key(count), CONFIG, 128, blocks)
        measured.append(lat.measure_decode_ms(params, CONFIG, **timing))
        predicted.append(smoke_table.predict(128, blocks))
    assert predicted[0] < predicted[1] and measured[0] < measured[1]
