"""Devices for population training: one host device per CPU core, and a mesh over all.

XLA runs a CPU as a single device whose ops are split over the cores. NAS populations are
many small, independent programs, which run better side by side: one member per core
instead of every small op split across cores (measured on a 2-core machine: 1.5x more
architectures per second with two host devices). :func:`use_cpu_cores` asks XLA for one
host device per core (and quicker compiles); it must run before JAX starts its backends,
so the command-line entry points call it first thing. Accelerators are unaffected.
"""

from __future__ import annotations

import os

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_OPT_LEVEL_FLAG = "--xla_backend_optimization_level"
_OPT_LEVEL = 1
"""LLVM -O1 instead of -O2 for XLA:CPU: measured here on the population trainer, compile
33 s -> 26 s with the same run time (its time is in library GEMMs, not generated code)."""

COLLECTIVE_TIMEOUTS = (
    ("--xla_cpu_collective_call_warn_stuck_timeout_seconds", 3600),
    ("--xla_cpu_collective_call_terminate_timeout_seconds", 7 * 24 * 3600),
)
"""XLA:CPU's limits on how long one host device waits for the others at a collective
(defaults 20 s to warn, 40 s to abort the process). Host devices gather the population's
results once their shares are trained; a share of slow members, or a loaded machine,
can finish minutes after the other, and the default aborted whole searches here
(``Termination timeout for all gather ... exceeded``, SIGABRT). Raised to a week."""


def use_cpu_cores(count: int | None = None) -> int | None:
    """Splits the host into ``count`` devices (default: one per core) unless already set.

    Also asks XLA:CPU for LLVM -O1 (faster compiles, see ``_OPT_LEVEL``) and patient
    collectives (:data:`COLLECTIVE_TIMEOUTS`), each unless ``XLA_FLAGS`` sets it.

    Returns the count requested, or ``None`` where ``XLA_FLAGS`` already sets one (the
    user's choice wins). Has no effect once JAX has initialised its backends.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    for flag, value in ((_OPT_LEVEL_FLAG, _OPT_LEVEL), *COLLECTIVE_TIMEOUTS):
        if flag not in flags:
            flags = f"{flags} {flag}={value}".strip()
    requested = None
    if _DEVICE_COUNT_FLAG not in flags:
        requested = count if count is not None else max(1, len(os.sched_getaffinity(0)))
        flags = f"{flags} {_DEVICE_COUNT_FLAG}={requested}"
    os.environ["XLA_FLAGS"] = flags
    return requested


CACHE_ENV = "NASJAX_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/nasjax/xla"
_CACHE_MIN_COMPILE_S = 0.2
"""Programs that compile faster than this are not written to the cache (JAX's default is
1 s, which misses the tabular searches: each compiles in ~1 s here)."""


def without_compilation_cache() -> None:
    """Keeps this process off JAX's persistent compilation cache: for the benchmarks, whose
    compile times must be compiles, not loads from an earlier run's cache.

    JAX decides once per process, at its first compile, whether it uses the cache (a later
    config change does not count), so call this before anything compiles, e.g. first thing
    in a script's ``__main__`` block; :func:`use_compilation_cache` still names the folder,
    which stays unused.
    """
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


def use_compilation_cache(path: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, so a program compiled by one run is
    loaded from disk by the next (e.g. the Table 5 searches: ~1 s of XLA each, cold).

    The folder is ``path``, else ``$NASJAX_COMPILATION_CACHE``, else
    :data:`DEFAULT_CACHE_DIR`; ``NASJAX_COMPILATION_CACHE=off`` (or an empty value) turns it
    off. A cache folder already configured (``jax_compilation_cache_dir``, e.g. by the test
    suite) wins. Every entry point calls this (:func:`nasjax.flags.run_entry`).

    Returns the folder in use, or ``None`` when off.
    """
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    if path is None:
        path = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    if path.strip().lower() in ("", "off", "0", "false", "none"):
        return None
    folder = os.path.expanduser(path)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _CACHE_MIN_COMPILE_S)
    return folder
