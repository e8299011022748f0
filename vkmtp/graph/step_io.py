"""The host-visible step buffer: what the host writes before a recorded step and reads after it.

A recorded sequence is replayed unchanged, so everything that differs between steps lives here: token records
({token_id, pos, seq, flags}, shaders/common/tokens.glsl), row-copy pairs, and the outputs (token ids, accept
counts). The GPU also writes draft tokens into the records during a speculative step. Host writes before a
submission are visible to the device; device writes are visible after the fence (Recorder.finish).
"""

from __future__ import annotations

import numpy as np

from vkmtp.device import Device, View
from vkmtp.ops.sample import MAX_WINDOW, PARAM_WORDS
from vkmtp.ops.spec import RECORD_WORDS
from vkmtp.spec.config import DRAFT_TOP_K

MAX_BIAS = 1024   # logit-bias entries a request may have on the GPU sampling path (more: the host samples)


class StepIO:
    """Named regions of one host-visible uint32 buffer, sized for the largest step of this engine."""

    @staticmethod
    def regions(max_tokens: int, n_seq: int, K: int, n_vocab: int = 0) -> dict[str, int]:
        """Words of each named region; max_tokens: rows of the largest step (EngineShape.max_rows); n_vocab:
        the width of the grammar masks (0: none)."""
        V = K + 1
        return {
            "records": RECORD_WORDS * max(max_tokens, n_seq * V),
            "draft_records": RECORD_WORDS * max(K, 1) * n_seq,
            "ids": max(n_seq * V, max_tokens),
            "draft_ids": n_seq,
            "top_values": DRAFT_TOP_K * n_seq,
            "top_ids": DRAFT_TOP_K * n_seq,
            "valid": max(K, 1) * n_seq,
            "out_ids": n_seq * V,
            "accept": n_seq,
            "n_valid": n_seq,
            "select": 2 * n_seq,
            "hidden_select": 2 * n_seq,
            "pairs_in": 2 * max(n_seq, 1),
            "pairs_shift": 2 * max(n_seq, 1),
            "pairs_out": 2 * max(n_seq, 1),
            "pairs_lag": 2 * max(n_seq, max_tokens),
            "uniforms": max(K, 1) * n_seq,
            "draft_noise": 4 * n_seq,   # per sequence {seed key, position, 1/T bits, on} (shaders/gumbel.comp)
            # GPU sampling (shaders/sample.comp): per sampled row its parameters; per slot its penalty window's
            # history tokens and its logit-bias pairs {id, bias}
            "sample_params": PARAM_WORDS * max(n_seq * V, 1),
            "sample_history": MAX_WINDOW * n_seq,
            "sample_bias": 2 * MAX_BIAS * n_seq,
            "sample_mask": -(-n_vocab // 32) * n_seq * V,   # a grammar's allowed tokens per verified row
        }

    @staticmethod
    def total_words(max_tokens: int, n_seq: int, K: int, n_vocab: int = 0) -> int:
        """Words of the step buffer (regions rounded up to 4 words): what __init__ allocates."""
        return sum(-(-n // 4) * 4 for n in StepIO.regions(max_tokens, n_seq, K, n_vocab).values())

    def __init__(self, device: Device, max_tokens: int, n_seq: int, K: int, n_vocab: int = 0):
        self.offsets: dict[str, tuple[int, int]] = {}
        total = 0
        for name, n in StepIO.regions(max_tokens, n_seq, K, n_vocab).items():
            self.offsets[name] = (total, n)
            total += -(-n // 4) * 4
        self.buffer = device.buffer(4 * total, "host", "step", role="step_inputs")
        self.words = self.buffer.words()
        self.K = K

    def view(self, name: str, start: int = 0, n: int | None = None) -> View:
        off, size = self.offsets[name]
        n = size - start if n is None else n
        return self.buffer.view(4 * (off + start), 4 * n)

    def array(self, name: str, dtype=np.uint32) -> np.ndarray:
        off, n = self.offsets[name]
        return self.words[off: off + n].view(dtype)

    def records(self, name: str = "records") -> np.ndarray:
        """[n, 4] view: token_id, pos, seq, flags."""
        return self.array(name).reshape(-1, RECORD_WORDS)

    def record_view(self, name: str, first: int, n: int) -> View:
        return self.view(name, RECORD_WORDS * first, RECORD_WORDS * n)

    def write_pairs(self, name: str, pairs: list[tuple[int, int]]) -> None:
        arr = self.array(name)
        arr[: 2 * len(pairs)] = np.asarray(pairs, dtype=np.uint32).ravel()

    def destroy(self) -> None:
        self.buffer.destroy()
