"""Elastic structured pruning of a pretrained LLaMA: the dense model is the supernet.

Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation"; Sreenivas et al. 2024, "LLM Pruning and Distillation in Practice: The
Minitron Approach") prunes a trained model along depth (whole blocks), attention heads,
FFN neurons and the embedding (residual) width by *activation-based importance* measured
on a little calibration text, keeping the top-k of each ranking; Flextron (Cai et al.
2024) and Puzzle (Bercovich et al. 2024) let every block choose its own sizes. Here a
genotype ``int32[1 + 3L]`` makes those choices (:class:`ElasticChoices`): entry 0 the
global width (a multiple of ``step``), then per layer ``(keep, KV groups - 1, FFN index)``.
A KV group is one K/V head and the ``n_heads / n_kv_heads`` query heads that read it, so
grouped-query attention stays intact.

**Importance** (:func:`importance`), one pass of the dense model over calibration windows:
a head's score is the L2 norm of its attention output per token, a neuron's the magnitude
of its SwiGLU output (the ``w_down`` input), an embedding channel's the magnitude of every
RMSNorm output on it (each block's two norms and the final one, summed). Minitron compares
aggregations over the batch and the sequence (mean, L2 norm, variance); here: the mean over
each sequence, then the L2 norm over the calibration sequences. A KV group's score is the
sum of its heads'; a layer's is ShortGPT's block influence (Men et al. 2024,
:func:`nasjax.llm.one_shot.block_influence`). Rankings are computed once, on the dense model.

Two ways to run a genotype, tested equal up to float rounding:

* :func:`slice_params` cuts a real smaller model (a list of differently shaped blocks,
  which :func:`nasjax.llm.llama.forward` runs): fewer FLOPs, a faster forward pass;
* :func:`masked_forward` runs the dense weights with 0/1 masks built inside the compiled
  program from the genotype (:func:`masks`), so :func:`score_population` scores P
  different candidates in one compiled call (``lax.map`` over candidates: the memory of
  one forward pass; split over devices by ``shard_map``). RMSNorm of the narrower model
  averages over its kept channels: ``x * rsqrt(sum(x^2 m) / k + eps)``; a dropped block
  is skipped by ``lax.cond`` (under ``lax.map`` only the taken branch runs).

Costs are exact and need no weights (:func:`costs`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from nasjax.errors import NasjaxError, check_positive
from nasjax.llm.llama import (
    DType,
    LlamaConfig,
    Params,
    Widths,
    block,
    block_taps,
    embed,
    head,
    rms_norm,
)
from nasjax.llm.one_shot import block_influence

POPULATION_AXIS = "population"
"""The mesh axis :func:`score_population` splits candidates over."""


def _grid(size: int, step: int) -> tuple[int, ...]:
    """Multiples of ``step`` below ``size``, then ``size`` itself."""
    return tuple(range(step, size, step)) + (size,)


class SubnetShape(NamedTuple):
    """A genotype's sub-network: the global width and per layer ``(kept, groups, ffn)``
    (``kept`` 0 or 1; ``groups`` KV groups kept; ``ffn`` FFN channels kept)."""

    width: int
    layers: tuple[tuple[int, int, int], ...]

    @property
    def kept(self) -> list[int]:
        """Indices of the kept layers."""
        return [i for i, (keep, _, _) in enumerate(self.layers) if keep]


@dataclasses.dataclass(frozen=True)
class ElasticChoices:
    """The options of every decision of a genotype ``int32[1 + 3L]`` (hashable: static).

    Entry 0 indexes :attr:`widths`; layer ``l`` has ``keep`` (0 or 1) at ``1 + 3l``, KV
    groups kept minus one (``0..n_kv_heads-1``) at ``2 + 3l`` and an index into
    :attr:`ffn_sizes` at ``3 + 3l``. Sizes are multiples of ``step`` (64 by default) up to
    the dense size, which is always an option. ``tied``: the LM head is the embedding
    (SmolLM2), so the costs count one ``V x width`` table.
    """

    config: LlamaConfig
    step: int = 64
    tied: bool = True

    def __post_init__(self) -> None:
        check_positive(step=self.step)

    @property
    def widths(self) -> tuple[int, ...]:
        """Residual-stream widths on offer (576 -> 64, 128, ..., 576)."""
        return _grid(self.config.dim, self.step)

    @property
    def ffn_sizes(self) -> tuple[int, ...]:
        """FFN channel counts on offer (1536 -> 64, ..., 1536)."""
        return _grid(self.config.ffn_dim, self.step)

    @property
    def group_size(self) -> int:
        """Query heads per KV group."""
        return self.config.n_heads // self.config.n_kv_heads

    @property
    def num_choices(self) -> tuple[int, ...]:
        """Options per genotype entry."""
        per_layer = (2, self.config.n_kv_heads, len(self.ffn_sizes))
        return (len(self.widths),) + per_layer * self.config.n_layers

    def gene_names(self) -> list[str]:
        """``width``, then ``layer<i>.keep``, ``layer<i>.groups``, ``layer<i>.ffn``."""
        names = ["width"]
        for i in range(self.config.n_layers):
            names += [f"layer{i}.keep", f"layer{i}.groups", f"layer{i}.ffn"]
        return names

    def dense_genotype(self) -> np.ndarray:
        """The genotype of the whole model (every option at its largest)."""
        return np.asarray(self.num_choices, np.int32) - 1

    def validate(self, genotypes: Any) -> np.ndarray:
        """``int32[..., 1 + 3L]`` in range, returned as numpy.

        Raises:
          NasjaxError: one line naming the wrong length or the first bad entry and its range.
        """
        g = np.asarray(genotypes)
        radix = np.asarray(self.num_choices)
        if g.ndim < 1 or g.shape[-1] != len(radix) or not np.issubdtype(g.dtype, np.integer):
            raise NasjaxError(
                f"an elastic LLaMA genotype is {len(radix)} integers (1 + 3 x "
                f"{self.config.n_layers} layers), got shape {g.shape} and dtype {g.dtype}"
            )
        bad = np.argwhere((g < 0) | (g >= radix))
        if len(bad):
            d = int(bad[0][-1])
            raise NasjaxError(
                f"genotype entry {self.gene_names()[d]} = {int(g[tuple(bad[0])])} is out of "
                f"range; valid 0..{radix[d] - 1}"
            )
        return g.astype(np.int32)

    def sizes(self, genotypes: Any, xp: Any = np) -> tuple[Any, Any, Any, Any]:
        """``(width [...], keep [..., L], groups [..., L], ffn [..., L])`` of genotypes,
        with ``xp`` numpy or ``jax.numpy`` (jittable; no validation)."""
        g = xp.asarray(genotypes)
        return (
            xp.asarray(self.widths)[g[..., 0]],
            g[..., 1::3],
            g[..., 2::3] + 1,
            xp.asarray(self.ffn_sizes)[g[..., 3::3]],
        )

    def shape_of(self, genotype: Any) -> SubnetShape:
        """The sub-network of one genotype (validated)."""
        width, keep, groups, ffn = self.sizes(self.validate(genotype))
        if np.ndim(width):
            raise NasjaxError(f"shape_of takes one genotype, got shape {np.shape(genotype)}")
        layers = tuple((int(k), int(g), int(f)) for k, g, f in zip(keep, groups, ffn))
        return SubnetShape(int(width), layers)

    @property
    def dense_params(self) -> int:
        """Parameters of the dense model."""
        return int(costs(self, self.dense_genotype())["params"])


# ----------------------------------------------------------------- importance
class Importance(NamedTuple):
    """Activation-based importance of the dense model and the rankings it gives.

    Scores (larger = more important): ``heads [L, H]``, ``groups [L, KV]`` (sum of each
    group's heads), ``ffn [L, F]``, ``channels [D]``, ``block_influence [L]``. Orders
    (indices, most important first): ``group_order [L, KV]``, ``ffn_order [L, F]``,
    ``channel_order [D]``. All numpy.
    """

    heads: np.ndarray
    groups: np.ndarray
    ffn: np.ndarray
    channels: np.ndarray
    block_influence: np.ndarray
    group_order: np.ndarray
    ffn_order: np.ndarray
    channel_order: np.ndarray


def _seq_mean_squared(a: jax.Array) -> jax.Array:
    """``[B, T, C]`` magnitudes -> ``[C]``: per-sequence means, squared, summed over B."""
    return jnp.sum(jnp.mean(a.astype(jnp.float32), axis=1) ** 2, axis=0)


@functools.partial(jax.jit, static_argnames="config")
def _activation_squares(
    params: Params, tokens: jax.Array, config: LlamaConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sums over ``tokens``' sequences of squared per-sequence mean magnitudes:
    heads ``[L, H]``, FFN neurons ``[L, F]``, norm outputs ``[2L + 1, D]``."""

    def body(x: jax.Array, layer: dict) -> tuple[jax.Array, tuple]:
        y, taps = block_taps(layer, x, config)
        b, t, _ = x.shape
        heads = taps["attn_out"].astype(jnp.float32).reshape(b, t, -1, config.head_dim)
        norms = jnp.stack([_seq_mean_squared(jnp.abs(taps[k])) for k in ("attn_in", "ffn_in")])
        stats = (
            _seq_mean_squared(jnp.linalg.norm(heads, axis=-1)),
            _seq_mean_squared(jnp.abs(taps["ffn_hidden"])),
            norms,
        )
        return y, stats

    x, (heads, ffn, norms) = lax.scan(body, embed(params, tokens), params["layers"])
    final = rms_norm(x, params["final_norm"], config.norm_eps)
    final = _seq_mean_squared(jnp.abs(final))[None]
    norms = jnp.concatenate([norms.reshape(-1, x.shape[-1]), final])
    return heads, ffn, norms


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=-1, kind="stable").astype(np.int32)


