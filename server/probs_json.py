"""Token probabilities as the three APIs write them: OpenAI chat, OpenAI text completions, llama-server's /completion.

OpenAI chat: `logprobs.content[]`; text completions: the legacy `logprobs` (tokens, token_logprobs,
top_logprobs, text_offset); llama-server: `completion_probabilities` (`logprob` / `top_logprobs`, or `prob` /
`top_probs` with post_sampling_probs)."""

from __future__ import annotations

import math
from typing import Any

from vkmtp.engine.token_probs import TokenProbs
from vkmtp.text.tokenizer import Tokenizer

LOWEST = -3.4028234663852886e38   # what llama-server writes for log(0): JSON has no -inf


def _finite(value: float) -> float:
    return value if math.isfinite(value) else LOWEST


class ProbsWriter:
    """Token text and bytes of ids (llama.cpp's token_to_piece), and the three JSON shapes."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.text_offset = 0   # /v1/completions: characters of the reply before the next token

    def _piece(self, token: int) -> tuple[str, list[int]]:
        data = self.tokenizer.token_bytes(token)
        return data.decode("utf-8", errors="replace"), list(data)

    def _openai_entry(self, token: int, logprob: float) -> dict[str, Any]:
        text, data = self._piece(token)
        return {"token": text, "logprob": _finite(logprob), "bytes": data}

    def chat(self, probs: list[TokenProbs]) -> dict[str, Any]:
        """OpenAI chat: choices[].logprobs = {"content": [...], "refusal": None}."""
        content = []
        for p in probs:
            entry = self._openai_entry(p.id, p.value)
            entry["top_logprobs"] = [self._openai_entry(t, v) for t, v in p.top]
            content.append(entry)
        return {"content": content, "refusal": None}

    def completion(self, probs: list[TokenProbs]) -> dict[str, Any]:
        """OpenAI text completions (legacy): parallel lists; text_offset counts on across streamed chunks."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for p in probs:
            text, _ = self._piece(p.id)
            out["tokens"].append(text)
            out["token_logprobs"].append(_finite(p.value))
            out["top_logprobs"].append({self._piece(t)[0]: _finite(v) for t, v in p.top})
            out["text_offset"].append(self.text_offset)
            self.text_offset += len(text)
        return out

    def llama(self, probs: list[TokenProbs]) -> list[dict[str, Any]]:
        """llama-server's completion_probabilities."""
        out = []
        for p in probs:
            value, top = ("prob", "top_probs") if p.post_sampling else ("logprob", "top_logprobs")
            entry = self._llama_entry(p.id, value, p.value)
            entry[top] = [self._llama_entry(t, value, v) for t, v in p.top]
            out.append(entry)
        return out

    def _llama_entry(self, token: int, key: str, value: float) -> dict[str, Any]:
        text, data = self._piece(token)
        return {"id": token, "token": text, "bytes": data, key: _finite(value)}
