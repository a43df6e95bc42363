"""A per-block decode-latency lookup table for structurally pruned LLaMA models.

The latency predictor of hardware-aware NAS: per-layer latency lookup tables as in
ProxylessNAS (Cai et al. 2019), FBNet (Wu et al. 2019) and HAT (Wang et al. 2020), measured
per block shape on the target hardware as Puzzle (Bercovich et al. 2024) does for pruned
LLMs. A sub-network of a LLaMA model is a hidden width ``width`` (a multiple of 64, at most
``config.dim``; embedding, norms and every block's residual stream) and, per kept block, a
shape ``(kv_groups, ffn)``: ``kv_groups`` of the ``n_kv_heads`` KV groups (each one K/V head
and its ``n_heads / n_kv_heads`` query heads of ``head_dim``) and ``ffn`` SwiGLU channels (a
multiple of 64, at most ``ffn_dim``). The LM head is tied to the embedding.

The quantity is what :func:`nasjax.llm.evaluate.decode_latency_ms` measures for a whole
model: milliseconds per generated token of greedy KV-cache decoding at batch 1, a prompt of
``prompt_len`` tokens then ``steps`` generated ones (prefill included, compile excluded).
:func:`measure_decode_ms` takes the median of several timed runs.

The table holds, on a grid of widths x KV groups x FFN sizes:

* ``overhead_ms[w]``: a model of width ``w`` with no blocks (embedding, final norm, the LM
  head over the vocabulary, the argmax, the decoding loop and one program dispatch);
* ``block_ms[w, g, f]``: one block of that shape, measured as a model of ``probe_blocks``
  distinct blocks of that shape less the block-free model of the same width, divided by
  ``probe_blocks``: what every call pays besides the blocks cancels. The two programs are
  timed alternately; the median of the paired ratios ``probe / block-free``, less one,
  times the block-free model's median time, is kept. Other work on a shared machine slows
  a program by a factor (it takes a share of the cores), which the ratio of two programs
  timed moments apart cancels where a difference would not.

On a shared machine single entries are noisy, so the table smooths them (the raw values
stay in ``measured_block_ms``): at each width, a block's decode time is close to linear in
its KV groups and FFN size (its weight bytes are), so the entries of a width are replaced
by their least-squares plane ``a + b * g + c * f`` with slopes ``b, c >= 0``; then clipped at
zero and made non-decreasing over widths (a running maximum). A wider, more-headed or
larger-FFN block is thus never predicted cheaper. ``predict(width, blocks) = overhead(width) + sum_b
block(width, g_b, f_b)``, interpolating linearly in the width and the FFN size between grid
points (block cost is close to bilinear in them: its weights are ``width x (heads, ffn)``
matrices read once per token). :func:`check_table` compares predictions with whole measured
sub-networks by Spearman rank correlation (:func:`nasjax.stats.spearman`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_positive
from nasjax.llm import llama
from nasjax.llm.evaluate import decode_latency_ms
from nasjax.llm.llama import LlamaConfig, Params
from nasjax.objectives import device_name
from nasjax.rundir import read_json_record, write_json_atomic
from nasjax.stats import spearman

FORMAT = "nasjax.llm_latency_table"
VERSION = 1
STEP = 64
"""Widths and FFN sizes of a sub-network are multiples of this."""

Block = tuple[int, int]
"""A kept block's shape: ``(kv_groups, ffn)``."""


