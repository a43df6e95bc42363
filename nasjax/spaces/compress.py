"""A compression space wrapping a base space: per-layer bit-widths and keep-ratios as genes.

The genotype is the base genotype followed by, per compression unit
(:data:`nasjax.compression.nb201_qat.UNITS`), a weight bit-width, an activation bit-width
and (except for the classifier head) a channel keep-ratio, each an index into the space's
choices. Searching it searches architecture and compression jointly, as APQ (Wang et al.,
CVPR 2020); fixing the architecture (``fixed_arch``) leaves HAQ's (Wang et al., CVPR 2019)
mixed-precision policy search. Strings read ``<base arch>;stem=w8a8k1,stage0=w4a4k0.5,...``
(``w32``/``a32`` = full precision, ``k0.5`` = keep half the channels).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from nasjax.compression.costs import nb201_layers, summarize
from nasjax.compression.nb201_qat import UNITS, CompressedNB201
from nasjax.errors import NasjaxError
from nasjax.nets.prune import kept_channels
from nasjax.nets.quantize import FULL_PRECISION
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.decoded import decoded_costs, decoded_measure
from nasjax.spaces.nb201 import NB201Space
from nasjax.tasks import get_task

COMPRESSIBLE: tuple[str, ...] = ("nb201",)
"""Base spaces with a compressed network (``make_space("compress:nb201")``)."""

_UNIT = re.compile(r"^w(\d+)a(\d+)(?:k([0-9.]+))?$")


def _genes(unit: str) -> tuple[str, ...]:
    return ("w", "a") if unit == "head" else ("w", "a", "k")


@dataclasses.dataclass(frozen=True)
class CompressedSpace(SearchSpace):
    """Base architecture (or a fixed one) plus a per-unit compression policy.

    Attributes:
      base: the wrapped space (NB201).
      bit_choices: candidate bit-widths (32 = full precision), each in 2..16 or 32.
      keep_ratios: candidate channel keep-ratios in ``(0, 1]``.
      fixed_arch: a base genotype to compress; then the genotype holds the policy only.
      float_steps: training steps at full precision before the policy switches on (a QAT
        fine-tune inside one training run); 0 trains with the policy from scratch.
    """

    num_choices: tuple[int, ...] = dataclasses.field(default=(), init=False)
    base: SearchSpace = NB201Space()
    bit_choices: tuple[int, ...] = (2, 4, 6, 8, 32)
    keep_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    fixed_arch: tuple[int, ...] | None = None
    float_steps: int = 0

    instead: ClassVar[dict[str, str]] = {
        **SearchSpace.instead,
        "relaxed": "search bit-widths by gradient with nasjax.relaxation.bit_search "
        "(experiments/compression_search.py)",
    }

    def __post_init__(self) -> None:
        if not isinstance(self.base, NB201Space):
            raise NasjaxError(f"compression wraps the nb201 space only, got {self.base!r}")
        for b in self.bit_choices:
            if not (isinstance(b, int) and (2 <= b <= 16 or b == FULL_PRECISION)):
                raise NasjaxError(f"bit-width {b!r} is not supported; valid: 2..16 or 32")
        for k in self.keep_ratios:
            if not 0.0 < k <= 1.0:
                raise NasjaxError(
                    f"keep-ratio {k!r} is outside (0, 1] (0 would remove every channel)"
                )
        if self.fixed_arch is not None:
            self.base.validate(np.asarray(self.fixed_arch))
        nb, nk = len(self.bit_choices), len(self.keep_ratios)
        policy = [nb if g != "k" else nk for u in UNITS for g in _genes(u)]
        object.__setattr__(self, "num_choices", tuple(self._base_choices()) + tuple(policy))

    def _base_choices(self) -> tuple[int, ...]:
        return () if self.fixed_arch is not None else self.base.num_choices

    @property
    def num_base(self) -> int:
        """How many leading genotype entries are the base architecture (0 if fixed)."""
        return len(self._base_choices())

    def gene_names(self) -> list[str]:
        """Name of every genotype entry, e.g. ``"arch[3]"``, ``"stage0.w"``."""
        names = [f"arch[{i}]" for i in range(self.num_base)]
        return names + [f"{u}.{g}" for u in UNITS for g in _genes(u)]

    # ------------------------------------------------------------- genotype pieces
    def arch_of(self, genotype: Any) -> Any:
        """The base genotype (traced or not)."""
        if self.fixed_arch is not None:
            return jnp.asarray(self.fixed_arch, jnp.int32)
        return genotype[..., : self.num_base]

    def policy(self, genotype: Any) -> dict[str, dict[str, Any]]:
        """Traced per-unit ``{"w": bits, "a": bits, "k": keep}`` (float scalars)."""
        bits = jnp.asarray(self.bit_choices, jnp.float32)
        keeps = jnp.asarray(self.keep_ratios, jnp.float32)
        out, i = {}, self.num_base
        for u in UNITS:
            entry = {"w": bits[genotype[i]], "a": bits[genotype[i + 1]], "k": jnp.float32(1.0)}
            if u != "head":
                entry["k"] = keeps[genotype[i + 2]]
            out[u] = entry
            i += len(_genes(u))
        return out

    def decode_policy(self, genotype: Any) -> tuple[Any, dict]:
        """``(arch, policy)`` of a traced genotype (what the compressed network runs)."""
        return self.arch_of(genotype), self.policy(genotype)

    def policy_values(self, genotype: Any) -> dict[str, tuple]:
        """Host-side ``unit -> (w_bits, a_bits, keep_ratio)`` of a valid genotype."""
        g = self.validate(genotype)[self.num_base :]
        out, i = {}, 0
        for u in UNITS:
            keep = self.keep_ratios[g[i + 2]] if u != "head" else 1.0
            out[u] = (self.bit_choices[g[i]], self.bit_choices[g[i + 1]], keep)
            i += len(_genes(u))
        return out

    def encode(self, arch: Any, policy: dict[str, tuple]) -> np.ndarray:
        """The genotype of a base genotype and ``unit -> (w, a, keep)`` values."""
        genes = [] if self.fixed_arch is not None else [int(v) for v in arch]
        for u in UNITS:
            w, a, *k = policy[u]
            genes += [self._index("weight bit-width", u, w, self.bit_choices)]
            genes += [self._index("activation bit-width", u, a, self.bit_choices)]
            if u != "head":
                genes += [self._index("keep-ratio", u, k[0] if k else 1.0, self.keep_ratios)]
        return self.validate(np.asarray(genes, np.int32))

    def uniform(self, arch: Any, w: int, a: int, keep: float = 1.0) -> np.ndarray:
        """The genotype compressing every unit alike (the head keeps all its inputs)."""
        return self.encode(arch, {u: (w, a, keep) for u in UNITS})

    @staticmethod
    def _index(what: str, unit: str, value: float, choices: tuple) -> int:
        for i, c in enumerate(choices):
            if abs(float(c) - float(value)) < 1e-9:
                return i
        valid = ", ".join(f"{c:g}" for c in choices)
        raise NasjaxError(f"{what} {value:g} of {unit} is not in the space; valid choices: {valid}")

    # ------------------------------------------------------------- validity and strings
    def is_valid(self, genotype: Any) -> Any:
        """``True`` where the base part is a valid base genotype and every gene is in range."""
        g = jnp.asarray(genotype)
        ok = super().is_valid(g)
        if self.fixed_arch is None and g.shape[-1:] == (self.num_decisions,):
            ok = ok & self.base.is_valid(g[..., : self.num_base])
        return ok

    def validate(self, genotype: object) -> np.ndarray:
        """Host-side check naming the bad gene (base part checked by the base space)."""
        g = np.asarray(genotype)
        if g.shape != (self.num_decisions,) or not np.issubdtype(g.dtype, np.integer):
            return super().validate(genotype)  # the shape/dtype error
        if self.fixed_arch is None:
            try:
                self.base.validate(g[: self.num_base])
            except NasjaxError as err:
                raise NasjaxError(
                    f"invalid base architecture part of {g.tolist()}: {err}"
                ) from None
        return super().validate(g)  # every gene in range, named by gene_names

    def to_string(self, genotype: object) -> str:
        """``<base arch>;stem=w8a8k1,...,head=w8a8``."""
        g = self.validate(genotype)
        arch = self.fixed_arch if self.fixed_arch is not None else g[: self.num_base]
        parts = []
        for u, (w, a, k) in self.policy_values(g).items():
            parts.append(f"{u}=w{w}a{a}" + ("" if u == "head" else f"k{k:g}"))
        return self.base.to_string(np.asarray(arch)) + ";" + ",".join(parts)

    def from_string(self, text: str) -> np.ndarray:
        """Inverse of :meth:`to_string`; errors name the bad part and the valid choices."""
        arch_text, sep, policy_text = text.strip().partition(";")
        if not sep:
            raise NasjaxError(
                f"malformed compressed arch {text!r}: expected '<base arch>;"
                + ",".join(f"{u}=w8a8" + ("" if u == "head" else "k1") for u in UNITS)
                + "'"
            )
        arch = self.base.from_string(arch_text)
        if self.fixed_arch is not None and tuple(arch) != tuple(self.fixed_arch):
            raise NasjaxError(
                f"architecture {arch_text!r} differs from this space's fixed one "
                f"{self.base.to_string(np.asarray(self.fixed_arch))!r}"
            )
        policy = {}
        for part in policy_text.split(","):
            unit, _, spec = part.strip().partition("=")
            if unit not in UNITS:
                raise NasjaxError(
                    f"unknown unit {unit!r} in {text!r}; valid choices: {', '.join(UNITS)}"
                )
            match = _UNIT.match(spec)
            if match is None or (unit == "head") != (match.group(3) is None):
                form = "w<bits>a<bits>" + ("" if unit == "head" else "k<keep-ratio>")
                raise NasjaxError(f"malformed policy {spec!r} of {unit}: expected {form}")
            w, a, k = match.groups()
            try:
                keep = 1.0 if k is None else float(k)
            except ValueError:
                raise NasjaxError(f"malformed keep-ratio {k!r} of {unit}") from None
            policy[unit] = (int(w), int(a), keep)
        missing = [u for u in UNITS if u not in policy]
        if missing:
            raise NasjaxError(f"compressed arch {text!r} misses units {', '.join(missing)}")
        return self.encode(arch, policy)

    # ------------------------------------------------------------- networks and costs
    def _check_channels(self, channels: int) -> None:
        for k in self.keep_ratios:
            kept_channels(k, channels)  # the narrowest stage has ``channels`` channels

    def functional(
        self, dataset: str = "cifar10", *, channels: int = 16, cells_per_stage: int = 5
    ) -> CompressedNB201:
        """The compressed network as ``init``/``apply`` of a genotype of this space."""
        self._check_channels(channels)
        net = self.base.functional(dataset, channels=channels, cells_per_stage=cells_per_stage)
        return CompressedNB201(net, self.decode_policy, self.bit_choices, self.float_steps)

    def decode(self, genotype: object, dataset: str = "cifar10", **kwargs: Any) -> Any:
        """The base architecture's specialised (uncompressed) Flax network."""
        g = self.validate(genotype)
        return self.base.decode(np.asarray(self.arch_of(g)), dataset, **kwargs)

    def compression_costs(
        self, genotype: object, dataset: str, *, channels: int = 16, cells_per_stage: int = 5
    ) -> dict[str, float]:
        """Exact ``bits_total``, ``weight_bits``, ``bitops``, ``macs_kept``, ``macs_dense``,
        ``mac_fraction_removed``, live ``params_kept`` and ``bits_dense`` (32-bit, unpruned);
        see :mod:`nasjax.compression.costs`. Closed forms, cheap per genotype."""
        g = self.validate(genotype)
        self._check_channels(channels)
        task = get_task(dataset)
        arch = [int(v) for v in np.asarray(self.arch_of(g))]
        shape = {
            "spatial": task.input_shape[:-1],
            "in_features": task.input_shape[-1],
            "num_classes": task.num_classes,
            "channels": channels,
            "cells_per_stage": cells_per_stage,
        }
        policy = self.policy_values(g)
        dense = {u: (FULL_PRECISION, FULL_PRECISION, 1.0) for u in UNITS}
        return summarize(nb201_layers(arch, policy, **shape), nb201_layers(arch, dense, **shape))

    # ------------------------------------------------------------- the space contract
    @property
    def name(self) -> str:  # type: ignore[override]
        """``compress:<base>``."""
        return f"compress:{self.base.name}"

    @property
    def default_size(self) -> dict[str, int]:
        """The base space's sizes."""
        return self.base.default_size

    def costs(self, genotype: object, dataset: str, **size: int) -> dict[str, Any]:
        """The uncompressed network's ``params``, ``macs``, ``flops``, then
        :meth:`compression_costs` and ``compression_ratio`` (dense bits / bits)."""
        size = self.resolve_size(size)
        out = {**decoded_costs(self, genotype, dataset, **size)}
        out.update(self.compression_costs(genotype, dataset, **size))
        out["compression_ratio"] = out["bits_dense"] / out["bits_total"]
        return out

    def measure(self, genotype: object, dataset: str, **options: int) -> dict[str, Any]:
        """Latency and peak memory of the uncompressed :meth:`decode` (float kernels)."""
        return decoded_measure(self, genotype, dataset, **options)
