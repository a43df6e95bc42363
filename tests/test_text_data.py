"""Byte-level text data: the embedded pydoc_data default, user files, bad files, windows."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.text import (
    VOCAB_SIZE,
    bits_per_byte,
    check_context,
    eval_windows,
    load_text,
    perplexity,
    pydoc_bytes,
    random_windows,
)


def test_pydoc_default_needs_no_download_and_splits_fixed():
    data = load_text()
    raw = pydoc_bytes()
    assert len(raw) > 300_000  # ~0.47 MB in CPython 3.11
    assert len(data.train) + len(data.valid) == len(raw)
    assert len(data.valid) == round(0.1 * len(raw))
    assert data.train.dtype == np.uint8 and int(data.train.max()) < VOCAB_SIZE
    np.testing.assert_array_equal(
        np.concatenate([data.train, data.valid]), np.frombuffer(raw, np.uint8)
    )
    assert "pydoc_data.topics" in data.source
    again = load_text("pydoc")
    assert again.sha256 == data.sha256
    np.testing.assert_array_equal(again.valid, data.valid)


def test_user_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("héllo wörld, " * 50, encoding="utf-8")
    data = load_text(path, valid_fraction=0.2)
    assert data.source == str(path)
    assert len(data.train) + len(data.valid) == len(path.read_bytes())
    assert len(data.valid) == round(0.2 * len(path.read_bytes()))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(NasjaxError, match="is empty; give a UTF-8 text file"):
        load_text(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc café".encode("latin-1"))
    with pytest.raises(NasjaxError, match=r"is not UTF-8: byte 0xe9 at offset 7"):
        load_text(path)


def test_missing_file(tmp_path):
    with pytest.raises(NasjaxError, match="cannot read text file .*nope.txt"):
        load_text(tmp_path / "nope.txt")


def test_bad_fraction():
    with pytest.raises(NasjaxError, match="valid_fraction must be in"):
        load_text(valid_fraction=1.0)


def test_context_longer_than_the_text(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("x" * 100)
    data = load_text(path)  # 90 train / 10 valid bytes
    check_context(data, 9)
    with pytest.raises(
        NasjaxError, match="too short for context 10: train has 90 bytes and valid 10"
    ):
        check_context(data, 10)
    with pytest.raises(NasjaxError, match="context must be an integer >= 1"):
        check_context(data, 0)


def test_windows():
    tokens = np.arange(100, dtype=np.uint8)
    w = eval_windows(tokens, 10)
    assert w.shape == (9, 11) and w.dtype == np.int32
    np.testing.assert_array_equal(w[1], np.arange(10, 21))  # stride = context
    assert eval_windows(tokens, 10, max_windows=3).shape == (3, 11)
    r = random_windows(jax.random.key(0), jax.numpy.asarray(tokens, jax.numpy.int32), 4, 10)
    assert r.shape == (4, 11)
    np.testing.assert_array_equal(np.diff(np.asarray(r), axis=1), 1)  # contiguous bytes
    again = random_windows(jax.random.key(0), jax.numpy.asarray(tokens, jax.numpy.int32), 4, 10)
    np.testing.assert_array_equal(r, again)
    with pytest.raises(NasjaxError, match="hold no window"):
        eval_windows(tokens[:5], 10)


def test_metrics():
    assert bits_per_byte(math.log(256.0)) == pytest.approx(8.0)  # uniform over bytes
    assert float(perplexity(math.log(3.0))) == pytest.approx(3.0, rel=1e-6)
