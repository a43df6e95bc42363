"""Embedded text for evaluating and calibrating a pretrained LLM, with no download.

Two corpora that every CPython install carries, kept apart so that calibration never sees
the text perplexity is measured on:

* **validation**: the last 10 % of CPython's reference documentation
  (``pydoc_data.topics``, joined by sorted topic name: the same fixed split as
  :func:`nasjax.text.load_text`), English prose about the language, ~47 KB in 3.11;
* **calibration** (and distillation): the docstrings of the standard library's top-level
  modules (module, class and function docstrings, files in sorted order, via ``ast``),
  ~0.9 MB of English prose in 3.11.

Both depend on the Python version, which :attr:`Corpus.source` records together with a
SHA-256 of the text. Evaluation windows are non-overlapping, fixed-length token windows
taken in order; calibration sequences are windows evenly spaced over the calibration
stream (deterministic, no RNG).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import sys
import sysconfig
from typing import NamedTuple, Protocol

import numpy as np

from nasjax.errors import NasjaxError
from nasjax.text import load_text


class Encoder(Protocol):
    """What the corpora need of a tokenizer."""

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: np.ndarray) -> str: ...


class Corpus(NamedTuple):
    """A text and where it came from."""

    text: str
    source: str
    sha256: str


def _python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def validation_corpus() -> Corpus:
    """The fixed validation text: the last 10 % of ``pydoc_data.topics``."""
    data = load_text(None, valid_fraction=0.1)
    text = data.valid.tobytes().decode("utf-8", errors="ignore")  # the cut may split a char
    return Corpus(
        text=text,
        source=f"pydoc_data.topics, last 10 % (Python {_python_version()})",
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


@functools.lru_cache(maxsize=1)
def calibration_corpus() -> Corpus:
    """The calibration text: docstrings of the standard library's top-level modules."""
    stdlib = sysconfig.get_paths()["stdlib"]
    pieces = []
    for name in sorted(os.listdir(stdlib)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(stdlib, name), encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # a distribution's odd file: skipped the same way on every run
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    pieces.append(doc)
    if not pieces:
        raise NasjaxError(f"found no standard-library docstrings under {stdlib!r}")
    text = "\n\n".join(pieces)
    return Corpus(
        text=text,
        source=f"standard-library module docstrings (Python {_python_version()})",
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


class Windows(NamedTuple):
    """Token windows to score: inputs ``tokens[:, :-1]`` predict ``tokens[:, 1:]``.

    Attributes:
      tokens: ``int32[W, length + 1]``.
      target_bytes: UTF-8 bytes of the predicted text, summed over all windows (the
        denominator of bits per byte).
    """

    tokens: np.ndarray
    target_bytes: int


def eval_windows(
    tokenizer: Encoder, corpus: Corpus, length: int, max_windows: int | None = None
) -> Windows:
    """Non-overlapping ``length + 1``-token windows over ``corpus`` in order.

    Window ``i`` starts at token ``i * length``, so every token after the first is scored
    once with up to ``length`` tokens of context. With ``max_windows``, the first that many.
    """
    ids = tokenizer.encode(corpus.text)
    count = (len(ids) - 1) // length
    if count < 1:
        raise NasjaxError(f"{corpus.source} holds {len(ids)} tokens: no window of {length}")
    if max_windows is not None:
        count = min(count, max_windows)
    tokens = np.stack([ids[i * length : i * length + length + 1] for i in range(count)])
    target_bytes = sum(len(tokenizer.decode(w[1:]).encode("utf-8")) for w in tokens)
    return Windows(tokens.astype(np.int32), target_bytes)


def calibration_windows(tokenizer: Encoder, corpus: Corpus, count: int, length: int) -> np.ndarray:
    """``int32[count, length]`` calibration sequences evenly spaced over ``corpus``."""
    ids = tokenizer.encode(corpus.text)
    available = len(ids) // length
    if not 1 <= count <= available:
        raise NasjaxError(
            f"calibration sequences must be in 1..{available} for length {length} "
            f"({corpus.source}), got {count}"
        )
    starts = np.linspace(0, available - 1, count).round().astype(int) * length
    return np.stack([ids[s : s + length] for s in starts]).astype(np.int32)
