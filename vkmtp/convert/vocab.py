"""Byte-level BPE vocabularies as GGUF `tokenizer.ggml.*` metadata (llama.cpp's `gpt2` tokenizer model).

`gguf_tokenizer_meta` turns a Hugging Face `tokenizer.json` into the keys llama.cpp's converter writes;
`train_byte_level_bpe` builds a small vocabulary with Qwen3.5's pre-tokenizer split for test models.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

# Qwen3.5's split pattern (qwen35-mtp.md §1.1), llama.cpp pre-tokenizer "qwen35"
QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3


def train_byte_level_bpe(corpus: Iterable[str], vocab_size: int,
                         special_tokens: tuple[str, ...] = SPECIAL_TOKENS) -> str:
    """Train a byte-level BPE of exactly `vocab_size` ids (special tokens last) on `corpus`.

    Returns the tokenizer.json text. Raises ValueError if the corpus is too small to fill the vocabulary.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN35_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    n_regular = vocab_size - len(special_tokens)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(list(corpus), trainer)
    if tok.get_vocab_size() != n_regular:
        raise ValueError(f"corpus too small: BPE stopped at {tok.get_vocab_size()} of {n_regular} tokens")
    tok.add_special_tokens(list(special_tokens))
    return tok.to_str()


def gguf_tokenizer_meta(tokenizer_json: str, eos_token: str = "<|im_end|>", pad_token: str = "<|endoftext|>",
                        bos_token: str = "<|endoftext|>", pre: str = "qwen35",
                        chat_template: str | None = CHATML_TEMPLATE) -> dict[str, Any]:
    """`tokenizer.ggml.*` keys for a byte-level BPE tokenizer.json, as llama.cpp's gpt2 vocab export writes
    them: tokens in byte-level form, token types (added special tokens = CONTROL), merges "a b"."""
    data = json.loads(tokenizer_json)
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    specials = set()
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            specials.add(added["content"])
    n_vocab = max(vocab.values()) + 1
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        types.append(TOKEN_TYPE_CONTROL if token in specials else TOKEN_TYPE_NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.eos_token_id": vocab[eos_token],
        "tokenizer.ggml.padding_token_id": vocab[pad_token],
        "tokenizer.ggml.bos_token_id": vocab[bos_token],
        "tokenizer.ggml.add_bos_token": False,
    }
    if chat_template:
        meta["tokenizer.chat_template"] = chat_template
    return meta
