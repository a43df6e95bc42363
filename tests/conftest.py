"""Shared test set-up: a persistent XLA compilation cache, so that test processes that
compile the same program (the CLI smoke runs, xdist workers) compile it once."""

import os
from pathlib import Path

import jax

CACHE = Path(os.environ.get("NASJAX_TEST_CACHE", Path(__file__).parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
