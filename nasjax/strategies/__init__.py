"""Search strategies: how the next candidates are chosen, as ask/tell over pytree state.

Fitness is MAXIMISED (accuracy-like) everywhere; NaN fitness is treated as the worst
value (``-inf``). ``STRATEGIES`` maps config names to factories; ``make_strategy`` builds
one by name. ``"nsga2"`` is multi-objective: its ``tell`` takes ``fitness float[B, M]`` (every
objective maximised) and raises ``NasjaxError`` for scalar fitness unless
``num_objectives=1``. For cost-constrained single-objective search, tell any strategy
:func:`constrained_fitness` (see ``nasjax.strategies.constraints``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nasjax.errors import NasjaxError, check_choice
from nasjax.spaces.base import SearchSpace
from nasjax.strategies.bananas import BananasState, bananas
from nasjax.strategies.base import BestSoFar, Strategy, sanitize_fitness
from nasjax.strategies.constraints import (
    check_bound_satisfiable,
    constrained_fitness,
    is_feasible,
)
from nasjax.strategies.evolution import EvolutionState, regularized_evolution
from nasjax.strategies.local_search import LocalSearchState, local_search
from nasjax.strategies.nsga2 import NSGA2State, nsga2
from nasjax.strategies.proxy_guided import ProxyGuidedState, proxy_guided_evolution
from nasjax.strategies.random_search import RandomSearchState, random_search
from nasjax.strategies.reinforce import ReinforceState, reinforce

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "random": random_search,
    "rea": regularized_evolution,
    "reinforce": reinforce,
    "nsga2": nsga2,
    "bananas": bananas,
    "local_search": local_search,
}


def make_strategy(name: str, space: SearchSpace, **kwargs: Any) -> Strategy:
    """Builds the strategy registered as ``name`` in ``STRATEGIES``.

    Args:
      name: a key of ``STRATEGIES``, e.g. ``"rea"``.
      space: the search space.
      **kwargs: hyper-parameters of that strategy's factory.

    Raises:
      NasjaxError: for an unknown name or hyper-parameter (naming the valid ones), or a
        hyper-parameter out of range.
    """
    check_choice("strategy", name, STRATEGIES)
    factory = STRATEGIES[name]
    params = list(inspect.signature(factory).parameters)[1:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise NasjaxError(
            f"unknown hyper-parameter(s) {', '.join(unknown)} for strategy {name!r}; "
            f"valid choices: {', '.join(params)}"
        )
    return factory(space, **kwargs)


__all__ = [
    "STRATEGIES",
    "BananasState",
    "BestSoFar",
    "EvolutionState",
    "LocalSearchState",
    "NSGA2State",
    "ProxyGuidedState",
    "RandomSearchState",
    "ReinforceState",
    "Strategy",
    "check_bound_satisfiable",
    "constrained_fitness",
    "bananas",
    "is_feasible",
    "local_search",
    "make_strategy",
    "nsga2",
    "proxy_guided_evolution",
    "random_search",
    "regularized_evolution",
    "reinforce",
    "sanitize_fitness",
]
