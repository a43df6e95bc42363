"""One-shot, layer-wise compression of a pretrained LLaMA with calibration text, and depth
pruning by block influence.

**Sequential layer-wise calibration**, as SparseGPT (Frantar & Alistarh 2023), Wanda
(Sun et al. 2023) and GPTQ (Frantar et al. 2022) run it: the calibration sequences are
embedded once; for each block in order, the inputs of its seven linears are collected by
running the block (its four distinct inputs: attention in, attention out, FFN in, FFN
hidden, see :data:`nasjax.llm.llama.LINEAR_INPUT`), each linear is replaced by what the
method makes of it given those statistics, and the *compressed* block's outputs become
the next block's inputs, so every layer is calibrated on the already-compressed model.

**Depth pruning** (ShortGPT, Men et al. 2024, "ShortGPT: Layers in Large Language Models
are More Redundant Than You Expect"; Gromov et al. 2024, "The Unreasonable Ineffectiveness
of the Deeper Layers"): a block's influence is ``BI = 1 - E_t[cos(x_in, x_out)]`` over
the calibration tokens of the dense model; the ``k`` blocks of least influence are
dropped, against the baseline of dropping the last ``k``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError, check_choice
from nasjax.llm.llama import LINEAR_INPUT, LINEAR_NAMES, LlamaConfig, block, block_taps, embed
from nasjax.llm.llama import n_layers as count_layers
from nasjax.llm.sparsity import (
    CalibrationStats,
    accumulate,
    hessian,
    init_stats,
    input_norms,
    magnitude_prune,
    parse_pattern,
    sparsegpt_prune,
    wanda_prune,
)
from nasjax.llm.weight_quant import gptq_quantize, parse_quant_spec, rtn_quantize

LinearCompressor = Callable[[str, jax.Array, CalibrationStats | None], jax.Array]
"""``(linear name, W [d_in, d_out], statistics of its inputs or None) -> compressed W``."""

PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
QUANT_METHODS = ("rtn", "gptq")
DATA_FREE = ("magnitude", "rtn")
"""Methods that look at the weights only (no calibration pass)."""
DEPTH_RULES = ("block_influence", "last")


def prune_compressor(method: str, pattern: str) -> LinearCompressor:
    """The pruning ``method`` (magnitude, Wanda, SparseGPT) at ``pattern`` for one linear."""
    check_choice("pruning method", method, PRUNE_METHODS)
    pattern = parse_pattern(pattern)
    prune = {
        "magnitude": lambda W, stats: magnitude_prune(W, pattern),
        "wanda": lambda W, stats: wanda_prune(W, input_norms(stats), pattern),
        "sparsegpt": lambda W, stats: sparsegpt_prune(W, hessian(stats), pattern),
    }[method]
    return lambda name, W, stats: prune(W, stats)[0]


def quant_compressor(method: str, spec: str, act_order: bool = False) -> LinearCompressor:
    """The weight quantizer ``method`` (round-to-nearest, GPTQ) at ``spec`` (``4_g128``)."""
    check_choice("quantization method", method, QUANT_METHODS)
    spec = parse_quant_spec(spec)
    if method == "rtn":
        return lambda name, W, stats: rtn_quantize(W, spec)
    return lambda name, W, stats: gptq_quantize(W, hessian(stats), spec, act_order=act_order)


def layer(params: dict, index: int) -> dict:
    """Block ``index``'s parameters (leaves without the layer axis)."""
    return jax.tree.map(lambda a: a[index], params["layers"])


def with_layers(params: dict, layers: list[dict]) -> dict:
    """``params`` with its block stack replaced by ``layers`` (stacked)."""
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)
    return {**params, "layers": stacked}


@functools.partial(jax.jit, static_argnames="config")
def _taps(block_params: dict, x: jax.Array, config: LlamaConfig):
    return block_taps(block_params, x, config)[1]


@functools.partial(jax.jit, static_argnames="config")
def _block(block_params: dict, x: jax.Array, config: LlamaConfig) -> jax.Array:
    return block(block_params, x, config)


