"""What the server knows about its model without the engine: tokenizer, chat template and size facts.

Loaded once at start-up and kept while the engine sleeps, so /tokenize, /props and /models never wake it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from vkmtp.text.chat_template import ChatTemplate
from vkmtp.gguf import open_gguf
from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import validate
from vkmtp.text.tokenizer import Tokenizer


@dataclass
class ModelInfo:
    path: str
    alias: str  # the model id clients see
    tokenizer: Tokenizer
    template: ChatTemplate
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_params: int
    size: int  # bytes of tensor data
    has_mtp: bool
    arch: str  # qwen35 | qwen35moe
    quant_mix: Counter  # ggml type name -> bytes of tensor data

    @classmethod
    def load(cls, path: str | os.PathLike, alias: str | None = None, chat_template: str | None = None) -> ModelInfo:
        """Read a GGUF's metadata; raises GGUFError (naming the file and key) when it is not usable.
        `chat_template` (Jinja source) replaces the GGUF's template (--chat-template)."""
        gguf = open_gguf(path)
        cfg = ModelConfig.from_gguf(gguf)
        tokenizer = Tokenizer.from_gguf(gguf)
        if chat_template is None:
            template = ChatTemplate.from_metadata(gguf.metadata, tokenizer)
        else:
            template = ChatTemplate.for_tokenizer(tokenizer, chat_template)
        return cls(
            str(path),
            alias or os.path.basename(str(path)),
            tokenizer,
            template,
            cfg.n_vocab,
            cfg.n_ctx_train,
            cfg.n_embd,
            sum(t.n_elements for t in gguf.tensors.values()),
            sum(t.n_bytes for t in gguf.tensors.values()),
            validate(gguf, cfg).mtp is not None,
            cfg.arch,
            Counter({name: sum(t.n_bytes for t in gguf.tensors.values() if t.type_name == name)
                     for name in {t.type_name for t in gguf.tensors.values()}}),
        )

    def model_card(self, created: int) -> dict:
        """One entry of /v1/models, with llama-server's `meta` block."""
        return {
            "id": self.alias,
            "object": "model",
            "created": created,
            "owned_by": "vkmtp",
            "meta": {
                "n_vocab": self.n_vocab,
                "n_ctx_train": self.n_ctx_train,
                "n_embd": self.n_embd,
                "n_params": self.n_params,
                "size": self.size,
            },
        }