def importance(
    params: Params, config: LlamaConfig, calibration: np.ndarray, batch_size: int = 8
) -> Importance:
    """Minitron's activation-based importance of the dense model (module docstring).

    Args:
      params: the dense model (stacked blocks).
      config: its config.
      calibration: ``int32[N, T]`` calibration sequences.
      batch_size: sequences per compiled call (memory only; the scores are equal).

    Returns:
      The scores and the rankings (:class:`Importance`).
    """
    check_positive(batch_size=batch_size)
    calibration = np.asarray(calibration, np.int32)
    if calibration.ndim != 2 or len(calibration) < 1:
        raise NasjaxError(f"calibration must be int32[N, T] with N >= 1, got {calibration.shape}")
    sums = None
    for start in range(0, len(calibration), batch_size):
        part = _activation_squares(params, calibration[start : start + batch_size], config)
        sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
    heads, ffn, norms = (np.sqrt(np.asarray(s, np.float64)) for s in sums)
    groups = heads.reshape(len(heads), config.n_kv_heads, -1).sum(-1)
    channels = norms.sum(0)
    divides = math.gcd(len(calibration), batch_size)  # equal batches: an exact token mean
    influence = block_influence(params, config, calibration, batch_size=divides)
    return Importance(
        heads, groups, ffn, channels, np.asarray(influence),
        _order(groups), _order(ffn), _order(channels),
    )  # fmt: skip


