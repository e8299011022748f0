"""Byte-level BPE tokenizer read from GGUF `tokenizer.ggml.*` metadata, plus streaming detokenization.

Encoding runs in the `tokenizers` library (Rust): GGUF tokens and merges become a `tokenizers.models.BPE`,
the llama.cpp pre-tokenizer name (`tokenizer.ggml.pre`) picks the split regex, and control / user-defined
tokens become added tokens. Decoding is done here from a per-token byte table, so that it follows llama.cpp's
`token_to_piece` rules (control tokens render only on request, unused tokens render as nothing, user-defined
tokens such as `<think>` always render) and so that streaming can hold back incomplete UTF-8.

Special-token matching follows llama.cpp's `tokenize(text, add_special, parse_special)`: user-defined tokens
are always matched in the text, control tokens only with `parse_special=True` (llama-server tokenizes prompts
that way). Qwen's Hugging Face tokenizers NFC-normalize input; llama.cpp does not. We do (for the Qwen
pre-tokenizers), so non-NFC input tokenizes as the model saw it in training; NFC text is unaffected.
"""

from __future__ import annotations

import codecs
import numbers
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import tokenizers
from gguf import TokenType
from tokenizers import AddedToken, Regex, models, normalizers, pre_tokenizers

from vkmtp.gguf import GGUFError, GGUFFile

# Split regexes keyed by llama.cpp's `tokenizer.ggml.pre` name. The `tokenizers` regex engine (Oniguruma)
# supports the inline `(?i:...)` of Qwen's published patterns, so they are used as published.
QWEN35_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                  r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# pre name -> (split regex, NFC-normalize input as the model's own tokenizer does)
PRE_TOKENIZERS: dict[str, tuple[str, bool]] = {
    "qwen35": (QWEN35_PATTERN, True),
    "qwen2": (QWEN2_PATTERN, True),
    "gpt-2": (GPT2_PATTERN, False),
}

# Token texts that end generation, as in llama.cpp's vocab loader (which also adds the FIM pad / repo /
# file-separator tokens and the eos/eot/eom ids).
EOG_TOKEN_TEXTS = frozenset({
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
    "<|end_of_text|>", "<EOT>", "<|fim_pad|>", "<|repo_name|>", "<|fim_repo|>", "<|file_sep|>",
})

_RENDER_ON_REQUEST = (TokenType.CONTROL, TokenType.UNKNOWN)


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-level map: byte b -> one printable character (printable Latin-1 bytes map to themselves,
    the other 68 bytes to U+0100 and up, in byte order)."""
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table = []
    n_shifted = 0
    for b in range(256):
        if b in printable:
            table.append(chr(b))
        else:
            table.append(chr(256 + n_shifted))
            n_shifted += 1
    return table


BYTE_TO_CHAR: list[str] = _byte_level_alphabet()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}


def bytes_to_byte_level(data: bytes) -> str:
    """Spell raw bytes in the byte-level alphabet (how `gpt2` GGUF vocabularies store tokens)."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


def byte_level_to_bytes(text: str) -> bytes:
    """Inverse of `bytes_to_byte_level`; characters outside the alphabet pass through as UTF-8."""
    out = bytearray()
    for ch in text:
        b = CHAR_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


def _optional_id(metadata: Mapping[str, Any], key: str, n_vocab: int, source: str) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value < n_vocab:
        raise GGUFError(source, f"{key} = {value!r} is not a token id in [0, {n_vocab})")
    return int(value)


