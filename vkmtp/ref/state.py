"""Per-sequence memory of the reference model: KV caches, GDN conv/recurrent states, snapshots and rollback.

Layouts match what the GPU engine and llama.cpp keep (vkmtp/graph/device_state.py holds the GPU's):
  KV cache:   k, v [n_past, n_head_kv, head_dim]  (k after q/k-norm and RoPE, v raw)
  conv state: [K_c - 1, conv_dim]                  the last K_c-1 raw qkv projections, oldest first
  ssm state:  [H_v, d_v, d_k]                      per value head S^T (ggml ne = [d_k, d_v, H_v])

A KV cache is kept as any type of vkmtp.ops.kv_layout.KV_TYPES: f16 and f32 as NumPy arrays of that dtype,
q8_0 as f32 values rounded through the q8_0 quantize/dequantize of the set_rows oracle (vkmtp/ref/ops/set_rows.py),
which is what the GPU stores.

Rollback mirrors llama.cpp's `n_rs_seq` planes (one recurrent state per verified token): a forward with
`keep_steps=k` records the recurrent state after each of the batch's last k tokens, and `rollback(n_past)`
returns to any of those positions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.ops.kv_layout import kv_type as kv_type_of
from vkmtp.ref.ops.set_rows import decode_rows, encode_rows

KvDtype = np.dtype | type | str | None   # a NumPy dtype or a KV type name ("f16", "q8_0", "f32")
_STORAGE = {"f16": np.float16, "f32": np.float32, "q8_0": np.float32}


@dataclass
class KVCache:
    """Keys and values of one attention block, one row per position 0 .. n_past-1."""

    k: np.ndarray  # [n_past, n_head_kv, head_dim]
    v: np.ndarray  # [n_past, n_head_kv, head_dim]
    quant: str | None = None  # "q8_0": rows are rounded through that block quantization when appended

    @classmethod
    def empty(cls, n_head_kv: int, head_dim: int, dtype: KvDtype) -> "KVCache":
        quant = None
        if isinstance(dtype, str):
            kv_type_of(dtype)
            quant = dtype if dtype == "q8_0" else None
            dtype = _STORAGE[dtype]
        shape = (0, n_head_kv, head_dim)
        return cls(np.zeros(shape, dtype), np.zeros(shape, dtype), quant)

    @property
    def n_past(self) -> int:
        return self.k.shape[0]

    def append(self, k_new: np.ndarray, v_new: np.ndarray) -> None:
        """Add rows for the next positions. k_new, v_new: [n_tokens, n_head_kv, head_dim]."""
        self.k = np.concatenate([self.k, self._stored(k_new)])
        self.v = np.concatenate([self.v, self._stored(v_new)])

    def _stored(self, x: np.ndarray) -> np.ndarray:
        if self.quant is None:
            return x.astype(self.k.dtype)
        rows = np.asarray(x, np.float32).reshape(x.shape[0], -1)
        n = rows.shape[1]
        return decode_rows(encode_rows(rows, self.quant), self.quant, n).reshape(x.shape).astype(self.k.dtype)

    def truncate(self, n_past: int) -> None:
        """Drop every position >= n_past (llama.cpp `seq_rm(seq, n_past, -1)` on a KV cache)."""
        self.k = self.k[:n_past].copy()
        self.v = self.v[:n_past].copy()


@dataclass
class DeltaNetState:
    """Conv window and delta-rule state of one Gated DeltaNet block."""

    conv: np.ndarray  # [K_c - 1, conv_dim]
    ssm: np.ndarray  # [H_v, d_v, d_k]

    @classmethod
    def zeros(cls, cfg: ModelConfig, dtype: np.dtype) -> "DeltaNetState":
        conv = np.zeros((cfg.ssm_conv_kernel - 1, cfg.ssm_conv_dim), dtype)
        ssm = np.zeros((cfg.ssm_dt_rank, cfg.ssm_head_v_dim, cfg.ssm_d_state), dtype)
        return cls(conv, ssm)

    def copy(self) -> "DeltaNetState":
        return DeltaNetState(self.conv.copy(), self.ssm.copy())


@dataclass
class StateSnapshot:
    """A deep copy of a ModelState, for `ModelState.restore`."""

    n_past: int
    kv: dict[int, KVCache]
    recurrent: dict[int, DeltaNetState]


class ModelState:
    """Trunk memory of one sequence: a KVCache per attention block, a DeltaNetState per GDN block."""

    def __init__(self, cfg: ModelConfig, dtype: np.dtype = np.float32, kv_dtype: KvDtype = None):
        """`kv_dtype` np.float16 (or "f16") rounds cached k/v like llama.cpp's default F16 KV cache, "q8_0"
        like its Q8_0 cache."""
        self.n_past = 0
        kv_dtype = kv_dtype or dtype
        self.kv = {i: KVCache.empty(cfg.n_head_kv, cfg.head_dim, kv_dtype) for i in cfg.attention_layers}
        self.recurrent = {i: DeltaNetState.zeros(cfg, dtype) for i in cfg.recurrent_layers}
        # states after the last tokens of the latest batch: {n_past after that token: {layer: state}}
        self._steps: dict[int, dict[int, DeltaNetState]] = {}

    def record_steps(self, layer: int, first_n_past: int, steps: list[DeltaNetState]) -> None:
        """Remember `steps[i]` as layer's state once `first_n_past + i` tokens are in memory."""
        for i, step in enumerate(steps):
            self._steps.setdefault(first_n_past + i, {})[layer] = step

    def clear_steps(self) -> None:
        self._steps = {}

    @property
    def rollback_points(self) -> tuple[int, ...]:
        """The n_past values `rollback` can return to (besides the current one)."""
        return tuple(sorted(self._steps))

    def rollback(self, n_past: int) -> None:
        """Forget every token at position >= n_past: truncate the KV caches and restore the GDN states
        recorded after token n_past-1 by the latest forward (`keep_steps`). Raises ValueError if that
        state was not recorded (llama.cpp would need a full checkpoint then)."""
        if n_past == self.n_past:
            return
        if not 0 <= n_past < self.n_past:
            raise ValueError(f"cannot roll back to n_past={n_past}: the state holds {self.n_past} tokens")
        if self.recurrent:
            steps = self._steps.get(n_past)
            if steps is None or set(steps) != set(self.recurrent):
                raise ValueError(
                    f"no recorded recurrent state at n_past={n_past} "
                    f"(recorded: {list(self.rollback_points)}); use keep_steps in forward"
                )
            for layer, step in steps.items():
                self.recurrent[layer] = step.copy()
        for cache in self.kv.values():
            cache.truncate(n_past)
        self._steps = {p: s for p, s in self._steps.items() if p <= n_past}
        self.n_past = n_past

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            self.n_past, copy.deepcopy(self.kv), {i: s.copy() for i, s in self.recurrent.items()}
        )

    def restore(self, snapshot: StateSnapshot) -> None:
        """Return exactly to `snapshot` (the snapshot stays usable)."""
        self.n_past = snapshot.n_past
        self.kv = copy.deepcopy(snapshot.kv)
        self.recurrent = {i: s.copy() for i, s in snapshot.recurrent.items()}
        self._steps = {}


class MtpState:
    """Memory of the MTP head: the KV cache of block n_layer only (llama.cpp's MTP context).

    The entry at position p is built from (token x_p, trunk hidden h_{p-1}); `n_past` counts entries.
    """

    def __init__(self, cfg: ModelConfig, dtype: np.dtype = np.float32, kv_dtype: KvDtype = None):
        self.kv = KVCache.empty(cfg.n_head_kv, cfg.head_dim, kv_dtype or dtype)

    @property
    def n_past(self) -> int:
        return self.kv.n_past

    def rollback(self, n_past: int) -> None:
        """Drop entries at positions >= n_past."""
        if not 0 <= n_past <= self.n_past:
            raise ValueError(f"cannot roll the MTP cache back to n_past={n_past}: it holds {self.n_past}")
        self.kv.truncate(n_past)

    def snapshot(self) -> KVCache:
        return copy.deepcopy(self.kv)

    def restore(self, snapshot: KVCache) -> None:
        self.kv = copy.deepcopy(snapshot)
