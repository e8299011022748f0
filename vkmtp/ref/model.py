"""The whole-model NumPy reference for Qwen3.5 GGUFs: the oracle the Vulkan engine is checked against.

`ReferenceModel.forward` runs the trunk over new tokens of one sequence (prefill or decode, any count) and
returns logits and the post-`output_norm` hidden states; `mtp_forward` runs the MTP head (vkmtp/ref/mtp.py).
Weights are dequantized to float32 (or float64) on first use.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping, Sequence

import numpy as np

from vkmtp.gguf import GGUFFile, open_gguf
from vkmtp.model.config import LayerKind, ModelConfig
from vkmtp.model.weights import BlockTensors, DenseFfnTensors, ModelTensors, validate
from vkmtp.ref.attention import gated_attention, linear
from vkmtp.ref.delta_net import delta_net
from vkmtp.ref.ffn import dense_ffn, moe_ffn
from vkmtp.ref.mtp import mtp_forward
from vkmtp.ref.norm import rms_norm
from vkmtp.ref.rope import text_positions
from vkmtp.ref.state import DeltaNetState, KVCache, ModelState, MtpState


class WeightStore(Mapping[str, np.ndarray]):
    """Tensors of a GGUF as dense arrays in NumPy order, dequantized on first access and cached."""

    def __init__(self, gguf_file: GGUFFile, dtype: np.dtype = np.float32):
        self.gguf_file = gguf_file
        self.dtype = np.dtype(dtype)
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        array = self._cache.get(name)
        if array is None:
            array = self.gguf_file.dequantize(name).astype(self.dtype, copy=False)
            array.setflags(write=False)
            self._cache[name] = array
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self.gguf_file.tensors)

    def __len__(self) -> int:
        return len(self.gguf_file.tensors)


class ReferenceModel:
    """NumPy forward pass of a `qwen35` / `qwen35moe` model, trunk and MTP head."""

    def __init__(self, cfg: ModelConfig, tensors: ModelTensors, weights: Mapping[str, np.ndarray],
                 dtype: np.dtype = np.float32):
        self.cfg = cfg
        self.tensors = tensors
        self.weights = weights
        self.dtype = np.dtype(dtype)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, dtype: np.dtype = np.float32) -> "ReferenceModel":
        """Open, check (config + tensor table) and wrap a GGUF. Raises GGUFError on any mismatch."""
        gguf_file = open_gguf(path)
        cfg = ModelConfig.from_gguf(gguf_file)
        tensors = validate(gguf_file, cfg)
        return cls(cfg, tensors, WeightStore(gguf_file, dtype), dtype)

    @property
    def has_mtp(self) -> bool:
        """The file has an MTP block (metadata announces it and its tensors are present)."""
        return self.tensors.mtp is not None

    def new_state(self) -> ModelState:
        return ModelState(self.cfg, self.dtype)

    def new_mtp_state(self) -> MtpState:
        return MtpState(self.cfg, self.dtype)

    # ---- pieces -----------------------------------------------------------------------------------------------
    def check_tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            raise ValueError("no tokens to evaluate")
        bad = tokens[(tokens < 0) | (tokens >= self.cfg.n_vocab)]
        if bad.size:
            raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, {self.cfg.n_vocab})")
        return tokens

    def embed(self, tokens: np.ndarray, table: str | None = None) -> np.ndarray:
        """Rows of the embedding table (no scaling): [n_tokens] -> [n_tokens, n_embd]."""
        return self.weights[table or self.tensors.token_embd.name][tokens].astype(self.dtype)

    def lm_head(self, hidden: np.ndarray, head: str | None = None) -> np.ndarray:
        """[n_tokens, n_embd] post-norm hidden -> [n_tokens, n_vocab] logits."""
        return linear(hidden, self.weights[head or self.tensors.output.name])

    def block(self, blk: BlockTensors, x: np.ndarray, pos4: np.ndarray, memory: KVCache | DeltaNetState,
              keep_steps: int = 0) -> tuple[np.ndarray, DeltaNetState | None, list[DeltaNetState]]:
        """One decoder block (§3.2) over [n_tokens, n_embd].

        Returns the block output, the new GDN state (None for attention blocks, whose KVCache is updated in
        place) and the recorded GDN step states.
        """
        cfg, w = self.cfg, self.weights
        a = rms_norm(x, w[blk.attn_norm.name], cfg.rms_eps)
        new_state, steps = None, []
        if blk.kind is LayerKind.ATTENTION:
            mixed = gated_attention(a, blk.mixer, w, memory, pos4, cfg)
        else:
            mixed, new_state, steps = delta_net(a, blk.mixer, w, memory, cfg, keep_steps)
        x = x + mixed
        f = rms_norm(x, w[blk.ffn_norm.name], cfg.rms_eps)
        if isinstance(blk.ffn, DenseFfnTensors):
            x = x + dense_ffn(f, blk.ffn, w)
        else:
            x = x + moe_ffn(f, blk.ffn, w, cfg)
        return x, new_state, steps

    # ---- the trunk ----------------------------------------------------------------------------------------------
    def forward(self, tokens: Sequence[int] | np.ndarray, state: ModelState,
                keep_steps: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate new tokens at positions state.n_past, state.n_past+1, ... and update `state`.

        Args:
            tokens: [n_tokens] token ids.
            state: the sequence's memory (from `new_state`).
            keep_steps: record the GDN states after each of the last `keep_steps` tokens so that
                `state.rollback` can return to them (the verify step of speculative decoding).
        Returns:
            logits [n_tokens, n_vocab] and hidden [n_tokens, n_embd] (after output_norm: the vector the
            LM head multiplies, and the `h` input of the MTP head).
        """
        tokens = self.check_tokens(tokens)
        n_tokens = tokens.shape[0]
        pos4 = text_positions(state.n_past + np.arange(n_tokens))
        keep_steps = min(keep_steps, n_tokens)
        state.clear_steps()
        x = self.embed(tokens)                                                  # [n_tokens, n_embd]
        for blk in self.tensors.blocks:
            if blk.kind is LayerKind.ATTENTION:
                x, _, _ = self.block(blk, x, pos4, state.kv[blk.index])
            else:
                x, new_state, steps = self.block(blk, x, pos4, state.recurrent[blk.index], keep_steps)
                state.recurrent[blk.index] = new_state
                state.record_steps(blk.index, state.n_past + n_tokens - len(steps) + 1, steps)
        hidden = rms_norm(x, self.weights[self.tensors.output_norm.name], self.cfg.rms_eps)
        state.n_past += n_tokens
        return self.lm_head(hidden), hidden

    def mtp_forward(self, tokens: Sequence[int] | np.ndarray, hiddens: np.ndarray,
                    mtp_state: MtpState) -> tuple[np.ndarray, np.ndarray]:
        """Run the MTP head; see `vkmtp.ref.mtp.mtp_forward`."""
        return mtp_forward(self, tokens, hiddens, mtp_state)
