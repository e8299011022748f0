"""The model's vocabulary as llguidance sees it: each token's bytes, the end-of-generation ids, the control tokens.

llguidance computes a token mask by walking a trie of token byte strings, so it needs the bytes every id stands
for (`Tokenizer.token_bytes`, llama.cpp's `token_to_piece`), which ids end generation (a finished grammar allows
only those) and which ids are control tokens (they match no text, only a grammar that names them). Building it
walks the whole vocabulary once (about a second at 248k ids), so it is built once per tokenizer and kept.
"""

from __future__ import annotations

import threading
import weakref

import llguidance
from gguf import TokenType

from vkmtp.text.tokenizer import Tokenizer

_lock = threading.Lock()
_built: "weakref.WeakKeyDictionary[Tokenizer, dict]" = weakref.WeakKeyDictionary()


class _Wrapper:
    """What llguidance.TokenizerWrapper reads from a tokenizer object."""

    def __init__(self, tokenizer: Tokenizer, n_vocab: int, eos: int):
        n = len(tokenizer.tokens)
        self.tokens = [tokenizer.token_bytes(i) for i in range(n)] + [b""] * (n_vocab - n)
        self.eos_token_id = eos
        self.bos_token_id = tokenizer.bos_id
        self.special_token_ids = [i for i in range(n) if tokenizer.token_types[i] == TokenType.CONTROL]
        self._tokenizer = tokenizer

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode(text, add_special=False, parse_special=False)


def ll_tokenizer(tokenizer: Tokenizer, n_vocab: int, eog_ids: frozenset[int]) -> llguidance.LLTokenizer:
    """The llguidance tokenizer of `tokenizer` padded to the model's n_vocab, ending on `eog_ids`."""
    eog = sorted(eog_ids) or sorted(tokenizer.eog_ids)
    key = (n_vocab, tuple(eog))
    with _lock:
        per = _built.setdefault(tokenizer, {})
        if key not in per:
            wrapper = llguidance.TokenizerWrapper(_Wrapper(tokenizer, n_vocab, eog[0] if eog else 0))
            per[key] = llguidance.LLTokenizer(wrapper, n_vocab=n_vocab, eos_token=eog or None)
        return per[key]
