"""The ``SearchSpace`` base class: a fixed-shape integer genotype with mixed-radix decisions.

An architecture is data: a genotype is an ``int32[D]`` array whose entry ``d`` picks one of
``num_choices[d]`` options. Everything here is a pure ``jnp`` function of explicit PRNG keys
and genotypes, usable under ``jit``/``vmap``/``lax.scan``; subclasses add the strings and
the Flax networks (``decode`` and ``supernet``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice, check_positive
from nasjax.spaces.contract import capability_error, missing_capability

_DEFAULT_INSTEAD = {
    "decode": "it has no networks",
    "functional": "search it with a gradient method (relaxed) or a script of experiments/",
    "relaxed": "search it with `nasjax search` (population training)",
    "costs": "it has no networks to count",
    "measure": "it has no networks to time",
    "cost_table": "bound costs per genotype with space.costs",
    "latency_table": "measure single architectures with `nasjax info --latency`",
}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A space of genotypes ``int32[D]``; decision ``d`` takes values ``0..num_choices[d]-1``.

    Frozen and hashable, so a space can be a static argument of ``jax.jit``.
    """

    num_choices: tuple[int, ...]

    name: ClassVar[str] = "space"
    """The registry name (``make_space(name)``)."""
    instead: ClassVar[dict[str, str]] = _DEFAULT_INSTEAD
    """Per missing capability, what to use instead (the error's second half)."""
    mutation_rules: ClassVar[tuple[str, ...]] = ("uniform",)
    """Names of the rules that pick which decision ``mutate`` changes (see
    :meth:`mutation_weights`); ``"uniform"`` is every space's default."""

    # ----------------------------------------------------------------- shape facts
    @property
    def num_decisions(self) -> int:
        """Number of entries ``D`` of a genotype."""
        return len(self.num_choices)

    @property
    def size(self) -> int:
        """Number of distinct genotypes (the product of ``num_choices``)."""
        return math.prod(self.num_choices)

    @property
    def max_choices(self) -> int:
        """Largest number of options of any decision (the width of ``one_hot``)."""
        return max(self.num_choices)

    def _radix(self) -> jnp.ndarray:
        return jnp.asarray(self.num_choices, dtype=jnp.int32)

    # ----------------------------------------------------------------- sampling
    def sample(self, key: jax.Array, n: int) -> jnp.ndarray:
        """Draws ``n`` genotypes uniformly at random.

        Args:
          key: PRNG key.
          n: number of genotypes.

        Returns:
          ``int32[n, D]``.
        """
        return self.sample_from_uniform(jax.random.uniform(key, (n, self.num_decisions)))

    def sample_from_uniform(self, u: jnp.ndarray) -> jnp.ndarray:
        """``sample`` given its uniform draws ``u`` in ``[0, 1)`` of shape ``[..., D]``.

        Lets a strategy draw all of a step's randomness in one PRNG call.
        """
        values = jnp.floor(u * self._radix()).astype(jnp.int32)
        return jnp.minimum(values, self._radix() - 1)

    def mutate(self, key: jax.Array, genotype: jnp.ndarray, rule: str = "uniform") -> jnp.ndarray:
        """Changes exactly one decision to a different value (never a no-op).

        The decision is drawn by ``rule`` (:meth:`mutation_weights`; ``"uniform"``: uniform
        among those with more than one option), and its new value is uniform among the
        other options. Works on ``int32[..., D]``, mutating every genotype of the batch
        independently.
        """
        genotype = jnp.asarray(genotype, jnp.int32)
        return self.mutate_from_uniform(
            jax.random.uniform(key, genotype.shape[:-1] + (2,)), genotype, rule
        )

    def mutation_weights(self, rule: str) -> np.ndarray:
        """Probability that ``mutate`` under ``rule`` changes each decision, ``float64[D]``.

        ``"uniform"``: equal over the decisions with more than one option. A space whose
        reference code picks the decision another way lists that rule in
        :attr:`mutation_rules` and overrides this (e.g. NAS-Bench-201's ``"node_edge"``).

        Raises:
          NasjaxError: for a rule not in :attr:`mutation_rules`, naming the valid ones.
        """
        check_choice("mutation", rule, self.mutation_rules)
        mutable = (np.asarray(self.num_choices) > 1).astype(np.float64)
        return mutable / mutable.sum()

    def mutate_from_uniform(
        self, u: jnp.ndarray, genotype: jnp.ndarray, rule: str = "uniform"
    ) -> jnp.ndarray:
        """``mutate`` given its uniform draws ``u`` of shape ``[..., 2]``: ``u[..., 0]``
        picks the decision (by ``rule``), ``u[..., 1]`` the new value."""
        genotype = jnp.asarray(genotype, jnp.int32)
        radix = self._radix()
        if rule == "uniform":
            mutable = np.flatnonzero(np.asarray(self.num_choices) > 1)
            pick = jnp.minimum(
                jnp.floor(u[..., 0] * len(mutable)).astype(jnp.int32), len(mutable) - 1
            )
            decision = jnp.asarray(mutable, jnp.int32)[pick]
        else:  # inverse CDF of the rule's weights; decisions of weight 0 are never drawn
            weights = self.mutation_weights(rule)
            last = int(np.flatnonzero(weights > 0)[-1])
            edges = jnp.asarray(np.cumsum(weights)[:-1], jnp.float32)
            drawn = jnp.sum(u[..., 0, None] >= edges, axis=-1).astype(jnp.int32)
            decision = jnp.minimum(drawn, last)
        n = radix[decision]
        offset = 1 + jnp.minimum(jnp.floor(u[..., 1] * (n - 1)).astype(jnp.int32), n - 2)
        old = jnp.take_along_axis(genotype, decision[..., None], axis=-1)[..., 0]
        new = (old + offset) % n
        hit = jnp.arange(self.num_decisions) == decision[..., None]
        return jnp.where(hit, new[..., None], genotype)

    def neighbours(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """All genotypes that differ from ``genotype`` (``int32[D]``) in exactly one decision.

        Returns:
          ``int32[K, D]`` with ``K = sum(num_choices) - D``, ordered by decision, then value.
        """
        genotype = jnp.asarray(genotype, jnp.int32)
        rows = []
        for d, n in enumerate(self.num_choices):
            for offset in range(1, n):
                rows.append(genotype.at[d].set((genotype[d] + offset) % n))
        return jnp.stack(rows)

    # ----------------------------------------------------------------- validity and codes
    def is_valid(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """``True`` where a genotype ``int32[..., D]`` has D integer decisions, each in range."""
        g = jnp.asarray(genotype)
        if g.shape[-1:] != (self.num_decisions,) or not jnp.issubdtype(g.dtype, jnp.integer):
            return jnp.zeros(g.shape[:-1], bool)
        return jnp.all((g >= 0) & (g < self._radix()), axis=-1)

    def validate(self, genotype: object) -> np.ndarray:
        """Host-side check of one genotype; returns it as ``np.int32[D]``.

        Raises:
          NasjaxError: naming the bad entries and their valid ranges.
        """
        g = np.asarray(genotype)
        if g.shape != (self.num_decisions,) or not np.issubdtype(g.dtype, np.integer):
            raise NasjaxError(
                f"genotype {g.tolist()!r} must be {self.num_decisions} integers "
                f"(shape ({self.num_decisions},)), got shape {g.shape} and dtype {g.dtype}"
            )
        names = self.gene_names()
        bad = [
            f"{names[d]} = {v} (valid 0..{n - 1})"
            for d, (v, n) in enumerate(zip(g.tolist(), self.num_choices))
            if not 0 <= v < n
        ]
        if bad:
            raise NasjaxError(f"genotype {g.tolist()} is out of range: " + "; ".join(bad))
        return g.astype(np.int32)

    def gene_names(self) -> list[str]:
        """Name of every genotype entry in :meth:`validate`'s errors (``entry 3``); a space
        may name its decisions (``arch[3]``, ``stage0.w``)."""
        return [f"entry {d}" for d in range(self.num_decisions)]

    def to_index(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """Dense mixed-radix code in ``0..size-1`` (decision 0 most significant)."""
        if self.size > np.iinfo(np.int32).max:
            raise NasjaxError(f"space of {self.size} genotypes is too large for int32 codes")
        g = jnp.asarray(genotype, jnp.int32)
        strides = np.cumprod((1,) + self.num_choices[:0:-1])[::-1].copy()
        return jnp.sum(g * jnp.asarray(strides, jnp.int32), axis=-1)

    def from_index(self, index: jnp.ndarray) -> jnp.ndarray:
        """Inverse of ``to_index``: ``int32[...]`` codes to ``int32[..., D]`` genotypes."""
        rest = jnp.asarray(index, jnp.int32)
        digits = []
        for n in reversed(self.num_choices):
            digits.append(rest % n)
            rest = rest // n
        return jnp.stack(digits[::-1], axis=-1).astype(jnp.int32)

    def one_hot(self, genotype: jnp.ndarray, dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
        """Per-decision one-hot weights ``[..., D, max_choices]`` (the supernet's input)."""
        return jax.nn.one_hot(genotype, self.max_choices, dtype=dtype)

    def path_encoding(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """Features of genotypes ``int32[..., D]`` for a performance predictor, ``float32[..., F]``.

        Jittable. This default is the flattened :meth:`one_hot` (``F = D * max_choices``),
        the adjacency-style encoding White et al. (BANANAS, AAAI 2021) compare with; a
        space whose genotype is a cell graph overrides it with their *path encoding*
        (e.g. NAS-Bench-201).
        """
        g = jnp.asarray(genotype, jnp.int32)
        return self.one_hot(g).reshape(g.shape[:-1] + (self.num_decisions * self.max_choices,))

    # ----------------------------------------------------------------- space-specific
    def to_string(self, genotype: object) -> str:
        """Human-readable string of a genotype; subclasses use their paper's notation."""
        return ",".join(str(int(v)) for v in self.validate(genotype))

    def from_string(self, text: str) -> np.ndarray:
        """Inverse of ``to_string``."""
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise NasjaxError(f"malformed genotype string {text!r}") from None
        return self.validate(np.asarray(values))

    def repaired_strategy(self, strategy: Any) -> Any:
        """``strategy`` whose asked genotypes are valid; every in-range genotype is here."""
        return strategy

    # ----------------------------------------------------------------- network contract
    @property
    def data_kind(self) -> str:
        """What the networks consume: ``"images"`` (``nasjax.tasks``) or ``"text"``."""
        return "images"

    @property
    def default_size(self) -> dict[str, int]:
        """The size settings of the networks and their defaults (none here)."""
        return {}

    def resolve_size(self, size: dict[str, Any]) -> dict[str, int]:
        """``default_size`` updated by ``size``.

        Raises:
          NasjaxError: one line for an unknown key (naming the valid ones) or a value < 1.
        """
        valid = self.default_size
        unknown = [k for k in size if k not in valid]
        if unknown:
            keys = ", ".join(valid) or "none"
            raise NasjaxError(
                f"space {self.name!r} has no size {unknown[0]!r}; its size keys: {keys}"
            )
        check_positive(**size)
        return {**valid, **size}

    @missing_capability
    def decode(self, genotype: object, dataset: str, **size: int) -> Any:
        """The specialised module of one genotype."""
        raise capability_error(self, "decode")

    @missing_capability
    def functional(self, dataset: str, **size: int) -> Any:
        """Population-trainable ``init`` / ``apply`` over a traced genotype."""
        raise capability_error(self, "functional")

    @missing_capability
    def relaxed(self, dataset: str, mode: str, **size: int) -> Any:
        """The relaxed network for gradient search under ``mode``."""
        raise capability_error(self, "relaxed")

    @missing_capability
    def costs(self, genotype: object, dataset: str, **size: int) -> dict[str, Any]:
        """Exact counts of the decoded network."""
        raise capability_error(self, "costs")

    @missing_capability
    def measure(
        self, genotype: object, dataset: str, *, batch_size: int = 1, repeats: int = 20, **size: int
    ) -> dict[str, Any]:
        """Latency and peak memory on the current default device."""
        raise capability_error(self, "measure")

    @missing_capability
    def cost_table(self, metric: str, dataset: str, **size: int) -> np.ndarray:
        """Exact ``metric`` of every genotype, by ``to_index``."""
        raise capability_error(self, "cost_table")

    @missing_capability
    def latency_table(self, dataset: str, **size: int) -> Any:
        """A per-op latency model (``predict(genotypes)``)."""
        raise capability_error(self, "latency_table")
