"""Zero-cost proxies: the population program (traced genotype, ``lax.switch``) computes
what the reference's hooks compute on each decoded network."""

import jax
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.evaluation import proxies
from nasjax.spaces import NB201Space
from nasjax.spaces.nb201_costs import nb201_cost_table

SPACE = NB201Space()
TINY = dict(channels=4, cells_per_stage=1)
DATASET = "mnist1d"  # [B, 40, 1]: the smallest network to compile
GENOTYPES = np.array([(1, 2, 3, 4, 0, 3), (3, 0, 2, 1, 4, 3)], np.int32)
KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 40, 1)).astype(np.float32), np.arange(8) % 10


SLOW = pytest.mark.slow  # each compiles its own second-order or tapped program


@pytest.mark.parametrize(
    "proxy",
    ["synflow", "snip", "grad_norm", "nwot"]
    + [pytest.param(p, marks=SLOW) for p in ("grasp", "fisher", "jacob_cov")],
)
def test_population_matches_decoded_network(proxy, batch):
    """Each member's score equals the proxy on its decoded Flax network (same weights),
    and a second call (the cached program) returns the same scores."""
    x, y = batch
    scores = proxies.score_population(proxy, GENOTYPES, DATASET, x, y, KEY, **TINY)
    again = proxies.score_population(proxy, GENOTYPES, DATASET, x, y, KEY, **TINY)
    np.testing.assert_array_equal(scores, again)
    expected = proxies.score_decoded(proxy, GENOTYPES, DATASET, x, y, KEY, **TINY)
    assert scores.dtype == np.float64 and scores.shape == (2,)
    assert np.all(np.isfinite(scores)), scores
    rtol = 1e-9 if proxy == "synflow" else 2e-4  # synflow runs in float64
    np.testing.assert_allclose(scores, expected, rtol=rtol)
    assert scores[0] != scores[1]  # the architectures differ, so do their scores


def test_synflow_of_empty_cells_is_below_convolutions():
    cells = np.array([(0,) * 6, (3,) * 6], np.int32)  # all none, all 3x3 conv
    scores = proxies.score_population("synflow", cells, DATASET, None, None, KEY, **TINY)
    assert scores[0] < scores[1]


def test_member_batch_vmaps_the_same_scores(batch):
    """``member_batch=2`` vmaps members (switch -> select): the same scores as the loop."""
    x, y = batch
    looped = proxies.score_population("nwot", GENOTYPES, DATASET, x, y, KEY, **TINY)
    vmapped = proxies.score_population(
        "nwot", GENOTYPES, DATASET, x, y, KEY, member_batch=2, **TINY
    )
    np.testing.assert_allclose(vmapped, looped, rtol=1e-9)


@pytest.mark.parametrize("metric", ["params", "flops"])
def test_params_and_flops_come_from_the_cost_table(metric):
    cells = np.asarray(SPACE.from_index(np.array([0, 7, 1234, 15624])))
    scores = proxies.score_population(metric, cells, "cifar10", None, None, KEY)
    table = nb201_cost_table(metric, "cifar10")
    np.testing.assert_array_equal(scores, table[np.array([0, 7, 1234, 15624])])
    assert proxies.score_one(metric, cells[2], "cifar10", None, None, KEY) == table[1234]
    decoded = proxies.score_decoded(metric, cells[:2], "cifar10", None, None, KEY, **TINY)
    tiny = nb201_cost_table(metric, "cifar10", **TINY)
    np.testing.assert_array_equal(decoded, tiny[np.array([0, 7])])


@pytest.mark.slow
def test_synflow_is_finite_in_float64_at_benchmark_size():
    """C=16, N=5 on CIFAR-10 shapes: the all-3x3 cell's flow is finite in float64."""
    score = proxies.score_one("synflow", (3,) * 6, "cifar10", None, None, KEY)
    assert np.isfinite(score) and score > 0


@pytest.mark.parametrize(
    "proxy, genotypes, x_shape, y, match",
    [
        ("zen", [(0,) * 6], (8, 40, 1), None, "unknown proxy 'zen'.*synflow"),
        ("snip", [(0,) * 5], (8, 40, 1), None, "must be 6 integers"),
        ("snip", [(0, 0, 0, 0, 0, 5)], (8, 40, 1), None, "out of range"),
        ("snip", (0,) * 6, (8, 40, 1), None, r"genotypes must be int \[P, 6\]"),
        ("snip", [(0,) * 6], None, None, "needs a minibatch"),
        ("nwot", [(0,) * 6], (8, 32, 1), None, r"x must be float \[B, 40, 1\]"),
        ("grasp", [(0,) * 6], (8, 40, 1), np.arange(7), r"y must be int \[8\]"),
        ("fisher", [(0,) * 6], (8, 40, 1), np.full(8, 10), r"labels of y must lie in 0..9"),
    ],
)
def test_bad_input_raises(proxy, genotypes, x_shape, y, match):
    x = None if x_shape is None else np.zeros(x_shape, np.float32)
    y = np.zeros(8, np.int32) if y is None and x is not None else y
    with pytest.raises(NasjaxError, match=match):
        proxies.score_population(proxy, np.asarray(genotypes), DATASET, x, y, KEY, **TINY)
