"""An elastic decoder-only language-model space (LiteTransformerSearch / HAT / AutoFormer).

A genotype is ``int32[2 + 3 * L_max]``: entry 0 picks the model width ``d``, entry 1 the
number of layers ``L``, and layer ``l`` has three entries at ``2 + 3l``: its number of
heads, its MLP ratio (hidden size ``ratio * d``) and its head dimension. The entries of
layers ``>= L`` are carried but unused (as in HAT's elastic genotypes), so evolution keeps
them. Every layer must satisfy ``heads * head_dim <= width`` (the attention inner size
never exceeds the model width, as in GPT-2 where it equals it); ``sample``, ``mutate`` and
``neighbours`` only produce such genotypes (a mutation that breaks it keeps the changed
decision and lowers the coupled one).

The readable string names only the active layers, e.g. ``d128-L2:h4e2d32|h2e4d16`` (width
128, two layers: 4 heads, MLP ratio 2, head dim 32; then 2 heads, ratio 4, head dim 16);
``from_string`` fills unused layers with the first choices (:meth:`canonical`).

LiteTransformerSearch (Javaheripi et al., NeurIPS 2022) searches the same kind of space
(layers, width, per-layer heads and inner size) with the non-embedding parameter count as
a training-free proxy of perplexity; HAT (Wang et al., ACL 2020) and AutoFormer (Chen et
al., ICCV 2021) train one weight-sharing supernet whose sub-models are slices of its
largest weights, which :meth:`TransformerSpace.supernet` provides.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice
from nasjax.nets.transformer import (
    ElasticMasks,
    LMSpec,
    TransformerLM,
    elastic_forward,
    init_elastic,
    slice_params,
)
from nasjax.spaces.base import SearchSpace
from nasjax.transformer_costs import inference_costs, training_free_costs

DATASETS: tuple[str, ...] = ("bytes",)
"""What the models consume: byte-level text (vocabulary 256; ``nasjax.text``)."""

_LAYER = re.compile(r"h(\d+)e(\d+)d(\d+)")
_HEAD = re.compile(r"d(\d+)-L(\d+)")


def _check_options(name: str, values: tuple[int, ...]) -> None:
    if not values or any(int(v) < 1 for v in values) or list(values) != sorted(set(values)):
        raise NasjaxError(f"{name} must be increasing integers >= 1, got {values!r}")


@dataclasses.dataclass(frozen=True)
class TransformerSpace(SearchSpace):
    """Decoder-only LMs: width, depth, and per layer heads, MLP ratio and head dimension."""

    num_choices: tuple[int, ...] = dataclasses.field(default=(), init=False)
    widths: tuple[int, ...] = (64, 96, 128)
    layers: tuple[int, ...] = (1, 2, 3, 4)
    heads: tuple[int, ...] = (1, 2, 4)
    mlp_ratios: tuple[int, ...] = (1, 2, 4)
    head_dims: tuple[int, ...] = (16, 32)
    max_context: int = 128
    vocab_size: int = 256

    name: ClassVar[str] = "transformer"
    instead: ClassVar[dict[str, str]] = {
        **SearchSpace.instead,
        "relaxed": "search it with `nasjax search --space transformer` (population "
        "training) or through its weight-sharing supernet (space.supernet())",
        "latency_table": "run experiments/transformer_pareto.py for bits per byte against latency",
    }

    def __post_init__(self) -> None:
        for name in ("widths", "layers", "heads", "mlp_ratios", "head_dims"):
            _check_options(name, getattr(self, name))
        narrow = min(self.widths)
        if max(self.heads) * min(self.head_dims) > narrow or (
            min(self.heads) * max(self.head_dims) > narrow
        ):
            raise NasjaxError(
                f"every head count with the smallest head dim, and one head with the largest, "
                f"must fit the smallest width {narrow}: heads {self.heads}, head_dims "
                f"{self.head_dims}"
            )
        per_layer = (len(self.heads), len(self.mlp_ratios), len(self.head_dims))
        choices = (len(self.widths), len(self.layers)) + per_layer * self.max_layers
        object.__setattr__(self, "num_choices", choices)

    # ----------------------------------------------------------------- layout
    @property
    def max_layers(self) -> int:
        """``L_max``: layers whose entries every genotype carries."""
        return max(self.layers)

    def largest_spec(self) -> LMSpec:
        """The supernet: every decision at its largest value."""
        n = self.max_layers
        return LMSpec(
            max(self.widths),
            (max(self.heads),) * n,
            (max(self.head_dims),) * n,
            (max(self.mlp_ratios),) * n,
            self.vocab_size,
            self.max_context,
        )

    def _values(self, g: Any) -> tuple[jax.Array, ...]:
        """(width, layers, heads[..., L], ratios[..., L], head_dims[..., L]) of ``g``."""
        g = jnp.asarray(g, jnp.int32)
        t = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        return (
            t(self.widths)[g[..., 0]],
            t(self.layers)[g[..., 1]],
            t(self.heads)[g[..., 2::3]],
            t(self.mlp_ratios)[g[..., 3::3]],
            t(self.head_dims)[g[..., 4::3]],
        )

    # ----------------------------------------------------------------- validity
    def is_valid(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """In range and ``heads * head_dim <= width`` in every layer (``bool[...]``)."""
        ok = super().is_valid(genotype)
        if jnp.shape(genotype)[-1:] != (self.num_decisions,):
            return ok
        g = jnp.clip(jnp.asarray(genotype, jnp.int32), 0, self._radix() - 1)
        width, _, heads, _, head_dims = self._values(g)
        return ok & jnp.all(heads * head_dims <= width[..., None], axis=-1)

    def validate(self, genotype: object) -> np.ndarray:
        """Host-side check: ranges, then ``heads * head_dim <= width`` per layer.

        Raises:
          NasjaxError: naming the layer, its sizes and the head counts that would fit.
        """
        g = super().validate(genotype)
        width = self.widths[g[0]]
        for layer in range(self.max_layers):
            h, e = self.heads[g[2 + 3 * layer]], self.head_dims[g[4 + 3 * layer]]
            if h * e > width:
                fit = [str(n) for n in self.heads if n * e <= width]
                raise NasjaxError(
                    f"genotype {g.tolist()}: layer {layer} has {h} heads x head dim {e} = "
                    f"{h * e} > width {width}; heads * head_dim must be <= width (heads that "
                    f"fit with head dim {e}: {', '.join(fit)})"
                )
        return g

    def repair(self, genotype: jnp.ndarray, changed: Any = None) -> jnp.ndarray:
        """Makes every layer satisfy ``heads * head_dim <= width`` (jittable).

        In a layer that breaks it the head count is lowered to the largest that fits,
        unless ``changed`` (``bool[..., D]``) marks that layer's head count as the decision
        just changed: then its head dimension is lowered instead, so the change stays.
        """
        g = jnp.asarray(genotype, jnp.int32)
        width, _, heads, _, head_dims = self._values(g)
        w = width[..., None, None]
        h_opts, e_opts = jnp.asarray(self.heads), jnp.asarray(self.head_dims)
        max_h = jnp.sum(h_opts * head_dims[..., None] <= w, -1) - 1
        max_e = jnp.sum(e_opts * heads[..., None] <= w, -1) - 1
        keep_heads = jnp.zeros_like(max_h, bool) if changed is None else changed[..., 2::3]
        new_h = jnp.where(keep_heads, g[..., 2::3], jnp.minimum(g[..., 2::3], max_h))
        new_e = jnp.where(keep_heads, jnp.minimum(g[..., 4::3], max_e), g[..., 4::3])
        return g.at[..., 2::3].set(new_h).at[..., 4::3].set(new_e)

    def sample_from_uniform(self, u: jnp.ndarray) -> jnp.ndarray:
        """Uniform draws per decision, then :meth:`repair` (head counts lowered to fit)."""
        return self.repair(super().sample_from_uniform(u))

    def mutate_from_uniform(
        self, u: jnp.ndarray, genotype: jnp.ndarray, rule: str = "uniform"
    ) -> jnp.ndarray:
        """One decision changed (never a no-op), then :meth:`repair` keeping that change."""
        g = jnp.asarray(genotype, jnp.int32)
        child = super().mutate_from_uniform(u, g, rule)
        return self.repair(child, child != g)

    def neighbours(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """Every one-decision change of ``genotype``, each repaired keeping its change."""
        g = jnp.asarray(genotype, jnp.int32)
        rows = super().neighbours(g)
        return self.repair(rows, rows != g)

    def repaired_strategy(self, strategy: Any) -> Any:
        """``strategy`` whose ``ask`` repairs its candidates (:meth:`repair`).

        Strategies that build children without the space's ``mutate`` (NSGA-II's uniform
        crossover and per-decision resets, REINFORCE's sampling) can break
        ``heads * head_dim <= width``; this keeps every asked genotype valid.
        """

        def ask(key: jax.Array, state: Any) -> tuple[jax.Array, Any]:
            population, state = strategy.ask(key, state)
            return self.repair(population), state

        return strategy._replace(ask=ask)

    # ----------------------------------------------------------------- strings
    def spec(self, genotype: object) -> LMSpec:
        """The decoded model's sizes (host-side; the genotype is validated)."""
        g = self.validate(genotype)
        n = self.layers[g[1]]
        return LMSpec(
            width=self.widths[g[0]],
            heads=tuple(self.heads[g[2 + 3 * i]] for i in range(n)),
            head_dims=tuple(self.head_dims[g[4 + 3 * i]] for i in range(n)),
            mlp_ratios=tuple(self.mlp_ratios[g[3 + 3 * i]] for i in range(n)),
            vocab_size=self.vocab_size,
            max_context=self.max_context,
        )

    def to_string(self, genotype: object) -> str:
        """``d<width>-L<layers>:h<heads>e<mlp ratio>d<head dim>|...`` (active layers only)."""
        s = self.spec(genotype)
        layers = zip(s.heads, s.mlp_ratios, s.head_dims)
        return f"d{s.width}-L{s.num_layers}:" + "|".join(f"h{h}e{r}d{e}" for h, r, e in layers)

    def from_string(self, text: str) -> np.ndarray:
        """Parses ``d128-L2:h4e2d32|h2e4d16``; unused layers get the first choices.

        Raises:
          NasjaxError: for a malformed string or a value that is not a choice of the space
            (naming the valid choices), or a layer whose heads do not fit the width.
        """
        example = "d128-L2:h4e2d32|h2e4d16"
        head, sep, body = text.strip().partition(":")
        match = _HEAD.fullmatch(head)
        if not sep or match is None:
            raise NasjaxError(f"malformed transformer arch string {text!r}; e.g. {example}")
        width, n = int(match[1]), int(match[2])
        check_choice("width", width, self.widths)
        check_choice("number of layers", n, self.layers)
        parts = body.split("|")
        if len(parts) != n:
            raise NasjaxError(
                f"transformer arch string {text!r} says L{n} but lists {len(parts)} layers"
            )
        g = np.zeros(self.num_decisions, np.int32)
        g[0], g[1] = self.widths.index(width), self.layers.index(n)
        for i, part in enumerate(parts):
            m = _LAYER.fullmatch(part)
            if m is None:
                raise NasjaxError(f"malformed layer {part!r} in {text!r}; e.g. {example}")
            values = (int(m[1]), int(m[2]), int(m[3]))
            options = (("heads", self.heads), ("MLP ratio", self.mlp_ratios))
            for j, (what, choices) in enumerate(options + (("head dim", self.head_dims),)):
                check_choice(f"{what} (layer {i})", values[j], choices)
                g[2 + 3 * i + j] = choices.index(values[j])
        return self.validate(g)

    def canonical(self, genotype: object) -> np.ndarray:
        """The genotype with unused layers at their first choices (``from_string(to_string)``)."""
        return self.from_string(self.to_string(genotype))

    # ----------------------------------------------------------------- networks
    def decode(
        self, genotype: object, dataset: str = "bytes", *, dtype: Any = jnp.float32, **size: int
    ) -> TransformerLM:
        """The specialised Flax model: ``apply({"params": p}, tokens int32[B, T]) -> logits``
        (any context up to ``max_context``; ``size`` is checked, the model has no other)."""
        self._check(dataset, size)
        return TransformerLM(self.spec(genotype), dtype)

    # ----------------------------------------------------------------- the space contract
    @property
    def data_kind(self) -> str:
        """Byte-level language modelling (``nasjax.text``)."""
        return "text"

    @property
    def default_size(self) -> dict[str, int]:
        """``context``: tokens per window (64). Not a weight shape, but it sets the FLOPs per
        token, the latency and the training windows, so the costs depend on it."""
        return {"context": 64}

    def _check(self, dataset: str, size: dict[str, int]) -> int:
        check_choice("dataset", dataset, DATASETS)
        return self.resolve_size(size)["context"]

    def functional(self, dataset: str = "bytes", **size: int) -> ElasticSupernet:
        """The elastic supernet: ``init(key)``, ``apply(params, genotype, tokens)``."""
        self._check(dataset, size)
        return self.supernet()

    def costs(self, genotype: object, dataset: str = "bytes", **size: int) -> dict[str, int]:
        """``decoder_params``, ``embedding_params``, ``total_params``, ``flops_per_token``
        at ``context`` (:func:`nasjax.transformer_costs.training_free_costs`)."""
        return training_free_costs(self.spec(genotype), self._check(dataset, size))

    def measure(
        self,
        genotype: object,
        dataset: str = "bytes",
        *,
        batch_size: int = 1,
        repeats: int = 20,
        **size: int,
    ) -> dict[str, Any]:
        """``latency_ms`` of a forward pass over the context, ``generate_ms_per_token``
        (prefill half, generate half with a KV cache; None for a context of 1),
        ``peak_mem_mb``, ``device`` and ``batch_size``."""
        context = self._check(dataset, size)
        return inference_costs(self.spec(genotype), context, batch_size, repeats)

    def masks(self, genotype: jnp.ndarray) -> ElasticMasks:
        """The sub-model's 0/1 masks in the supernet's largest weights (jittable)."""
        big = self.largest_spec()
        width, n, heads, ratios, head_dims = self._values(genotype)
        hmax, emax, zmax = big.heads[0], big.head_dims[0], big.mlp_ratios[0] * big.width
        return ElasticMasks(
            width=(jnp.arange(big.width) < width).astype(jnp.float32),
            heads=(
                (jnp.arange(hmax)[:, None] < heads[:, None, None])
                & (jnp.arange(emax)[None, :] < head_dims[:, None, None])
            ).astype(jnp.float32),
            hidden=(jnp.arange(zmax) < (ratios * width)[:, None]).astype(jnp.float32),
            layer_on=jnp.arange(self.max_layers) < n,
            scale=1.0 / jnp.sqrt(head_dims.astype(jnp.float32)),
        )

    def supernet(self) -> ElasticSupernet:
        """The weight-sharing elastic supernet of this space (AutoFormer / HAT)."""
        return ElasticSupernet(self)


