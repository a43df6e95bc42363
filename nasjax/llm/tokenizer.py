"""The byte-level BPE tokenizer of a GGUF file, rebuilt with the ``tokenizers`` library.

A GGUF file carries no ``tokenizer.json``: it stores the vocabulary
(``tokenizer.ggml.tokens``, spelled in GPT-2's byte-to-unicode alphabet), the merges
(``tokenizer.ggml.merges``, ``"a b"`` strings, best first), each token's type
(``tokenizer.ggml.token_type``: 1 normal, 3 control, 4 user-defined, ...) and the name of
the pre-tokenizer (``tokenizer.ggml.pre``) that cut the training text into words before
BPE. This module turns those back into a :class:`tokenizers.Tokenizer` (Sennrich et al.
2016, "Neural Machine Translation of Rare Words with Subword Units"; the byte-level variant
of Radford et al. 2019, GPT-2).

Pre-tokenizers (``PRE_TOKENIZERS``): ``"smollm"`` (SmolLM/SmolLM2, also StarCoder's) splits
every digit on its own and then applies GPT-2's word regex, as the model's original
``tokenizer.json`` (``Digits(individual_digits=True)`` + ``ByteLevel``) and llama.cpp do.
Hugging Face ``transformers`` (5.x) rebuilds ``"smollm"`` as plain GPT-2 ``ByteLevel``
without the digit split; the two agree on any text where no digit follows whitespace
that BPE would merge (a run such as ``"  1"``), because the vocabulary has no token that
joins a digit to anything. ``encode`` never adds BOS/EOS (``tokenizer.ggml.add_bos_token``
is false for SmolLM2), and control tokens such as ``<|im_start|>`` written in the text are
encoded whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from nasjax.errors import NasjaxError

CONTROL, USER_DEFINED = 3, 4
"""``tokenizer.ggml.token_type`` values of special (control) and user-defined tokens."""

_GPT2_WORDS = "gpt2"
_DIGITS_THEN_GPT2_WORDS = "digits+gpt2"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    "default": _GPT2_WORDS,
    "gpt2": _GPT2_WORDS,
    "gpt-2": _GPT2_WORDS,
    "smollm": _DIGITS_THEN_GPT2_WORDS,
    "starcoder": _DIGITS_THEN_GPT2_WORDS,
    "llama3": _LLAMA3_REGEX,
    "llama-bpe": _LLAMA3_REGEX,
    "llama-v3": _LLAMA3_REGEX,
}
"""``tokenizer.ggml.pre`` names this module rebuilds, and how each cuts text into words."""


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 (control bytes, space, ...)
    map, in byte order, to the code points 256, 257, ... (so a space is ``"Ġ"``).
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    spelling, extra = {}, 0
    for byte in range(256):
        if byte in kept:
            spelling[byte] = chr(byte)
        else:
            spelling[byte] = chr(256 + extra)
            extra += 1
    return spelling


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    rule = PRE_TOKENIZERS.get(pre)
    if rule is None:
        valid = ", ".join(sorted(PRE_TOKENIZERS))
        raise NasjaxError(f"unsupported tokenizer.ggml.pre {pre!r}; valid choices: {valid}")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if rule == _GPT2_WORDS:
        return byte_level
    if rule == _DIGITS_THEN_GPT2_WORDS:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    split = pre_tokenizers.Split(Regex(rule), behavior="isolated")
    no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return pre_tokenizers.Sequence([split, no_regex])


class LlamaTokenizer:
    """Byte-level BPE from a GGUF file's tokenizer metadata.

    Args:
      tokens: the vocabulary, in id order (``tokenizer.ggml.tokens``).
      merges: ``"left right"`` pairs, best first (``tokenizer.ggml.merges``).
      token_types: one type per token (``tokenizer.ggml.token_type``); control (3) tokens
        become special tokens and user-defined (4) ones added tokens, both matched whole.
      bos_id: id of the beginning-of-sequence token.
      eos_id: id of the end-of-sequence token.
      pre: the pre-tokenizer name (``tokenizer.ggml.pre``), one of ``PRE_TOKENIZERS``.

    Raises:
      NasjaxError: an unknown pre-tokenizer, or a merge that is not two tokens.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int] | None,
        bos_id: int,
        eos_id: int,
        pre: str = "gpt2",
    ):
        self._args = (tokens, merges, token_types, bos_id, eos_id)
        spelling = byte_alphabet()
        alphabet = set(spelling.values())

        def respell(token: str) -> str:  # a token outside the alphabet: spell its UTF-8 bytes
            if set(token) <= alphabet:
                return token
            return "".join(spelling[b] for b in token.encode("utf-8"))

        vocab = {respell(token): index for index, token in enumerate(tokens)}
        pairs = [tuple(merge.split(" ")) for merge in merges]
        bad = next((m for m, p in zip(merges, pairs) if len(p) != 2), None)
        if bad is not None:
            raise NasjaxError(f"malformed tokenizer merge {bad!r}; expected 'left right'")
        bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False)
        self._tokenizer = Tokenizer(bpe)
        self._tokenizer.pre_tokenizer = _pre_tokenizer(pre)
        self._tokenizer.decoder = decoders.ByteLevel()
        types = list(token_types) if token_types is not None else [1] * len(tokens)
        self._tokenizer.add_special_tokens(
            [
                AddedToken(t, special=True, normalized=False)
                for t, kind in zip(tokens, types)
                if kind == CONTROL and set(t) <= alphabet
            ]
        )
        self._tokenizer.add_tokens(
            [
                AddedToken(t, special=False, normalized=False)
                for t, kind in zip(tokens, types)
                if kind == USER_DEFINED and t in vocab
            ]
        )
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)
        self.vocab_size = len(tokens)
        self.pre = pre

    def with_pre_tokenizer(self, pre: str) -> LlamaTokenizer:
        """The same vocabulary with another pre-tokenizer (e.g. ``"gpt2"``, the one Hugging
        Face ``transformers`` builds for a ``"smollm"`` file)."""
        return LlamaTokenizer(*self._args, pre=pre)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (no BOS/EOS added), ``int32[n]``."""
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return np.asarray(ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``encode`` of each text, in parallel inside the ``tokenizers`` library."""
        out = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in out]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (special tokens included), so ``decode(encode(s)) == s``."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def token(self, index: int) -> str:
        """The vocabulary entry of one id, as the file spells it."""
        return self._tokenizer.id_to_token(int(index))
