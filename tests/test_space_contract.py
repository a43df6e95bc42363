"""Every registered space (and ``compress:nb201``) against the space contract.

Genotype methods in full; every network capability a space declares at tiny sizes, by
abstract evaluation (``jax.eval_shape``) so nothing compiles; every capability it lacks
raises the one-line ``CapabilityError``; and ``nasjax search --smoke`` either runs (slow)
or is refused with exit status 2 and one line.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.cli import main
from nasjax.errors import CapabilityError, NasjaxError
from nasjax.evaluation.lm_training import LMTrainConfig, module_bits_per_byte
from nasjax.llm.llama import LlamaConfig, forward
from nasjax.nets.relaxed import ArchWeights
from nasjax.objectives import init_abstract
from nasjax.spaces import (
    CAPABILITIES,
    SPACES,
    LlamaElasticSpace,
    SpaceContract,
    make_space,
    supports,
)
from nasjax.spaces.saved import load_result
from nasjax.tasks import get_task
from nasjax.text import load_text

NAMES = [*SPACES, "compress:nb201"]
TINY = {"channels": 4, "cells_per_stage": 1, "context": 8}  # each space takes its own keys
DATASET = {"images": "mnist1d", "text": "bytes"}
EXPECTED = {  # what each space really has (a change here is a change of the contract)
    "nb201": set(CAPABILITIES),
    "darts": {"decode", "relaxed", "costs", "measure"},
    "transformer": {"decode", "functional", "costs", "measure"},
    "compress:nb201": {"decode", "functional", "costs", "measure"},
    "llm": {"decode", "costs"},
}
NETWORK = {  # network checks on a tiny random-weight model (the registered one is SmolLM2)
    "llm": LlamaElasticSpace(
        random_config=LlamaConfig(61, 32, 2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=32),
        step=16,
        calibration=2,
        calibration_length=8,
    ),
}


@pytest.fixture(params=NAMES)
def space(request):
    return make_space(request.param)


def _tiny(space):
    return {k: v for k, v in TINY.items() if k in space.default_size}


def _genotypes(space, n=6):
    return np.asarray(space.sample(jax.random.key(1), n))


# ----------------------------------------------------------------- genotype methods
def test_registry_and_protocol(space):
    assert isinstance(space, SpaceContract)
    assert make_space(space.name) == space
    assert space.data_kind in DATASET
    assert set(space.default_size) and all(v >= 1 for v in space.default_size.values())
    assert {c for c in CAPABILITIES if supports(space, c)} == EXPECTED[space.name]


def test_genotype_methods(space):
    assert space.num_decisions == len(space.num_choices)
    assert space.size == math.prod(space.num_choices)
    pop = _genotypes(space)
    assert pop.shape == (6, space.num_decisions) and pop.dtype == np.int32
    assert bool(jnp.all(space.is_valid(pop)))
    children = np.asarray(space.mutate(jax.random.key(2), pop))
    assert bool(jnp.all(space.is_valid(children)))
    assert np.all((children != pop).any(axis=1))
    neighbours = np.asarray(space.neighbours(pop[0]))
    assert neighbours.shape[1] == space.num_decisions and bool(jnp.all(space.is_valid(neighbours)))
    assert space.one_hot(pop).shape == (6, space.num_decisions, max(space.num_choices))
    for g in pop:
        np.testing.assert_array_equal(space.validate(g), g)
        again = space.from_string(space.to_string(g))
        assert space.to_string(again) == space.to_string(g)


def test_index_round_trip(space):
    if space.size > np.iinfo(np.int32).max:
        with pytest.raises(NasjaxError, match="too large for int32"):
            space.to_index(_genotypes(space))
        return
    index = np.arange(min(space.size, 20_000))
    np.testing.assert_array_equal(space.to_index(space.from_index(index)), index)


def test_validate_errors(space):
    g = _genotypes(space, 1)[0]
    with pytest.raises(NasjaxError, match="must be"):
        space.validate(g[:-1])
    bad = g.copy()
    bad[-1] = space.num_choices[-1]
    with pytest.raises(NasjaxError, match="out of range"):
        space.validate(bad)
    with pytest.raises(NasjaxError):
        space.from_string("certainly not an architecture")


def test_unknown_size_key_is_one_line(space):
    with pytest.raises(NasjaxError) as err:
        space.resolve_size({"bogus": 2})
    message = str(err.value)
    assert "\n" not in message and "'bogus'" in message
    assert all(k in message for k in space.default_size)
    assert space.resolve_size({}) == space.default_size


# ----------------------------------------------------------------- network capabilities
def _check_decode(space, g, dataset, size):
    net = space.decode(g, dataset, **size)
    if isinstance(net, dict):  # the llm space: the sliced params of nasjax.llm.llama
        tokens = jnp.zeros((1, size["context"]), jnp.int32)
        out = jax.eval_shape(lambda p: forward(p, tokens, space.config), net)
        assert out.shape == (1, size["context"], space.config.vocab_size)
    elif space.data_kind == "text":
        tokens = jnp.zeros((1, size["context"]), jnp.int32)
        out = jax.eval_shape(lambda: net.apply(net.init(jax.random.key(0), tokens), tokens))
        assert out.shape == (1, size["context"], 256)
    else:
        variables = init_abstract(net, get_task(dataset).input_shape)
        assert jax.tree_util.tree_leaves(variables)


def _check_functional(space, g, dataset, size):
    fn = space.functional(dataset, **size)
    if space.data_kind == "text":
        tokens = jnp.zeros((1, size["context"]), jnp.int32)
        params = jax.eval_shape(fn.init, jax.random.key(0))
        out = jax.eval_shape(fn.apply, params, jnp.asarray(g), tokens)
        assert out.shape == (1, size["context"], 256)
        return
    x = jnp.zeros((2, *get_task(dataset).input_shape))
    params, state = jax.eval_shape(fn.init, jax.random.key(0))
    logits, _ = jax.eval_shape(lambda p, s: fn.apply(p, s, x, jnp.asarray(g), True), params, state)
    assert logits.shape == (2, get_task(dataset).num_classes)


def _check_relaxed(space, g, dataset, size):
    net = space.relaxed(dataset, "darts", **size)
    x = jnp.zeros((2, *get_task(dataset).input_shape))
    arch = ArchWeights(jax.nn.softmax(jnp.zeros(net.alpha_shape)))
    params = jax.eval_shape(net.init, jax.random.key(0))
    logits = jax.eval_shape(lambda p: net.apply(p, x, arch), params)
    assert logits.shape == (2, get_task(dataset).num_classes)
    found = net.discretize(np.zeros(net.alpha_shape), np.zeros(net.beta_shape))
    space.validate(found)


def _check_costs(space, g, dataset, size):
    costs = space.costs(g, dataset, **size)
    keys = {"decoder_params", "flops_per_token"} if space.data_kind == "text" else {"params"}
    assert keys <= set(costs) and all(costs[k] > 0 for k in keys)
    if space.data_kind == "images":
        assert costs["flops"] >= costs["macs"] > 0


def _check_cost_table(space, g, dataset, size):
    table = space.cost_table("params", dataset, **size)
    assert table.shape == (space.size,)
    assert table[int(space.to_index(g))] == space.costs(g, dataset, **size)["params"]


CHECKS = {
    "decode": _check_decode,
    "functional": _check_functional,
    "relaxed": _check_relaxed,
    "costs": _check_costs,
    "cost_table": _check_cost_table,
}
MEASURED = ("measure", "latency_table")  # these time programs on the device: slow


@pytest.mark.parametrize("capability", list(CHECKS))
def test_capability(space, capability):
    space = NETWORK.get(space.name, space)
    g, dataset, size = _genotypes(space, 1)[0], DATASET[space.data_kind], _tiny(space)
    if supports(space, capability):
        CHECKS[capability](space, g, dataset, size)
        return
    with pytest.raises(CapabilityError) as err:
        CHECKS[capability](space, g, dataset, size)
    message = str(err.value)
    assert "\n" not in message and f"space {space.name!r}" in message
    assert f"({capability});" in message  # then what to use instead


@pytest.mark.parametrize("capability", MEASURED)
def test_measured_capability_is_refused_in_one_line(space, capability):
    if supports(space, capability):
        pytest.skip("measured: see test_measured_capability")
    args = (_genotypes(space, 1)[0],) if capability == "measure" else ()
    with pytest.raises(CapabilityError, match=rf"^space '{space.name}' has no .*\({capability}\);"):
        getattr(space, capability)(*args, DATASET[space.data_kind], **_tiny(space))


@pytest.mark.slow
@pytest.mark.parametrize("capability", MEASURED)
def test_measured_capability(space, capability):
    if not supports(space, capability):
        pytest.skip("refused: see test_measured_capability_is_refused_in_one_line")
    g, dataset, size = _genotypes(space, 1)[0], DATASET[space.data_kind], _tiny(space)
    if capability == "measure":
        out = space.measure(g, dataset, batch_size=2, repeats=2, **size)
        assert out["latency_ms"] > 0 and out["peak_mem_mb"] > 0 and out["batch_size"] == 2
    else:
        table = space.latency_table(dataset, **size)
        assert np.all(np.asarray(table.predict(_genotypes(space))) > 0)


# ----------------------------------------------------------------- the command line
def _size_flags(space):
    return [x for k, v in _tiny(space).items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_cli_info(space, capsys):
    arch = space.to_string(_genotypes(space, 1)[0])
    assert main(["info", "--space", space.name, "--arch", arch, *_size_flags(space)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["space"] == space.name and record["arch"] == arch
    assert record["dataset"] == ("bytes" if space.data_kind == "text" else "cifar10")
    assert {**record, **_tiny(space)} == record


def test_cli_unknown_size_flag_is_one_line(space, capsys):
    other = "--context" if space.data_kind == "images" else "--cells-per-stage"
    arch = space.to_string(_genotypes(space, 1)[0])
    assert main(["info", "--space", space.name, "--arch", arch, other, "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no size" in err


def test_cli_search_smoke_refused(space, capsys, tmp_path):
    if supports(space, "functional"):
        pytest.skip("runs: see test_cli_search_smoke_runs")
    argv = ["search", "--space", space.name, "--smoke", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(functional)" in err and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_search_smoke_runs(space, capsys, tmp_path):
    if not supports(space, "functional"):
        pytest.skip("refused: see test_cli_search_smoke_refused")
    argv = ["search", "--space", space.name, "--smoke", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["space"] == space.name and summary["num_evaluated"] == 4
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "search_curve.png").read_bytes()[:4] == b"\x89PNG"
    if space.data_kind == "text":  # the LM recipe: bits per byte, reported as such
        assert summary["valid_bpb"] < 8.1 and "bits per byte" in capsys.readouterr().out
    saved = load_result(tmp_path)  # every searchable space saves its retrained network
    assert saved.genotype.tolist() == summary["genotype"] and saved.summary == summary
    if space.data_kind == "text":
        config = LMTrainConfig(**summary["final_training"])
        bpb = module_bits_per_byte(saved.module, saved.variables, load_text(None), config)
        assert bpb == summary["model_valid_bpb"]  # the saved model, bit for bit
        # The trainer's own number for the same weights (another program: rounding only).
        assert bpb == pytest.approx(summary["valid_bpb"], rel=1e-4)
