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
from vkmtp.model.weights import ModelTensors, validate
from vkmtp.ref.block import check_tokens, decoder_block
from vkmtp.ref.mtp import mtp_forward
from vkmtp.ref.ops.matvec import linear
from vkmtp.ref.ops.rms_norm import rms_norm
from vkmtp.ref.state import ModelState, MtpState


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

    def __init__(
        self,
        cfg: ModelConfig,
        tensors: ModelTensors,
        weights: Mapping[str, np.ndarray],
        dtype: np.dtype = np.float32,
    ):
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

    def new_state(self, kv_dtype: np.dtype | None = None) -> ModelState:
        """Empty trunk memory; kv_dtype=np.float16 mimics llama.cpp's default F16 KV cache."""
        return ModelState(self.cfg, self.dtype, kv_dtype)

    def new_mtp_state(self, kv_dtype: np.dtype | None = None) -> MtpState:
        """Empty MTP KV cache (llama.cpp's MTP context; its default cache type is F16 too)."""
        return MtpState(self.cfg, self.dtype, kv_dtype)

    def check_tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Token ids as a flat int64 array; ValueError when empty or outside the vocabulary."""
        return check_tokens(tokens, self.cfg.n_vocab)

    # ---- the trunk -------------------------------------------------------------------------------
    def forward(
        self,
        tokens: Sequence[int] | np.ndarray,
        state: ModelState,
        keep_steps: int = 0,
        trace: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate new tokens at positions state.n_past, state.n_past+1, ... and update `state`.

        Args:
            tokens: [n_tokens] token ids.
            state: the sequence's memory (from `new_state`).
            keep_steps: record the GDN states after each of the last `keep_steps` tokens so that
                `state.rollback` can return to them (the verify step of speculative decoding).
            trace: if given, filled with intermediate activations for comparing another engine layer by
                layer: "embd" and "blk.{i}" (block outputs) [n_tokens, n_embd].
        Returns:
            logits [n_tokens, n_vocab] and hidden [n_tokens, n_embd] (after output_norm: the vector the
            LM head multiplies, and the `h` input of the MTP head).
        """
        cfg, w = self.cfg, self.weights
        tokens = self.check_tokens(tokens)
        n_tokens = tokens.shape[0]
        positions = state.n_past + np.arange(n_tokens)
        keep_steps = min(keep_steps, n_tokens)
        state.clear_steps()
        x = w[self.tensors.token_embd.name][tokens].astype(self.dtype)  # [n_tokens, n_embd], no scaling
        if trace is not None:
            trace["embd"] = x.copy()
        for blk in self.tensors.blocks:
            if blk.kind is LayerKind.ATTENTION:
                x, _, _ = decoder_block(blk, x, positions, state.kv[blk.index], w, cfg)
            else:
                memory = state.recurrent[blk.index]
                x, new_state, steps = decoder_block(blk, x, positions, memory, w, cfg, keep_steps)
                state.recurrent[blk.index] = new_state
                state.record_steps(blk.index, state.n_past + n_tokens - len(steps) + 1, steps)
            if trace is not None:
                trace[f"blk.{blk.index}"] = x.copy()
        hidden = rms_norm(x, w[self.tensors.output_norm.name], cfg.rms_eps, dtype=self.dtype)
        state.n_past += n_tokens
        return linear(hidden, w[self.tensors.output.name]), hidden

    def mtp_forward(
        self, tokens: Sequence[int] | np.ndarray, hiddens: np.ndarray, mtp_state: MtpState
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the MTP head; see `vkmtp.ref.mtp.mtp_forward`."""
        return mtp_forward(self.cfg, self.tensors.mtp, self.weights, tokens, hiddens, mtp_state, self.dtype)
