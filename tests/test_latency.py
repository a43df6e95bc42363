"""Tests for nasjax.spaces.nb201_latency: the table's structure, predictions, JSON file and evaluation.

Tiny configuration (MNIST-1D, C=4, one cell per stage, few repeats); no assertion depends on
how fast anything runs.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.objectives import device_name
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.nb201_latency import (
    LatencyTable,
    _stage_shapes,
    build_latency_table,
    evaluate_latency_table,
    live_edges,
)
from nasjax.stats import spearman

SPACE = NB201Space()


@pytest.fixture(scope="module")
def table():
    return build_latency_table(
        SPACE, "mnist1d", channels=4, cells_per_stage=1, batch_size=2, warmup=1, repeats=3
    )


def test_table_shapes_and_metadata(table):
    assert table.op_ms.shape == (3, 5)
    assert np.all(table.op_ms[:, 0] == 0)  # none: no module, no time
    assert np.all(table.op_ms >= 0) and np.all(np.isfinite(table.op_ms))
    assert table.fixed_ms > 0
    assert table.ops == SPACE.ops
    assert (table.dataset, table.channels, table.cells_per_stage) == ("mnist1d", 4, 1)
    assert (table.batch_size, table.repeats, table.device) == (2, 3, device_name())
    edge_ms = table._replace(cells_per_stage=3).edge_ms()
    assert edge_ms.shape == (6, 5)
    for e in range(6):  # every edge of a cell sees the same shape: the same entries
        np.testing.assert_allclose(edge_ms[e], 3 * table.op_ms.sum(axis=0))


def test_predict_is_fixed_plus_the_sum_of_live_edge_entries(table):
    table = table._replace(cells_per_stage=2)
    genotypes = np.asarray(SPACE.sample(jax.random.key(0), 12)).reshape(3, 4, 6)
    predicted = table.predict(genotypes)
    assert predicted.shape == (3, 4)
    edge_ms = table.edge_ms()
    live = live_edges(genotypes)
    for index in np.ndindex(3, 4):
        g = genotypes[index]
        want = table.fixed_ms + sum(edge_ms[e, g[e]] for e in range(6) if live[index][e])
        assert predicted[index] == pytest.approx(want)
    assert table.predict(np.zeros(6, np.int32)) == pytest.approx(table.fixed_ms)
    no_none = np.array([3, 1, 2, 4, 3, 1])  # every edge live: the plain sum of all six
    want = table.fixed_ms + sum(edge_ms[e, no_none[e]] for e in range(6))
    assert table.predict(no_none) == pytest.approx(want)


@pytest.mark.parametrize(
    "arch,live",
    [
        # node 2 has no way to node 3 (2->3 is none): the two edges into it are dead
        (
            "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|none~2|",
            [1, 0, 0, 0, 1, 0],
        ),
        # node 1 reaches nothing: its input edge is dead
        (
            "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
            [0, 1, 0, 0, 0, 1],
        ),
        # node 1 reaches node 3 through node 2
        (
            "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_1x1~2|",
            [1, 0, 1, 0, 0, 1],
        ),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", [0] * 6),
    ],
)
def test_live_edges(arch, live):
    genotype = SPACE.from_string(arch)
    assert live_edges(genotype).tolist() == [bool(v) for v in live]
    assert np.asarray(jax.jit(live_edges)(jnp.asarray(genotype))).tolist() == [
        bool(v) for v in live
    ]


def test_predict_jnp_and_under_jit(table):
    genotypes = SPACE.sample(jax.random.key(1), 5)
    want = table.predict(np.asarray(genotypes))
    got = jax.jit(table.predict)(genotypes)
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


@pytest.mark.parametrize(
    "genotypes", [np.zeros(5, np.int32), np.full(6, 5), np.full(6, -1), np.zeros(6, np.float32)]
)
def test_predict_rejects_bad_genotypes(table, genotypes):
    with pytest.raises(NasjaxError, match=r"integers in 0..4 of shape \[..., 6\]"):
        table.predict(genotypes)


def test_json_round_trip(table, tmp_path):
    path = tmp_path / "sub" / "table.json"
    table.to_json(path)
    assert os.listdir(path.parent) == ["table.json"]  # no temporary file left
    loaded = LatencyTable.from_json(path)
    np.testing.assert_array_equal(loaded.op_ms, table.op_ms)
    assert loaded._replace(op_ms=None) == table._replace(op_ms=None)
    assert json.loads(path.read_text())["format"] == "nasjax.latency_table"


def test_failed_write_keeps_the_old_file(table, tmp_path, monkeypatch):
    path = tmp_path / "table.json"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        table.to_json(path)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.json"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("not json", "cannot read latency table"),
        ('{"format": "other"}', "is not a nasjax latency table"),
        ('{"format": "nasjax.latency_table", "version": 1}', "missing fields"),
    ],
)
def test_from_json_bad_files(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(NasjaxError, match=match):
        LatencyTable.from_json(path)
    with pytest.raises(NasjaxError, match="cannot read latency table"):
        LatencyTable.from_json(tmp_path / "missing.json")


def test_evaluate_latency_table(table):
    result = evaluate_latency_table(jax.random.key(2), table, SPACE, num_archs=3, repeats=2)
    assert -1.0 <= result["spearman"] <= 1.0
    assert result["mean_relative_error"] >= 0
    assert len(result["predicted_ms"]) == len(result["measured_ms"]) == 3
    assert all(ms > 0 for ms in result["measured_ms"])
    genotypes = np.stack([SPACE.from_string(a) for a in result["archs"]])
    np.testing.assert_allclose(result["predicted_ms"], table.predict(genotypes))
    assert result["device"] == device_name()
    json.dumps(result)  # JSON-ready


def test_evaluate_refuses_another_device_and_other_spaces(table):
    with pytest.raises(NasjaxError, match="measured on 'tpu:fake'"):
        evaluate_latency_table(jax.random.key(0), table._replace(device="tpu:fake"), SPACE)
    with pytest.raises(NasjaxError, match="NB201 space only"):
        evaluate_latency_table(jax.random.key(0), table, SearchSpace((2, 2)))
    with pytest.raises(NasjaxError, match="num_archs must be >= 2, got 1"):
        evaluate_latency_table(jax.random.key(0), table, SPACE, num_archs=1)


def test_build_rejects_bad_input():
    with pytest.raises(NasjaxError, match="NB201 space only"):
        build_latency_table(SearchSpace((3,)), "mnist1d")
    with pytest.raises(NasjaxError, match="unknown dataset 'mnist3d'"):
        build_latency_table(SPACE, "mnist3d")
    with pytest.raises(NasjaxError, match="batch_size must be an integer >= 1, got 0"):
        build_latency_table(SPACE, "mnist1d", batch_size=0)


@pytest.mark.parametrize(
    "dataset,channels,shapes",
    [
        ("cifar10", 16, [(32, 32, 16), (16, 16, 32), (8, 8, 64)]),
        ("imagenet16", 8, [(16, 16, 8), (8, 8, 16), (4, 4, 32)]),
        ("mnist1d", 4, [(40, 4), (20, 8), (10, 16)]),
    ],
)
def test_stage_shapes(dataset, channels, shapes):
    assert _stage_shapes(SPACE, dataset, channels) == shapes


def test_spearman_against_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (0, 1.5, 1.5, 3) and (0, 1, 3, 2): Pearson of the ranks.
    a, b = np.array([0, 1.5, 1.5, 3]), np.array([0, 1, 3, 2])
    want = np.sum((a - a.mean()) * (b - b.mean())) / np.sqrt(
        np.sum((a - a.mean()) ** 2) * np.sum((b - b.mean()) ** 2)
    )
    assert spearman([1, 5, 5, 9], [0.1, 0.2, 0.9, 0.5]) == pytest.approx(want)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman(jnp.arange(5.0), np.exp(np.arange(5.0))) == pytest.approx(1.0)
    with pytest.raises(NasjaxError, match="same length"):
        spearman([1, 2], [1, 2, 3])
