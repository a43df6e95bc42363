"""Costs and measurements of a space's decoded CNN, shared by the image spaces.

``costs``: :func:`nasjax.objectives.network_cost` (params, MACs, FLOPs under
NAS-Bench-201's conventions) of ``space.decode(...)``; ``measure``: the median inference
latency and XLA's peak memory of the decoded network on the current default device.
"""

from __future__ import annotations

from typing import Any

from nasjax.errors import check_positive
from nasjax.objectives import (
    benchmark_variables,
    device_name,
    measure_latency_ms,
    network_cost,
    peak_memory_mb,
)
from nasjax.tasks import get_task


def decoded_costs(space: Any, genotype: object, dataset: str, **size: int) -> dict[str, int]:
    """``params``, ``macs`` and ``flops`` of the decoded network (exact, nothing runs)."""
    net = space.decode(genotype, dataset, **space.resolve_size(size))
    return network_cost(net, get_task(dataset).input_shape)


def decoded_measure(
    space: Any,
    genotype: object,
    dataset: str,
    *,
    batch_size: int = 1,
    repeats: int = 20,
    **size: int,
) -> dict[str, Any]:
    """``latency_ms`` (median of ``repeats``), ``peak_mem_mb``, ``device``, ``batch_size``."""
    check_positive(batch_size=batch_size, repeats=repeats)
    net = space.decode(genotype, dataset, **space.resolve_size(size))
    shape = get_task(dataset).input_shape
    variables = benchmark_variables(net, shape)
    return {
        "latency_ms": measure_latency_ms(net, variables, shape, batch_size, repeats=repeats),
        "peak_mem_mb": peak_memory_mb(net, variables, shape, batch_size),
        "device": device_name(),
        "batch_size": batch_size,
    }
