"""Search spaces: genotype arrays <-> networks, strings and dense codes."""

from __future__ import annotations

from nasjax.errors import check_choice
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.nb201 import NB201Space

SPACES: dict[str, type[SearchSpace]] = {"nb201": NB201Space}


def make_space(name: str) -> SearchSpace:
    """The search space registered under ``name``; a clear error for unknown names."""
    check_choice("space", name, SPACES)
    return SPACES[name]()


__all__ = ["SPACES", "NB201Space", "SearchSpace", "make_space"]
