"""The population-training benchmark runs its three implementations on the same work."""

import argparse
import json

import numpy as np
import pytest
from conftest import load_experiment


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:  # keep this process's device layout
        mp.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
        return load_experiment("bench_population_training")


@pytest.mark.parametrize("dataset, shape", [("mnist1d", (1, 40, 1)), ("cifar10", (1, 8, 8, 3))])
def test_torch_network_has_the_decoded_parameter_count(bench, dataset, shape):
    import jax
    import jax.numpy as jnp

    from nasjax.objectives import count_params
    from nasjax.spaces import NB201Space

    genotype = np.array([3, 2, 4, 1, 0, 3])
    net = NB201Space().decode(genotype, dataset, channels=8, cells_per_stage=2)
    ours = count_params(net.init(jax.random.key(0), jnp.zeros(shape))["params"])
    theirs = bench.torch_network(genotype, 8, 2, 10, ndim=len(shape) - 2)
    assert sum(p.numel() for p in theirs.parameters()) == ours


@pytest.mark.slow
def test_smoke_run_writes_the_figures(bench, tmp_path):
    # the recipe of the CLI's --smoke search (tests/test_cli.py, test_training.py): the
    # persistent cache serves the two programs to whichever of them runs second
    args = argparse.Namespace(
        population=2,
        populations=[2],  # the sweep's P=2 entry is the main run: no program of its own
        batch_size=100,
        channels=4,
        cells_per_stage=1,
        member_batch=1,
        smoke=True,
    )
    result = bench.run(args)
    assert set(result["sec_per_arch_epoch"]) == {"nasjax_vmap", "nasjax_loop", "pytorch_eager"}
    assert all(v > 0 for v in result["sec_per_arch_epoch"].values())
    assert result["steps_per_epoch"] == bench.SMOKE_STEPS
    assert result["agreement"]["vmap_equals_loop"]  # the same program, member by member
    assert result["compile_s"] > 0 and result["peak_mem_mb"]["per_member"] > 0
    sweep = result["scaling"]["2"]
    assert sweep["compile_s"] == result["compile_s"]
    assert sweep["sec_per_arch_epoch"] == result["sec_per_arch_epoch"]["nasjax_vmap"]
    assert sweep["speedup_vs_pytorch"] == pytest.approx(result["speedup_vs_pytorch"])
    assert sweep["sec_per_arch_epoch_second_call"] > 0
    json.dumps(result)  # serialisable as written to --out


def test_bad_population_is_one_clear_line(bench, capsys):
    assert bench.main(["--population", "1", "--out", "unused.json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--population must be >= 2, got 1" in err[0]
