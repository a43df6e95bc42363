"""The population axis sharded over devices and processes gives each member's own result."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import distributed_worker as worker
import jax
import numpy as np
import pytest
from numerics import assert_same_accuracy

from nasjax.data import load_dataset
from nasjax.devices import COLLECTIVE_TIMEOUTS, use_cpu_cores

WORKER = Path(__file__).with_name("distributed_worker.py")


def _env(devices: int) -> dict[str, str]:
    """This process's XLA flags (conftest's -O0) with ``devices`` host devices (the last
    count given wins), and its persistent compilation cache."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return {
        **os.environ,
        "XLA_FLAGS": flags.strip(),
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
        "JAX_PLATFORMS": "cpu",
    }


def _result(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _assert_same_members(a: dict, b: dict) -> None:
    """Same members: loss curves to float tolerance, accuracies up to near-tie flips."""
    np.testing.assert_allclose(a["loss_curve"], b["loss_curve"], rtol=1e-5, atol=1e-6)
    data = load_dataset("mnist1d", seed=0)
    for name, split in (("valid_accuracy", data.x_valid), ("test_accuracy", data.x_test)):
        assert_same_accuracy(a[name], b[name], len(split), err_msg=name)


@pytest.fixture(scope="module")
def one_device():
    return worker.evaluate()


@pytest.mark.slow
def test_four_devices_match_one_device(one_device):
    run = subprocess.run(
        [sys.executable, str(WORKER)], env=_env(4), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    four = _result(run.stdout)
    assert four["num_devices"] == 4
    assert len(four["valid_accuracy"]) == len(worker.POPULATION)  # padding dropped
    _assert_same_members(four, one_device)


@pytest.mark.slow
def test_two_processes_evaluate_one_population_together(one_device):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), f"127.0.0.1:{port}", "2", str(i)],
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    finished = []
    try:  # read both before judging either: the first may end before the second
        finished = [proc.communicate(timeout=600) for proc in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # only after a timeout or an error
                p.kill()
    outputs = []
    for proc, (stdout, stderr) in zip(procs, finished, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append(_result(stdout))
    for out in outputs:
        assert out["num_processes"] == 2 and out["num_devices"] == 2
        _assert_same_members(out, one_device)


def _worker_on_two_devices(mode: str) -> dict:
    """``distributed_worker.py MODE`` in a process with two host devices: its result."""
    run = subprocess.run(
        [sys.executable, str(WORKER), mode], env=_env(2), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = _result(run.stdout)
    assert out["num_devices"] == 2
    return out


def test_proxy_scores_on_two_devices_match_one_device():
    """Zero-cost scoring splits the population over the devices (3 cells: one padded
    copy on the second device, dropped); each cell's score is what it is alone."""
    two = _worker_on_two_devices("--proxies")
    one = worker.proxy_scores()
    for proxy in ("synflow", "snip"):
        assert len(two[proxy]) == len(worker.POPULATION)
        np.testing.assert_allclose(two[proxy], one[proxy], rtol=1e-6, err_msg=proxy)


def test_supernet_paths_on_two_devices_are_the_stand_in_steps():
    """train_supernet over two host devices (shard_map: one path per device per step, one
    all-reduce) takes the steps test_oneshot pins with a vmap axis for the devices."""
    assert _worker_on_two_devices("--supernet")["max_gap"] < 1e-5


def test_entry_points_let_host_devices_wait_for_each_other(monkeypatch):
    """XLA:CPU aborts a process whose host devices reach a collective more than 40 s
    apart (a loaded machine, a share of slow members); the entry points raise the limits,
    and a value the user set wins."""
    terminate, _ = COLLECTIVE_TIMEOUTS[1]
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    use_cpu_cores()
    flags = os.environ["XLA_FLAGS"].split()
    assert all(f"{flag}={value}" in flags for flag, value in COLLECTIVE_TIMEOUTS)
    assert dict(COLLECTIVE_TIMEOUTS)[terminate] >= 24 * 3600
    monkeypatch.setenv("XLA_FLAGS", f"{terminate}=5")
    use_cpu_cores()
    assert [f for f in os.environ["XLA_FLAGS"].split() if f.startswith(terminate)] == [
        f"{terminate}=5"
    ]
