"""Byte-level language-modelling data: any UTF-8 text file, or CPython's own documentation.

The vocabulary is the 256 byte values, so there is no tokenizer to download and the loss
in bits per byte is comparable across texts and tokenizations (the unit of character-level
LM benchmarks such as enwik8). The embedded default is the English reference
documentation that ships inside every CPython, ``pydoc_data.topics`` (about 0.47 MB of
UTF-8 in CPython 3.11: the language reference's sections on statements, operators, types,
...), joined in a fixed order; its size and content depend on the Python version, which
:attr:`TextData.source` records.

The split is fixed: the first ``1 - valid_fraction`` of the bytes train, the last
``valid_fraction`` validate (contiguous, so no window straddles both). Metrics:
``bits_per_byte = cross_entropy_nats / ln 2`` and ``perplexity = exp(cross_entropy_nats)``
(per byte).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError

DEFAULT_TEXT = "pydoc"
"""The name that selects the embedded default text (``pydoc_data.topics``)."""

VOCAB_SIZE = 256


class TextData(NamedTuple):
    """A byte-level corpus with its fixed train/valid split.

    Attributes:
      train: ``uint8[N_train]``, the first part of the bytes.
      valid: ``uint8[N_valid]``, the last part.
      source: where it came from (``pydoc_data.topics (Python 3.11.7)`` or the file path).
      sha256: hex digest of all the bytes, to tell texts apart in results.
    """

    train: np.ndarray
    valid: np.ndarray
    source: str
    sha256: str


def pydoc_bytes() -> bytes:
    """The embedded default corpus: every ``pydoc_data.topics`` entry, sorted by topic name."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it out of their Python
        raise NasjaxError(
            "this Python has no pydoc_data.topics (the default text); give a UTF-8 text file"
        ) from None
    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def read_text_file(path: str | os.PathLike) -> bytes:
    """The bytes of a UTF-8 text file, checked.

    Raises:
      NasjaxError: if the file is missing, empty, or not valid UTF-8 (naming the offset of
        the first bad byte).
    """
    try:
        raw = open(path, "rb").read()  # noqa: SIM115 - read and closed at once
    except OSError as err:
        raise NasjaxError(f"cannot read text file {str(path)!r}: {err.strerror}") from None
    if not raw:
        raise NasjaxError(f"text file {str(path)!r} is empty; give a UTF-8 text file")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NasjaxError(
            f"text file {str(path)!r} is not UTF-8: byte {raw[err.start]:#04x} at offset "
            f"{err.start} ({err.reason}); give a UTF-8 text file"
        ) from None
    return raw


def load_text(path: str | os.PathLike | None = None, valid_fraction: float = 0.1) -> TextData:
    """Loads a byte-level corpus with its fixed split.

    Args:
      path: a UTF-8 text file, or ``None`` / ``"pydoc"`` for the embedded default.
      valid_fraction: the last fraction of the bytes held out for validation.

    Raises:
      NasjaxError: for a bad file (see :func:`read_text_file`) or a fraction outside
        ``(0, 1)``.
    """
    if not 0 < valid_fraction < 1:
        raise NasjaxError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}")
    if path is None or str(path) == DEFAULT_TEXT:
        raw = pydoc_bytes()
        version = ".".join(str(v) for v in sys.version_info[:3])
        source = f"pydoc_data.topics (Python {version})"
    else:
        raw, source = read_text_file(path), str(path)
    data = np.frombuffer(raw, np.uint8)
    cut = len(data) - max(1, int(round(valid_fraction * len(data))))
    return TextData(
        train=data[:cut].copy(),
        valid=data[cut:].copy(),
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def check_context(data: TextData, context: int) -> None:
    """Refuses a context for which a split holds no ``context + 1`` byte window.

    Raises:
      NasjaxError: naming the context and the split sizes.
    """
    if not isinstance(context, (int, np.integer)) or context < 1:
        raise NasjaxError(f"context must be an integer >= 1, got {context!r}")
    shortest = min(len(data.train), len(data.valid))
    if shortest < context + 1:
        raise NasjaxError(
            f"text {data.source!r} is too short for context {context}: train has "
            f"{len(data.train)} bytes and valid {len(data.valid)}, each needs at least "
            f"{context + 1}; give a longer text or a shorter context"
        )


def random_windows(key: jax.Array, tokens: jax.Array, batch: int, context: int) -> jax.Array:
    """``int32[batch, context + 1]`` windows at uniform random offsets (jittable).

    Inputs are ``w[:, :-1]`` and next-byte targets ``w[:, 1:]``.
    """
    starts = jax.random.randint(key, (batch,), 0, tokens.shape[0] - context)
    take = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (context + 1,)))
    return take(starts).astype(jnp.int32)


def eval_windows(tokens: np.ndarray, context: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping ``int32[W, context + 1]`` windows covering ``tokens`` in order.

    Window ``i`` starts at byte ``i * context``, so every byte after the first is predicted
    once. With ``max_windows`` a fixed, evenly spaced subset is kept.
    """
    count = (len(tokens) - 1) // context
    if count < 1:
        raise NasjaxError(f"{len(tokens)} bytes hold no window of context {context}")
    starts = np.arange(count) * context
    if max_windows is not None and count > max_windows:
        starts = starts[np.linspace(0, count - 1, max_windows).round().astype(int)]
    return np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int32)


def bits_per_byte(cross_entropy_nats: float | jax.Array) -> float | jax.Array:
    """Mean cross-entropy in nats per byte -> bits per byte."""
    return cross_entropy_nats / math.log(2.0)


def perplexity(cross_entropy_nats: float | jax.Array) -> float | jax.Array:
    """Mean cross-entropy in nats per byte -> per-byte perplexity."""
    return jnp.exp(cross_entropy_nats)
