"""Gradient-based search over a relaxed space (DARTS family).

A space provides its relaxed network (``space.relaxed(dataset, mode, **size)``, see
:mod:`nasjax.nets.relaxed`); :mod:`~nasjax.relaxation.methods` holds one jit-compiled
search step per method (``darts1``, ``darts2``, ``gdas``, ``pcdarts``), and
:func:`nasjax.search.gradient_search` runs the epochs with logs, checkpoints and resume.
"""

from nasjax.nets.gumbel import gumbel_softmax
from nasjax.nets.relaxed import ArchWeights, RelaxedNetwork, check_arch_logits
from nasjax.relaxation.methods import (
    METHODS,
    MethodConfig,
    SearchState,
    method_config,
    search_epoch,
    search_step,
)

__all__ = [
    "METHODS",
    "ArchWeights",
    "MethodConfig",
    "RelaxedNetwork",
    "SearchState",
    "check_arch_logits",
    "gumbel_softmax",
    "method_config",
    "search_epoch",
    "search_step",
]
