"""Search spaces: genotype arrays <-> networks, strings and dense codes."""

from __future__ import annotations

from nasjax.errors import check_choice
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.contract import CAPABILITIES, SpaceContract, require, supports
from nasjax.spaces.darts import DartsSpace
from nasjax.spaces.llm import LlamaElasticSpace
from nasjax.spaces.nb201 import NB201Space
from nasjax.spaces.transformer import TransformerSpace

SPACES: dict[str, type[SearchSpace]] = {
    "nb201": NB201Space,
    "darts": DartsSpace,
    "transformer": TransformerSpace,
    "llm": LlamaElasticSpace,
}


def make_space(name: str) -> SearchSpace:
    """The search space registered under ``name``; a clear error for unknown names.

    ``"compress:<base>"`` wraps a base space with a per-layer compression policy
    (:class:`nasjax.spaces.compress.CompressedSpace`).
    """
    if name.startswith("compress:"):
        from nasjax.spaces.compress import COMPRESSIBLE, CompressedSpace

        base = name.partition(":")[2]
        check_choice("base space of compress:", base, COMPRESSIBLE)
        return CompressedSpace(base=make_space(base))
    check_choice("space", name, SPACES)
    return SPACES[name]()


__all__ = [
    "CAPABILITIES",
    "SPACES",
    "DartsSpace",
    "LlamaElasticSpace",
    "NB201Space",
    "SearchSpace",
    "SpaceContract",
    "TransformerSpace",
    "make_space",
    "require",
    "supports",
]