# ----------------------------------------------------------------- slicing
def _kept(order: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` indices of ``order`` in their original relative order."""
    return np.sort(np.asarray(order)[:k])


def slice_params(
    params: Params, choices: ElasticChoices, importance: Importance, genotype: Any
) -> Params:
    """The sub-network of ``genotype`` as a real, smaller model.

    ``layers`` becomes a list of the kept blocks only; every block keeps its top KV groups
    (with their query heads) and FFN channels, and the whole model its top ``width``
    residual channels (embedding columns, norm weights, linear rows and columns), all in
    their original relative order (so query head ``h`` still reads KV head ``h // group``).
    :func:`nasjax.llm.llama.forward` runs the result; its head counts come from the shapes.
    Cut on the host (numpy), returned as JAX arrays on the default device.
    """
    shape = choices.shape_of(genotype)
    hd, rep = choices.config.head_dim, choices.group_size
    host = jax.tree.map(np.asarray, params)  # numpy fancy indexing: no compile per shape
    channels = _kept(importance.channel_order, shape.width)
    out = {
        "embed": host["embed"][:, channels],
        "final_norm": host["final_norm"][channels],
    }
    if "lm_head" in host:
        out["lm_head"] = host["lm_head"][channels]
    stack, blocks = host["layers"], []
    for i in shape.kept:
        _, groups, ffn = shape.layers[i]
        kv = _kept(importance.group_order[i], groups)
        heads = (kv[:, None] * rep + np.arange(rep)).reshape(-1)
        q_cols = (heads[:, None] * hd + np.arange(hd)).reshape(-1)
        kv_cols = (kv[:, None] * hd + np.arange(hd)).reshape(-1)
        hidden = _kept(importance.ffn_order[i], ffn)
        cut = lambda name, rows, cols, i=i: stack[name][i][np.ix_(rows, cols)]  # noqa: E731
        blocks.append(
            {
                "attn_norm": stack["attn_norm"][i][channels],
                "wq": cut("wq", channels, q_cols),
                "wk": cut("wk", channels, kv_cols),
                "wv": cut("wv", channels, kv_cols),
                "wo": cut("wo", q_cols, channels),
                "ffn_norm": stack["ffn_norm"][i][channels],
                "w_gate": cut("w_gate", channels, hidden),
                "w_up": cut("w_up", channels, hidden),
                "w_down": cut("w_down", hidden, channels),
            }
        )
    out["layers"] = blocks
    return jax.tree.map(jnp.asarray, out)


# ----------------------------------------------------------------- masks
class Masks(NamedTuple):
    """0/1 masks of sub-networks in the dense weights (leading axes: candidates).

    ``channels [..., D]``, ``layers [..., L]`` (bool: block kept), ``heads [..., L, H]``
    (a KV group's mask repeated over its query heads), ``ffn [..., L, F]``; float32.
    """

    channels: jax.Array
    layers: jax.Array
    heads: jax.Array
    ffn: jax.Array


def masks(choices: ElasticChoices, importance: Importance, genotypes: Any) -> Masks:
    """Masks of ``int32[..., 1 + 3L]`` genotypes from the rankings (jittable: top-k is
    ``rank < k`` with ``rank`` the inverse permutation of an order)."""
    width, keep, groups, ffn = choices.sizes(jnp.asarray(genotypes, jnp.int32), jnp)
    rank = lambda order: jnp.argsort(jnp.asarray(order), axis=-1)  # noqa: E731
    group_on = rank(importance.group_order) < groups[..., None]
    return Masks(
        channels=(rank(importance.channel_order) < width[..., None]).astype(jnp.float32),
        layers=keep.astype(bool),
        heads=jnp.repeat(group_on, choices.group_size, axis=-1).astype(jnp.float32),
        ffn=(rank(importance.ffn_order) < ffn[..., None]).astype(jnp.float32),
    )


def _masked_block(
    x: jax.Array,
    layer: dict,
    mask: tuple[jax.Array, jax.Array, jax.Array],
    channels: jax.Array,
    config: LlamaConfig,
    dtype: DType,
) -> jax.Array:
    """One block of the masked sub-network: :func:`nasjax.llm.llama.block` with
    :class:`~nasjax.llm.llama.Widths` (the sliced block's arithmetic on zeros), skipped by
    ``lax.cond`` when the block is dropped."""
    keep, heads, ffn = mask
    widths = Widths(channels, heads, ffn)
    run = lambda x: block(layer, x, config, None, dtype, widths)  # noqa: E731
    return lax.cond(keep, run, lambda x: x, x)


def _masked_logits(
    params: Params, config: LlamaConfig, mask: Masks, tokens: jax.Array, dtype: DType
) -> jax.Array:
    channels = mask.channels
    x = embed(params, tokens) * channels

    def body(x: jax.Array, inputs: tuple) -> tuple[jax.Array, None]:
        layer, *layer_mask = inputs
        return _masked_block(x, layer, tuple(layer_mask), channels, config, dtype), None

    scanned = (params["layers"], mask.layers, mask.heads, mask.ffn)
    x = lax.scan(body, x, scanned)[0]
    return head(params, x, config, dtype, channels)


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def masked_forward(
    params: Params, config: LlamaConfig, mask: Masks, tokens: jax.Array, dtype: DType = jnp.float32
) -> jax.Array:
    """Logits ``float32[B, T, V]`` of one masked sub-network (``mask`` without a candidate
    axis) on ``int32[B, T]``: equal, up to float rounding, to ``forward`` of the sliced
    model."""
    return _masked_logits(params, config, mask, tokens, dtype)


# ----------------------------------------------------------------- population scoring
class PopulationScores(NamedTuple):
    """Per candidate: mean next-token NLL (nats per token), its perplexity ``exp(nll)``, and
    with a teacher the mean ``KL(teacher || candidate)`` per token (else ``None``)."""

    nll: np.ndarray
    ppl: np.ndarray
    kl: np.ndarray | None


@functools.partial(jax.jit, static_argnames=("choices", "mesh", "batch_size", "dtype"))
def _score(
    genotypes: jax.Array,
    shared: tuple,
    choices: ElasticChoices,
    mesh: Mesh | None,
    batch_size: int | None,
    dtype: DType,
) -> tuple[jax.Array, jax.Array]:
    def local(genotypes: jax.Array, shared: tuple) -> tuple[jax.Array, jax.Array]:
        params, orders, windows, teacher = shared
        inputs, targets = windows[:, :-1], windows[:, 1:]
        if teacher is not None:
            log_t = jax.nn.log_softmax(teacher.astype(jnp.float32), axis=-1)
            p_t = jnp.exp(log_t)

        def one(genotype: jax.Array) -> tuple[jax.Array, jax.Array]:
            mask = masks(choices, orders, genotype)
            logits = _masked_logits(params, choices.config, mask, inputs, dtype)
            log_p = jax.nn.log_softmax(logits, axis=-1)
            nll = -jnp.mean(jnp.take_along_axis(log_p, targets[..., None], axis=-1))
            if teacher is None:
                return nll, jnp.zeros(())
            return nll, jnp.mean(jnp.sum(p_t * (log_t - log_p), axis=-1))

        return lax.map(one, genotypes, batch_size=batch_size)

    if mesh is None:
        return local(genotypes, shared)
    sharded = PartitionSpec(POPULATION_AXIS)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(sharded, PartitionSpec()),
        out_specs=sharded,
        # lax.cond's identity branch returns the replicated input where the block returns a
        # per-device value: equal types to XLA, different to shard_map's varying-axes check.
        check_vma=False,
    )(genotypes, shared)


def _mesh(shards: int | None, size: int) -> Mesh | None:
    """No mesh for one device by default; ``shards`` given: a mesh of that many."""
    devices = jax.local_devices()
    if shards is None and min(len(devices), size) == 1:
        return None
    count = min(len(devices), size) if shards is None else shards
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(devices):
        raise NasjaxError(f"shards must be in 1..{len(devices)} (local devices), got {shards!r}")
    return Mesh(np.array(devices[:count]), (POPULATION_AXIS,))


def score_population(
    params: Params,
    choices: ElasticChoices,
    importance: Importance,
    genotypes: Any,
    windows: Any,
    teacher_logits: Any = None,
    *,
    shards: int | None = None,
    batch_size: int = 1,
    dtype: DType = jnp.float32,
) -> PopulationScores:
    """Scores P sub-networks of the shared dense weights in one compiled call.

    Args:
      params: the dense model.
      choices: the genotype layout.
      importance: the rankings that turn genotypes into masks.
      genotypes: ``int32[P, 1 + 3L]``.
      windows: ``int32[B, T + 1]`` token windows (inputs ``[:, :-1]``, targets ``[:, 1:]``).
      teacher_logits: optional ``float[B, T, V]`` logits (or log-probabilities) of the
        teacher on ``windows[:, :-1]``, for the KL term.
      shards: devices to split candidates over with ``shard_map`` (default: every local
        device, at most P, and no ``shard_map`` for one); P is padded to a multiple with
        copies of the first candidate.
      batch_size: candidates per step of ``lax.map`` (1: a loop, the memory of one forward
        pass; k > 1 vmaps k at a time, wide accelerators).
      dtype: the matmul dtype (see :mod:`nasjax.llm.llama`).

    Returns:
      :class:`PopulationScores` (numpy, float64 perplexities).
    """
    check_positive(batch_size=batch_size)
    g = choices.validate(genotypes)
    if g.ndim != 2:
        raise NasjaxError(f"genotypes must be int32[P, {len(choices.num_choices)}], got {g.shape}")
    windows = jnp.asarray(windows, jnp.int32)
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise NasjaxError(f"windows must be int32[B, T + 1] with T >= 1, got {windows.shape}")
    size = len(g)
    mesh = _mesh(shards, size)
    if mesh is not None and size % mesh.size:
        g = np.concatenate([g, np.repeat(g[:1], mesh.size - size % mesh.size, axis=0)])
    orders = importance._replace(
        heads=None, groups=None, ffn=None, channels=None, block_influence=None
    )
    teacher = None if teacher_logits is None else jnp.asarray(teacher_logits)
    shared = (params, orders, windows, teacher)
    nll, kl = _score(
        jnp.asarray(g), shared, choices, mesh, None if batch_size == 1 else batch_size, dtype
    )
    nll = np.asarray(nll, np.float64)[:size]
    kl = None if teacher is None else np.asarray(kl, np.float64)[:size]
    return PopulationScores(nll, np.exp(nll), kl)


# ----------------------------------------------------------------- costs
def costs(
    choices: ElasticChoices,
    genotypes: Any,
    context: int = 256,
    cache_bytes: int = 4,
) -> dict[str, Any]:
    """Exact costs of genotypes ``int32[..., 1 + 3L]`` (numpy, vectorised; ints for one).

    * ``params``: array elements of :func:`slice_params`'s model (``embedding_params`` =
      the ``V x width`` table, twice when the LM head is not tied; ``decoder_params`` the
      rest: blocks and the final norm);
    * ``flops_per_token``: 2 x the multiply-adds of every linear (q, k, v, o, gate, up,
      down and the LM head) for one token, plus attention's ``QK^T`` and ``PV`` (``4 x
      heads x head_dim x context``) for a token that attends to ``context`` keys (the last
      token of a full window, or a decode step with ``context`` cached tokens); norms,
      RoPE, softmax and the embedding lookup are not counted;
    * ``kv_cache_bytes_per_token``: ``2 (K and V) x kept KV heads over kept layers x
      head_dim x cache_bytes`` (4: the float32 cache of :func:`nasjax.llm.llama.cache_for`).
    """
    check_positive(context=context, cache_bytes=cache_bytes)
    g = choices.validate(genotypes).astype(np.int64)
    cfg = choices.config
    width, keep, groups, ffn = choices.sizes(g)
    hd, w = cfg.head_dim, width[..., None]
    kv = groups * hd * keep  # K (and V) columns per layer, 0 when dropped
    q = kv * choices.group_size
    linear_macs = w * (2 * q + 2 * kv + 3 * ffn * keep)  # wq, wo; wk, wv; gate, up, down
    norms = 2 * w * keep
    embedding = cfg.vocab_size * width * (1 if choices.tied else 2)
    decoder = (linear_macs + norms).sum(-1) + width
    out = {
        "params": embedding + decoder,
        "decoder_params": decoder,
        "embedding_params": embedding,
        "flops_per_token": 2 * (linear_macs.sum(-1) + width * cfg.vocab_size)
        + 4 * q.sum(-1) * context,
        "kv_cache_bytes_per_token": 2 * kv.sum(-1) * cache_bytes,
    }
    if g.ndim == 1:
        return {k: int(v) for k, v in out.items()}
    return out


# ----------------------------------------------------------------- baselines
def uniform_genotype(choices: ElasticChoices, target_params: float) -> np.ndarray:
    """Uniform width pruning: every layer kept and the same sizes in every layer (KV groups,
    FFN channels) at one global width, each dimension keeping as nearly the same fraction
    as the grids allow (3 KV groups offer only 1/3, 2/3, 1): among the uniform genotypes
    with ``params <= target_params``, those within 2 % of the largest such count, and of
    those the one whose three keep fractions spread least (the smallest model when none
    fits)."""
    cfg = choices.config
    w, k, f = np.meshgrid(
        np.arange(len(choices.widths)),
        np.arange(cfg.n_kv_heads),
        np.arange(len(choices.ffn_sizes)),
        indexing="ij",
    )
    w, k, f = w.ravel(), k.ravel(), f.ravel()
    g = np.zeros((len(w), len(choices.num_choices)), np.int32)
    g[:, 0], g[:, 1::3], g[:, 2::3], g[:, 3::3] = w, 1, k[:, None], f[:, None]
    params = costs(choices, g)["params"]
    fits = params <= target_params
    if not fits.any():
        return g[np.argmin(params)].copy()
    near = fits & (params >= 0.98 * params[fits].max())
    fractions = np.stack(
        [
            np.asarray(choices.widths)[w] / cfg.dim,
            (k + 1) / cfg.n_kv_heads,
            np.asarray(choices.ffn_sizes)[f] / cfg.ffn_dim,
        ]
    )
    spread = np.where(near, fractions.max(0) - fractions.min(0), np.inf)
    best = np.flatnonzero(spread == spread.min())
    return g[best[np.argmax(params[best])]].copy()


def depth_genotype(
    choices: ElasticChoices, importance: Importance, target_params: float
) -> np.ndarray:
    """Depth-only pruning (ShortGPT): full width, drop the blocks of least block influence,
    one at a time, until ``params <= target_params`` (all but one block at most)."""
    g = choices.dense_genotype()
    for layer in np.argsort(importance.block_influence, kind="stable")[:-1]:
        if costs(choices, g)["params"] <= target_params:
            break
        g[1 + 3 * layer] = 0
    return g


def random_genotypes(
    key: jax.Array,
    n: int,
    choices: ElasticChoices,
    target_params: float | None = None,
    tolerance: float = 0.02,
) -> np.ndarray:
    """``n`` random genotypes: uniform per entry; with ``target_params``, each is then
    walked one random entry at a time (down while above the target, up while below
    ``(1 - tolerance) x target``) until ``params`` lies in that band (``int32[n, G]``)."""
    check_positive(n=n)
    seed = np.asarray(jax.random.key_data(key)).ravel()
    rng = np.random.default_rng(seed)
    radix = np.asarray(choices.num_choices)
    g = (rng.random((n, len(radix))) * radix).astype(np.int32)
    if target_params is None:
        return g
    if not 0 < tolerance < 1:
        raise NasjaxError(f"tolerance must be in (0, 1), got {tolerance}")
    low = (1 - tolerance) * target_params
    for row in g:
        for _ in range(100 * len(radix)):
            params = costs(choices, row)["params"]
            if low <= params <= target_params:
                break
            up = params < low
            movable = np.flatnonzero(row < radix - 1) if up else np.flatnonzero(row > 0)
            if not len(movable):
                break
            d = rng.choice(movable)
            row[d] += 1 if up else -1
            if up and costs(choices, row)["params"] > target_params:
                row[d] -= 1  # that step overshoots: try another entry
    return g