class Tokenizer:
    """A GGUF `gpt2` (byte-level BPE) vocabulary: encode, decode, special and end-of-generation ids."""

    def __init__(self, tokens: Sequence[str], token_types: Sequence[int], merges: Sequence[str], *,
                 pre: str, bos_id: int | None = None, eos_id: int | None = None,
                 eot_id: int | None = None, eom_id: int | None = None, padding_id: int | None = None,
                 add_bos: bool = False, add_eos: bool = False, source: str = "<tokenizer>"):
        if pre not in PRE_TOKENIZERS:
            raise GGUFError(source, f"tokenizer.ggml.pre = {pre!r} is not supported "
                                    f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})")
        if len(token_types) != len(tokens):
            raise GGUFError(source, f"tokenizer.ggml.token_type has {len(token_types)} entries, "
                                    f"tokenizer.ggml.tokens has {len(tokens)}")
        self.source = source
        self.pre = pre
        self.tokens = list(tokens)
        self.token_types = [int(t) for t in token_types]
        self.bos_id, self.eos_id, self.eot_id, self.eom_id = bos_id, eos_id, eot_id, eom_id
        self.padding_id = padding_id
        self.add_bos, self.add_eos = bool(add_bos), bool(add_eos)
        self.eog_ids = self._find_eog_ids()
        self._hf = self._build_hf_tokenizer(merges)
        self._encode_lock = threading.Lock()   # `encode_special_tokens` is tokenizer-wide state
        self._bytes_cache: list[bytes | None] = [None] * len(self.tokens)

    @classmethod
    def from_gguf(cls, gguf_file: GGUFFile) -> Tokenizer:
        """The tokenizer of an opened GGUF file; errors name the file and the offending key."""
        return cls.from_metadata(gguf_file.metadata, source=gguf_file.path)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str = "<metadata>") -> Tokenizer:
        """Build from `tokenizer.ggml.*` keys (GGUF metadata, or a dict from vkmtp.text.gguf_metadata)."""
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise GGUFError(source, f"tokenizer.ggml.model = {model!r}: only byte-level BPE ('gpt2') "
                                    f"is supported")
        tokens = metadata.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise GGUFError(source, "tokenizer.ggml.tokens is missing or not a list of strings")
        merges = metadata.get("tokenizer.ggml.merges")
        if not isinstance(merges, (list, tuple)) or not all(isinstance(m, str) for m in merges):
            raise GGUFError(source, "tokenizer.ggml.merges is missing or not a list of strings")
        token_types = metadata.get("tokenizer.ggml.token_type", [int(TokenType.NORMAL)] * len(tokens))
        n_vocab = len(tokens)
        ids = {key: _optional_id(metadata, f"tokenizer.ggml.{key}_token_id", n_vocab, source)
               for key in ("bos", "eos", "eot", "eom", "padding")}
        return cls(tokens, token_types, merges, pre=str(metadata.get("tokenizer.ggml.pre", "")),
                   bos_id=ids["bos"], eos_id=ids["eos"], eot_id=ids["eot"], eom_id=ids["eom"],
                   padding_id=ids["padding"],
                   add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
                   add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)), source=source)

    def _find_eog_ids(self) -> frozenset[int]:
        eog = {i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None}
        eog.update(i for i, text in enumerate(self.tokens) if text in EOG_TOKEN_TEXTS)
        return frozenset(eog)

    def _build_hf_tokenizer(self, merges: Sequence[str]) -> tokenizers.Tokenizer:
        vocab: dict[str, int] = {}
        for i, text in enumerate(self.tokens):
            vocab.setdefault(text, i)
        merge_pairs = []
        for n, merge in enumerate(merges):
            left, sep, right = merge.partition(" ")
            if not sep or not left or not right or " " in right:
                raise GGUFError(self.source, f"tokenizer.ggml.merges[{n}] = {merge!r} is not 'left right'")
            merge_pairs.append((left, right))
        try:
            bpe = models.BPE(vocab=vocab, merges=merge_pairs)
        except Exception as exc:  # tokenizers raises its own exception type for merges outside the vocab
            raise GGUFError(self.source, f"tokenizer.ggml.merges do not fit the vocabulary: {exc}") from None
        hf = tokenizers.Tokenizer(bpe)
        pattern, nfc = PRE_TOKENIZERS[self.pre]
        if nfc:
            hf.normalizer = normalizers.NFC()
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        added = []
        for i, ttype in enumerate(self.token_types):
            if ttype in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
                special = ttype != TokenType.USER_DEFINED
                added.append((i, AddedToken(self.tokens[i], special=special, normalized=False)))
        hf.add_tokens([token for _, token in added])
        for i, token in added:
            if hf.token_to_id(token.content) != i:
                raise GGUFError(self.source, f"special token {i} {token.content!r} appears twice in "
                                             f"tokenizer.ggml.tokens")
        return hf

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation (eos, eot, `<|im_end|>`, `<|endoftext|>`, ...)."""
        return token_id in self.eog_ids

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocabulary (byte-level spelling for normal tokens)."""
        self._check_id(token_id)
        return self.tokens[token_id]

    def token_to_id(self, text: str) -> int | None:
        """Id of the vocabulary entry spelled `text` (byte-level spelling for normal tokens), or None."""
        return self._hf.token_to_id(text)

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Text -> token ids.

        add_special: add BOS/EOS where the GGUF asks for them (add_bos_token / add_eos_token).
        parse_special: match control tokens such as `<|im_start|>` in the text as single tokens; without it
            they are tokenized as plain text. User-defined tokens (e.g. `<think>`) are always matched.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        with self._encode_lock:
            self._hf.encode_special_tokens = not parse_special
            try:
                ids = self._hf.encode(text, add_special_tokens=False).ids
            except Exception as exc:  # e.g. lone surrogates, which are not valid Unicode text
                raise ValueError(f"cannot tokenize text: {exc}") from None
        if add_special and self.add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if add_special and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _check_id(self, token_id: int) -> None:
        if not isinstance(token_id, int) or not 0 <= token_id < len(self.tokens):
            raise ValueError(f"token id {token_id!r} is out of range [0, {len(self.tokens)})")

    def token_bytes(self, token_id: int, *, render_special: bool = True) -> bytes:
        """The bytes a token stands for (llama.cpp `token_to_piece`).

        Control/unknown tokens give their text only with render_special; unused tokens give b"".
        """
        self._check_id(token_id)
        ttype = self.token_types[token_id]
        if not render_special and ttype in _RENDER_ON_REQUEST:
            return b""
        cached = self._bytes_cache[token_id]
        if cached is None:
            text = self.tokens[token_id]
            if ttype == TokenType.NORMAL:
                cached = byte_level_to_bytes(text)
            elif ttype == TokenType.BYTE:
                cached = bytes([int(text[3:-1], 16)])     # spelled "<0xNN>"
            elif ttype == TokenType.UNUSED:
                cached = b""
            else:
                cached = text.encode("utf-8")
            self._bytes_cache[token_id] = cached
        return cached

    def token_to_piece(self, token_id: int, *, render_special: bool = True) -> str:
        """One token as text; a token holding part of a UTF-8 character gives U+FFFD for that part."""
        return self.token_bytes(token_id, render_special=render_special).decode("utf-8", errors="replace")

    def decode(self, ids: Sequence[int], *, render_special: bool = True) -> str:
        """Token ids -> text (llama-server /detokenize renders control tokens, hence the default)."""
        data = b"".join(self.token_bytes(int(i), render_special=render_special) for i in ids)
        return data.decode("utf-8", errors="replace")


class StreamDecoder:
    """Turns ids arriving one at a time into text chunks that never end inside a UTF-8 character.

    Bytes of an incomplete character are held back until the token that completes it arrives; `flush()`
    at the end of generation emits what is left (an unfinished character becomes U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer, *, render_special: bool = False):
        self.tokenizer = tokenizer
        self.render_special = render_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; returns the text that became complete (possibly "")."""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id, render_special=self.render_special))

    @property
    def pending_bytes(self) -> bytes:
        """Bytes held back because they do not yet form a whole character."""
        return self._utf8.getstate()[0]

    def flush(self) -> str:
        """Emit anything held back and reset for reuse."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