def _batched(x: jax.Array, batch_size: int) -> Iterable[jax.Array]:
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


def compress_layerwise(
    params: dict,
    config: LlamaConfig,
    calibration: np.ndarray | None,
    compress: LinearCompressor,
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Compresses every linear of every block, block by block, on the compressed model's
    own activations (see the module docstring).

    Args:
      params: the model (not modified).
      config: its config.
      calibration: ``int32[N, T]`` calibration sequences, or ``None`` for a data-free
        method (``compress`` then gets ``None`` statistics and no block is run).
      compress: what to do to one linear given the statistics of its inputs.
      batch_size: calibration sequences per block call (memory only; results equal).
      progress: called with the block index after each block.

    Returns:
      A new params pytree with every block's linears replaced by ``compress``'s output.
    """
    x = None if calibration is None else embed(params, jnp.asarray(calibration))
    blocks = []
    for index in range(count_layers(params)):
        current = layer(params, index)
        stats = dict.fromkeys(LINEAR_INPUT.values())
        for xb in [] if x is None else _batched(x, batch_size):
            for tap, value in _taps(current, xb, config).items():
                so_far = init_stats(value.shape[-1]) if stats[tap] is None else stats[tap]
                stats[tap] = accumulate(so_far, value)
        compressed = dict(current)
        for name in LINEAR_NAMES:
            compressed[name] = compress(name, current[name], stats[LINEAR_INPUT[name]])
        blocks.append(compressed)
        if x is not None:
            x = jnp.concatenate([_block(compressed, xb, config) for xb in _batched(x, batch_size)])
        if progress is not None:
            progress(index)
    return with_layers(params, blocks)


@jax.jit
def _mean_cosine(x_in: jax.Array, x_out: jax.Array) -> jax.Array:
    dots = jnp.sum(x_in * x_out, axis=-1)
    norms = jnp.linalg.norm(x_in, axis=-1) * jnp.linalg.norm(x_out, axis=-1)
    return jnp.mean(dots / jnp.maximum(norms, 1e-12))


def block_influence(
    params: dict, config: LlamaConfig, calibration: np.ndarray, batch_size: int = 4
) -> np.ndarray:
    """ShortGPT's block influence ``1 - E[cos(x_in, x_out)]`` of each block, ``float[L]``,
    measured on the dense model over all calibration tokens (batches weighted equally;
    pass a batch size that divides the sequence count for an exact token mean)."""
    x = embed(params, jnp.asarray(calibration))
    influence = []
    for index in range(count_layers(params)):
        current = layer(params, index)
        outputs, cosines = [], []
        for xb in _batched(x, batch_size):
            yb = _block(current, xb, config)
            cosines.append(float(_mean_cosine(xb, yb)))
            outputs.append(yb)
        influence.append(1.0 - float(np.mean(cosines)))
        x = jnp.concatenate(outputs)
    return np.asarray(influence)


def layers_to_drop(rule: str, k: int, influence: np.ndarray | None, total: int) -> list[int]:
    """The ``k`` block indices a depth-pruning ``rule`` drops (sorted).

    Raises:
      NasjaxError: for an unknown rule, or ``k`` outside ``0..total-1``.
    """
    check_choice("depth rule", rule, DEPTH_RULES)
    if not 0 <= k < total:
        raise NasjaxError(f"layers to drop must be in 0..{total - 1}, got {k}")
    if rule == "last":
        return list(range(total - k, total))
    if influence is None:
        raise NasjaxError("the block_influence rule needs the measured influence")
    return sorted(int(i) for i in np.argsort(influence, kind="stable")[:k])


def drop_layers(params: dict, dropped: Iterable[int]) -> dict:
    """``params`` without the blocks at ``dropped`` (a smaller stack: a faster forward)."""
    dropped = set(dropped)
    keep = np.asarray([i for i in range(count_layers(params)) if i not in dropped])
    return {**params, "layers": jax.tree.map(lambda a: a[keep], params["layers"])}
