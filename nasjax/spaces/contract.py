"""The search-space contract: what every space offers, as a ``typing.Protocol``.

A space is the genotype methods of :class:`nasjax.spaces.base.SearchSpace` plus a network
side. Every network method takes the dataset and the space's size settings as keywords
(``default_size``: e.g. NB201's ``channels`` and ``cells_per_stage``; the transformer's
``context``); an unknown size key is one :class:`~nasjax.errors.NasjaxError` line naming
the valid keys (:meth:`SearchSpace.resolve_size`).

A space may lack a capability (DARTS has no population trainer, only NB201 has exact cost
tables): the base class's default raises :class:`~nasjax.errors.CapabilityError`, one line
naming the space, the capability and what to use instead. :func:`supports` asks first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import jax
import numpy as np

from nasjax.errors import CapabilityError, check_choice

CAPABILITIES: dict[str, str] = {
    "decode": "specialised network",
    "functional": "population trainer",
    "relaxed": "relaxed network for gradient search",
    "costs": "exact cost counts",
    "measure": "latency measurement",
    "cost_table": "exact cost table of every genotype",
    "latency_table": "per-op latency model",
}
"""Network capabilities a space may have: method name -> what it gives."""

DATA_KINDS = ("images", "text")
"""What a space's networks consume: classification datasets (``nasjax.tasks``) or bytes."""

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def missing_capability(fn: _Fn) -> _Fn:
    """Marks a base-class default that raises :class:`CapabilityError` (see :func:`supports`)."""
    fn.__missing_capability__ = True  # type: ignore[attr-defined]
    return fn


def supports(space: Any, capability: str) -> bool:
    """Whether ``space`` implements ``capability`` (a key of :data:`CAPABILITIES`)."""
    check_choice("capability", capability, CAPABILITIES)
    method = getattr(type(space), capability, None)
    return method is not None and not getattr(method, "__missing_capability__", False)


def require(space: Any, capability: str) -> None:
    """Raises the space's one-line :class:`CapabilityError` unless it has ``capability``."""
    if not supports(space, capability):
        raise capability_error(space, capability)


def capability_error(space: Any, capability: str) -> CapabilityError:
    """``space '<name>' has no <what> (<capability>); <what to use instead>``."""
    hint = space.instead.get(capability, "")
    return CapabilityError(
        f"space {space.name!r} has no {CAPABILITIES[capability]} ({capability})"
        + (f"; {hint}" if hint else "")
    )


@runtime_checkable
class SpaceContract(Protocol):
    """What every search space offers (:class:`nasjax.spaces.base.SearchSpace` and its
    subclasses implement it; network capabilities may raise :class:`CapabilityError`)."""

    num_choices: tuple[int, ...]

    # ---------------------------------------------------------------- genotypes
    @property
    def name(self) -> str:
        """The registry name (``make_space(name)`` gives this space)."""

    @property
    def num_decisions(self) -> int:
        """Entries ``D`` of a genotype ``int32[D]``."""

    @property
    def size(self) -> int:
        """Number of distinct genotypes."""

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``int32[n, D]`` valid genotypes."""

    def mutate(self, key: jax.Array, genotype: jax.Array, rule: str = ...) -> jax.Array:
        """One decision changed (batched over leading axes), picked by ``rule``."""

    @property
    def mutation_rules(self) -> tuple[str, ...]:
        """Rules ``mutate`` accepts (``"uniform"`` always)."""

    def mutation_weights(self, rule: str) -> np.ndarray:
        """``float64[D]``: the probability ``mutate`` under ``rule`` changes each decision."""

    def neighbours(self, genotype: jax.Array) -> jax.Array:
        """``int32[K, D]``: every one-decision change."""

    def is_valid(self, genotype: jax.Array) -> jax.Array:
        """``bool[...]``, jittable."""

    def validate(self, genotype: object) -> np.ndarray:
        """Host-side check; ``np.int32[D]`` or a one-line ``NasjaxError``."""

    def to_index(self, genotype: jax.Array) -> jax.Array:
        """Dense code ``0..size-1``."""

    def from_index(self, index: jax.Array) -> jax.Array:
        """Inverse of ``to_index``."""

    def to_string(self, genotype: object) -> str:
        """The paper's notation."""

    def from_string(self, text: str) -> np.ndarray:
        """Inverse of ``to_string``."""

    def one_hot(self, genotype: jax.Array, dtype: Any = ...) -> jax.Array:
        """``[..., D, max_choices]`` one-hot weights."""

    def path_encoding(self, genotype: jax.Array) -> jax.Array:
        """``float32[..., F]`` predictor features (BANANAS' path encoding or a one-hot)."""

    # ---------------------------------------------------------------- networks
    @property
    def default_size(self) -> dict[str, int]:
        """The size settings of the space's networks and their defaults."""

    @property
    def data_kind(self) -> str:
        """``"images"`` or ``"text"`` (:data:`DATA_KINDS`)."""

    def resolve_size(self, size: dict[str, int]) -> dict[str, int]:
        """``default_size`` updated by ``size``; unknown keys are one error line."""

    def decode(self, genotype: object, dataset: str, **size: int) -> Any:
        """The specialised module of one genotype."""

    def functional(self, dataset: str, **size: int) -> Any:
        """Population-trainable ``init`` / ``apply`` over a traced genotype."""

    def relaxed(self, dataset: str, mode: str, **size: int) -> Any:
        """The relaxed network (:class:`nasjax.nets.relaxed.RelaxedNetwork`)."""

    def costs(self, genotype: object, dataset: str, **size: int) -> dict[str, Any]:
        """Exact counts (CNNs: ``params``, ``macs``, ``flops``)."""

    def measure(
        self, genotype: object, dataset: str, *, batch_size: int, repeats: int, **size: int
    ) -> dict[str, Any]:
        """Latency and peak memory measured on the current default device."""

    def cost_table(self, metric: str, dataset: str, **size: int) -> np.ndarray:
        """Exact ``metric`` of every genotype, by ``to_index``."""

    def latency_table(self, dataset: str, **size: int) -> Any:
        """A per-op latency model with ``predict(genotypes)``."""