@dataclasses.dataclass(frozen=True)
class ElasticSupernet:
    """Largest weights shared by every sub-model; a genotype selects one by masks.

    ``apply(params, genotype, tokens)`` works on a traced genotype, so
    ``jax.vmap(apply, in_axes=(None, 0, None))`` scores a population of different
    sub-models with the same weights in one call (:meth:`apply_population`).
    """

    space: TransformerSpace

    def init(self, key: jax.Array) -> dict:
        """The largest weights (GPT-2 initialiser), blocks stacked on a leading axis."""
        return init_elastic(key, self.space.largest_spec())

    def apply(
        self, params: dict, genotype: jax.Array, tokens: jax.Array, dtype: Any = jnp.float32
    ) -> jax.Array:
        """Logits ``float32[B, T, V]`` of sub-model ``genotype`` on ``tokens [B, T]``."""
        return elastic_forward(params, self.space.masks(genotype), tokens, dtype)

    def apply_population(self, params: dict, genotypes: jax.Array, tokens: jax.Array) -> Any:
        """Logits ``float32[P, B, T, V]`` of every genotype of ``int32[P, D]`` (``vmap``)."""
        return jax.vmap(self.apply, in_axes=(None, 0, None))(params, genotypes, tokens)

    def slice(self, params: dict, genotype: object) -> dict:
        """The decoded model's weights (``{"params": ...}``) cut from the supernet's."""
        return {"params": slice_params(params, self.space.spec(genotype))}