def check_subnet(config: LlamaConfig, width: int, blocks: Sequence[Block]) -> None:
    """Raises a one-line ``NasjaxError`` unless ``(width, blocks)`` is a sub-network of
    ``config`` (see the module docstring)."""
    if not _is_int(width) or width % STEP or not STEP <= width <= config.dim:
        raise NasjaxError(f"width {width!r} must be a multiple of {STEP} in {STEP}..{config.dim}")
    for i, shape in enumerate(blocks):
        if not isinstance(shape, (tuple, list)) or len(shape) != 2:
            raise NasjaxError(f"block {i}: {shape!r} is not a (kv_groups, ffn) pair")
        g, f = shape
        if not _is_int(g) or not 1 <= g <= config.n_kv_heads:
            raise NasjaxError(f"block {i}: kv_groups {g!r} must be in 1..{config.n_kv_heads}")
        if not _is_int(f) or f % STEP or not STEP <= f <= config.ffn_dim:
            raise NasjaxError(
                f"block {i}: ffn {f!r} must be a multiple of {STEP} in {STEP}..{config.ffn_dim}"
            )


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def subnet_shape(params: Params, config: LlamaConfig) -> tuple[int, list[Block]]:
    """``(width, [(kv_groups, ffn), ...])`` of a model whose ``params["layers"]`` is a list
    of per-block dicts, read from the array shapes."""
    if not isinstance(params["layers"], (list, tuple)):
        raise NasjaxError("subnet_shape needs params['layers'] as a list of per-block dicts")
    width = int(params["embed"].shape[1])
    blocks = [
        (int(ly["wk"].shape[-1]) // config.head_dim, int(ly["w_gate"].shape[-1]))
        for ly in params["layers"]
    ]
    return width, blocks


def _template(key: jax.Array, config: LlamaConfig, n_blocks: int) -> Params:
    """Full-size random params of ``n_blocks`` blocks on the host, ``layers`` a list of
    per-block dicts. The layout is ``llama.init_params``'s (read with ``jax.eval_shape``);
    the values are drawn with numpy, seeded by ``key`` (``N(0, 1/fan_in)`` matrices, unit
    norms): compiling ``init_params``' RNG for every shape costs seconds, and latency does
    not depend on the values."""
    config = dataclasses.replace(config, n_layers=max(n_blocks, 1))
    shapes = jax.eval_shape(lambda k: llama.init_params(k, config), key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def draw(leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        if len(leaf.shape) == 3:  # [L, in, out]
            return rng.standard_normal(leaf.shape, np.float32) * leaf.shape[-2] ** -0.5
        if leaf.shape[0] == config.vocab_size:  # the embedding
            return rng.standard_normal(leaf.shape, np.float32)
        return np.ones(leaf.shape, np.float32)  # norms: [L, D] and [D]

    full = jax.tree.map(draw, shapes)
    stacked = full.pop("layers")
    full["layers"] = [{k: v[i] for k, v in stacked.items()} for i in range(n_blocks)]
    return full


def _slice(template: Params, config: LlamaConfig, width: int, blocks: Sequence[Block]) -> Params:
    """The sub-network ``(width, blocks)`` cut out of ``template`` (block ``i`` from template
    block ``i``; the first KV groups with their query heads, the first channels)."""
    group, hd, w = config.n_heads // config.n_kv_heads, config.head_dim, width
    layers = []
    for layer, (g, f) in zip(template["layers"], blocks):  # noqa: B905 (a prefix)
        q, kv = g * group * hd, g * hd
        layers.append(
            {
                "attn_norm": layer["attn_norm"][:w],
                "wq": layer["wq"][:w, :q],
                "wk": layer["wk"][:w, :kv],
                "wv": layer["wv"][:w, :kv],
                "wo": layer["wo"][:q, :w],
                "ffn_norm": layer["ffn_norm"][:w],
                "w_gate": layer["w_gate"][:w, :f],
                "w_up": layer["w_up"][:w, :f],
                "w_down": layer["w_down"][:f, :w],
            }
        )
    params = {"embed": template["embed"][:, :w], "final_norm": template["final_norm"][:w]}
    params["layers"] = layers
    return jax.tree.map(lambda a: jnp.asarray(np.ascontiguousarray(a)), params)


def random_subnet(
    key: jax.Array, config: LlamaConfig, width: int, blocks: Sequence[Block]
) -> Params:
    """Random params of the sub-network ``(width, blocks)`` of ``config``: ``layers`` a list
    of per-block dicts, ``embed`` ``[V, width]``, the LM head tied. Drawn as
    ``llama.init_params`` draws a full model of ``len(blocks)`` blocks, then sliced (latency
    does not depend on the values)."""
    check_subnet(config, width, blocks)
    return _slice(_template(key, config, len(blocks)), config, width, blocks)


def measure_decode_ms(
    params: Params,
    config: LlamaConfig,
    prompt_len: int = 64,
    steps: int = 32,
    repeats: int = 5,
    dtype: Any = jnp.float32,
) -> float:
    """Milliseconds per generated token of greedy KV-cache decoding at batch 1 (a prompt of
    ``prompt_len`` tokens, then ``steps`` tokens): the median of ``repeats`` timed runs of
    :func:`nasjax.llm.evaluate.decode_latency_ms`."""
    check_positive(prompt_len=prompt_len)
    prompt = np.zeros((1, prompt_len), np.int32)
    return decode_latency_ms(params, config, prompt, steps, dtype, repeats=repeats)


def _compiled(params: Params, config: LlamaConfig, prompt: np.ndarray, steps: int, dtype: Any):
    run = llama.generate.lower(params, prompt, steps=steps, config=config, dtype=dtype).compile()
    jax.block_until_ready(run(params, prompt))  # first call: buffers, caches
    return run


def _seconds(run: Any, params: Params, prompt: np.ndarray) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run(params, prompt))
    return time.perf_counter() - start


def _plane(g: np.ndarray, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares ``a + b * g + c * f`` through ``y`` with ``b, c >= 0`` (a negative slope
    is dropped and the rest refitted), evaluated at the points."""
    columns = [np.ones_like(y), g, f]
    for _ in range(3):
        coef = np.linalg.lstsq(np.stack(columns, axis=-1), y, rcond=None)[0]
        negative = [i for i in (1, 2) if coef[i] < 0 and columns[i].any()]
        if not negative:
            break
        columns[negative[0]] = np.zeros_like(y)
    return np.stack(columns, axis=-1) @ coef


def _smooth(block_ms: np.ndarray, kv_groups: Sequence[int], ffn: Sequence[int]) -> np.ndarray:
    """Per width the plane of :func:`_plane` over ``(kv_groups, ffn)``, clipped at zero, then
    a running maximum over widths: non-decreasing along every axis."""
    g, f = np.meshgrid(np.asarray(kv_groups, float), np.asarray(ffn, float), indexing="ij")
    fitted = [_plane(g.ravel(), f.ravel(), row.ravel()).reshape(g.shape) for row in block_ms]
    return np.maximum.accumulate(np.maximum(np.asarray(fitted), 0.0), axis=0)


class LatencyTable(NamedTuple):
    """Per-block-shape decode latencies (ms per generated token) on one device; see the
    module docstring."""

    widths: tuple[int, ...]
    kv_groups: tuple[int, ...]
    ffn: tuple[int, ...]
    overhead_ms: np.ndarray  # float64[W]: a block-free model of each width
    block_ms: np.ndarray  # float64[W, G, F]: one block, smoothed (what predict uses)
    measured_block_ms: np.ndarray  # float64[W, G, F]: as measured, before clipping
    config: dict[str, Any]  # the LlamaConfig's fields
    prompt_len: int
    steps: int
    probe_blocks: int
    repeats: int
    dtype: str
    device: str
    build_s: float

    def block(self, width: int, kv_groups: int, ffn: int) -> float:
        """One block's latency: linear in ``ffn`` and then in ``width`` between grid
        points; ``kv_groups`` must be one the table measured."""
        gi = self.kv_groups.index(kv_groups)
        per_width = [np.interp(ffn, self.ffn, row) for row in np.asarray(self.block_ms)[:, gi]]
        return float(np.interp(width, self.widths, per_width))

    def overhead(self, width: int) -> float:
        """The block-free model's latency at ``width`` (linear between grid widths)."""
        return float(np.interp(width, self.widths, self.overhead_ms))

    def predict(self, width: int, blocks: Sequence[Block]) -> float:
        """Predicted ms per generated token of the sub-network ``(width, blocks)``:
        ``overhead(width) + sum of block(width, g, f)``. A shape outside the grid's ranges
        raises a one-line ``NasjaxError``."""
        self._check(width, blocks)
        return self.overhead(width) + sum(self.block(width, g, f) for g, f in blocks)

    def _check(self, width: int, blocks: Sequence[Block]) -> None:
        lo, hi = self.widths[0], self.widths[-1]
        if not _is_int(width) or not lo <= width <= hi:
            raise NasjaxError(f"width {width!r} is outside the latency table's widths {lo}..{hi}")
        groups = ", ".join(map(str, self.kv_groups))
        for i, shape in enumerate(blocks):
            if not isinstance(shape, (tuple, list)) or len(shape) != 2:
                raise NasjaxError(f"block {i}: {shape!r} is not a (kv_groups, ffn) pair")
            g, f = shape
            if not _is_int(g) or g not in self.kv_groups:
                raise NasjaxError(
                    f"block {i}: kv_groups {g!r} is not in the latency table's {groups}"
                )
            if not _is_int(f) or not self.ffn[0] <= f <= self.ffn[-1]:
                raise NasjaxError(
                    f"block {i}: ffn {f!r} is outside the latency table's ffn "
                    f"{self.ffn[0]}..{self.ffn[-1]}"
                )

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the table to ``path`` atomically (``rundir.write_json_atomic``)."""
        record = {"format": FORMAT, "version": VERSION, **self._asdict()}
        for name in ("overhead_ms", "block_ms", "measured_block_ms"):
            record[name] = np.asarray(record[name]).tolist()
        for name in ("widths", "kv_groups", "ffn"):
            record[name] = list(record[name])
        write_json_atomic(path, record, indent=1)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LatencyTable:
        """Reads a table written by ``to_json``; a one-line error for other files."""
        fields = read_json_record(path, FORMAT, VERSION, cls._fields, "LLM latency table")
        for name in ("overhead_ms", "block_ms", "measured_block_ms"):
            fields[name] = np.asarray(fields[name], np.float64)
        for name in ("widths", "kv_groups", "ffn"):
            fields[name] = tuple(int(v) for v in fields[name])
        return cls(**fields)


def default_grid(config: LlamaConfig) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(widths, kv_groups, ffn)`` of the default table: five widths from 64 to ``dim``,
    every KV group count, and FFN sizes 64, half of ``ffn_dim`` and ``ffn_dim`` (multiples of
    64)."""
    widths = sorted({int(round(w / STEP)) * STEP for w in np.linspace(STEP, config.dim, 5)})
    ffn = sorted({STEP, int(round(config.ffn_dim / 2 / STEP)) * STEP, config.ffn_dim})
    return tuple(widths), tuple(range(1, config.n_kv_heads + 1)), tuple(ffn)


def _check_grid(config: LlamaConfig, widths: Sequence, groups: Sequence, ffn: Sequence) -> None:
    for name, values in (("widths", widths), ("kv_groups", groups), ("ffn", ffn)):
        if not values or list(values) != sorted(set(values)):
            raise NasjaxError(f"{name} {list(values)!r} must be non-empty, increasing, distinct")
    for w in widths:
        check_subnet(config, w, [(g, f) for g in groups for f in ffn])


def build_table(
    key: jax.Array,
    config: LlamaConfig,
    widths: Sequence[int] | None = None,
    kv_groups: Sequence[int] | None = None,
    ffn: Sequence[int] | None = None,
    prompt_len: int = 64,
    steps: int = 32,
    probe_blocks: int = 4,
    repeats: int = 5,
    dtype: Any = jnp.float32,
) -> LatencyTable:
    """Measures the block-free model at every width and one block of every grid shape.

    Args:
      key: draws the random weights (``llama.init_params`` of ``probe_blocks`` blocks).
      config: the dense model's config (vocabulary, heads, head_dim, dim, ffn_dim).
      widths, kv_groups, ffn: the grid; ``None`` takes ``default_grid(config)``.
      prompt_len, steps: the decoding that is timed (as in :func:`measure_decode_ms`).
      probe_blocks: identical-shape blocks in each probe model.
      repeats: timed pairs (probe, block-free) per entry; medians are kept.
      dtype: the matmul dtype.

    Returns:
      A ``LatencyTable`` for the current default device.
    """
    start = time.perf_counter()
    given = (widths, kv_groups, ffn)
    grid = [tuple(d if v is None else v) for v, d in zip(given, default_grid(config))]
    _check_grid(config, *grid)
    widths, kv_groups, ffn = (tuple(int(v) for v in axis) for axis in grid)
    check_positive(prompt_len=prompt_len, steps=steps, probe_blocks=probe_blocks, repeats=repeats)
    if prompt_len + steps > config.max_context:
        raise NasjaxError(f"prompt_len + steps = {prompt_len + steps} exceeds max_context")
    template = _template(key, config, probe_blocks)
    prompt = np.zeros((1, prompt_len), np.int32)
    overhead = np.zeros(len(widths))
    measured = np.zeros((len(widths), len(kv_groups), len(ffn)))
    for wi, width in enumerate(widths):
        base = _slice(template, config, width, [])
        run_base = _compiled(base, config, prompt, steps, dtype)
        base_s = []
        for gi, g in enumerate(kv_groups):
            for fi, f in enumerate(ffn):
                probe = _slice(template, config, width, [(g, f)] * probe_blocks)
                run = _compiled(probe, config, prompt, steps, dtype)
                ratios = []
                for _ in range(repeats):
                    base_s.append(_seconds(run_base, base, prompt))
                    ratios.append(_seconds(run, probe, prompt) / base_s[-1] - 1.0)
                measured[wi, gi, fi] = np.median(ratios) / probe_blocks
        overhead[wi] = 1000.0 * np.median(base_s) / steps
        measured[wi] *= overhead[wi]
    return LatencyTable(
        widths=widths,
        kv_groups=kv_groups,
        ffn=ffn,
        overhead_ms=overhead,
        block_ms=_smooth(measured, kv_groups, ffn),
        measured_block_ms=measured,
        config=dataclasses.asdict(config),
        prompt_len=prompt_len,
        steps=steps,
        probe_blocks=probe_blocks,
        repeats=repeats,
        dtype=jnp.dtype(dtype).name,
        device=device_name(),
        build_s=time.perf_counter() - start,
    )


_SHAPE_FIELDS = ("vocab_size", "dim", "n_heads", "n_kv_heads", "head_dim", "ffn_dim")


def sample_subnets(
    key: jax.Array, table: LatencyTable, config: LlamaConfig, n: int
) -> list[tuple[int, list[Block]]]:
    """``n`` random sub-networks within the table's grid, from tiny to near-dense: the
    ``i``-th keeps a fraction ``i / (n - 1)`` of each range (width, block count, and per
    block its KV groups and FFN size), each moved by a uniform ``+-0.3``, clipped."""
    if not _is_int(n) or n < 2:
        raise NasjaxError(f"n must be an integer >= 2, got {n!r}")
    layers = config.n_layers
    noise = np.asarray(jax.random.uniform(key, (n, 2 + 2 * layers), minval=-0.3, maxval=0.3))
    fractions = np.clip(np.linspace(0.0, 1.0, n)[:, None] + noise, 0.0, 1.0)
    groups = table.kv_groups
    subnets = []
    for x in fractions:
        width = _on_grid(table.widths[0], table.widths[-1], x[0])
        count = 1 + int(round(x[1] * (layers - 1)))
        blocks = [
            (
                groups[int(round(x[2 + 2 * b] * (len(groups) - 1)))],
                _on_grid(table.ffn[0], table.ffn[-1], x[3 + 2 * b]),
            )
            for b in range(count)
        ]
        subnets.append((width, blocks))
    return subnets


def _on_grid(lo: int, hi: int, fraction: float) -> int:
    """The multiple of ``STEP`` above ``lo`` nearest to ``lo + fraction * (hi - lo)``."""
    return lo + STEP * int(round(fraction * (hi - lo) / STEP))


def check_table(
    key: jax.Array,
    table: LatencyTable,
    config: LlamaConfig,
    n: int = 20,
    repeats: int | None = None,
) -> dict[str, Any]:
    """Compares the table's predictions with whole measured sub-networks.

    Samples ``n`` sub-networks (``sample_subnets``), cuts each out of one random model of
    ``config`` (``llama.init_params``), and times it with :func:`measure_decode_ms` at the
    table's settings on the current default device, which must be the table's.

    Returns:
      ``{"spearman", "mean_relative_error", "predicted_ms", "measured_ms", "subnets",
      "device", "seconds"}``; the error is ``mean(|predicted - measured| / measured)``.
    """
    start = time.perf_counter()
    if table.device != device_name():
        raise NasjaxError(
            f"latency table measured on {table.device!r}, but the default device is "
            f"{device_name()!r}; build a table on this device"
        )
    given = dataclasses.asdict(config)
    if any(table.config.get(f) != given[f] for f in _SHAPE_FIELDS):
        raise NasjaxError(f"latency table built for another model: {table.config} vs {given}")
    sample_key, weights_key = jax.random.split(key)
    subnets = sample_subnets(sample_key, table, config, n)
    template = _template(weights_key, config, config.n_layers)
    timing = {"prompt_len": table.prompt_len, "steps": table.steps, "dtype": table.dtype}
    timing["repeats"] = table.repeats if repeats is None else repeats
    measured = []
    for width, blocks in subnets:
        params = _slice(template, config, width, blocks)
        measured.append(measure_decode_ms(params, config, **timing))
    measured = np.asarray(measured)
    predicted = np.asarray([table.predict(w, b) for w, b in subnets])
    return {
        "spearman": spearman(predicted, measured),
        "mean_relative_error": float(np.mean(np.abs(predicted - measured) / measured)),
        "predicted_ms": predicted.tolist(),
        "measured_ms": measured.tolist(),
        "subnets": [[w, [list(b) for b in blocks]] for w, blocks in subnets],
        "device": table.device,
        "seconds": time.perf_counter() - start,
    }
