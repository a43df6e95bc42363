"""Tests of nasjax.devices' process settings that only a fresh process can show."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
import jax
from nasjax.devices import use_compilation_cache, without_compilation_cache
if sys.argv[2] == "off":
    without_compilation_cache()
use_compilation_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)).block_until_ready()
"""


@pytest.mark.parametrize("mode", ["on", "off"])
def test_without_compilation_cache_keeps_a_process_off_the_cache(tmp_path, mode):
    """The benchmarks time compiles: with the cache off from the start, a compile writes
    nothing to the cache folder (the control run writes its program there)."""
    folder = tmp_path / "cache"
    subprocess.run([sys.executable, "-c", SCRIPT, str(folder), mode], check=True, timeout=120)
    written = list(folder.glob("*")) if folder.exists() else []
    assert (len(written) > 0) == (mode == "on"), written
