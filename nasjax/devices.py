"""Devices for population training: one host device per CPU core, and a mesh over all.

XLA runs a CPU as a single device whose ops are split over the cores. NAS populations are
many small, independent programs, which run better side by side: one member per core
instead of every small op split across cores (measured on a 2-core machine: 1.5x more
architectures per second with two host devices). :func:`use_cpu_cores` asks XLA for one
host device per core; it must run before JAX starts its backends, so the command-line
entry points call it first thing. Accelerators are unaffected.
"""

from __future__ import annotations

import os

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def use_cpu_cores(count: int | None = None) -> int | None:
    """Splits the host into ``count`` devices (default: one per core) unless already set.

    Returns the count requested, or ``None`` where ``XLA_FLAGS`` already sets one (the
    user's choice wins). Has no effect once JAX has initialised its backends.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_COUNT_FLAG in flags:
        return None
    count = count if count is not None else max(1, len(os.sched_getaffinity(0)))
    os.environ["XLA_FLAGS"] = f"{flags} {_DEVICE_COUNT_FLAG}={count}".strip()
    return count
