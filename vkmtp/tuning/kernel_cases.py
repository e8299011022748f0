"""Kernel workloads with random inputs and their NumPy check, for `vkmtp tune` and tools/bench_kernels.py.

Each case owns its device operands and offers `check(op)` (None when the op agrees with vkmtp.ref, else the
problem), `recorder(op, ...)` (a `record(rec, i)` for vkmtp.tuning.timing.time_recorded) and `bytes_read` (what the
kernel must read at least, for bandwidth). A candidate configuration is only timed after it passed check.
"""

from __future__ import annotations

import numpy as np

from vkmtp.tuning.timing import Operands
from vkmtp.device import Device
from vkmtp.gguf import row_bytes
from vkmtp.ops.flash_attn import FlashAttn
from vkmtp.ops.gdn import GatedDeltaNet
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.matmul import INT8_TYPES, MatMul
from vkmtp.ops.matvec import MAX_COLS, MatVec
from vkmtp.ops.quant_types import to_device_layout
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.flash_attn import flash_attn as flash_attn_ref
from vkmtp.ref.ops.gdn import gated_delta_net
from vkmtp.ref.ops.matmul import dequantize_q8_1, matmul_error_bound, matmul_q8_1, quantize_q8_1
from vkmtp.ref.ops.matmul import matmul as matmul_ref
from vkmtp.ref.ops.matvec import matvec as matvec_ref, matvec_error_bound
from vkmtp.ref.ops.set_rows import decode_rows, encode_rows
from vkmtp.ref.random_quant import random_rows

MATVEC_REL = 2e-6                  # f32 dot of K terms: |err| <= REL * sum |w x| (tests/ops/test_matvec.py)
MATMUL_REL = 1e-5                  # tests/ops/test_matmul.py and test_matmul_q8.py (f32 accumulation order)
GDN_ATOL, GDN_RTOL = 5e-7, 1e-5    # tests/ops/test_gdn.py
GDN_CHUNKED_TOL = dict(atol=3e-6, state_atol=3e-5, rtol=1e-4)   # the chunked kernel (tests/ops/test_gdn_chunked.py)
ATTN_ATOL, ATTN_RTOL = 3e-5, 1e-4  # tests/ops/test_flash_attn.py
ATTN_F16_ATOL = 1e-2               # prefill f16 math (tests/ops/test_flash_attn_f16.py)
EPS = 1e-6
REPS_SLOTS = 4                     # distinct outputs cycled through by timed repetitions


def token_records(pos, seq) -> np.ndarray:
    """[n_tok, 4] u32 {token_id, pos, seq, flags} (shaders/common/tokens.glsl)."""
    rec = np.zeros((len(pos), 4), np.uint32)
    rec[:, 1] = pos
    rec[:, 2] = seq
    return rec


def compare(name: str, got: np.ndarray, want: np.ndarray, atol, rtol: float = 0.0) -> str | None:
    """None if finite and within atol + rtol * |want| everywhere, else a one-line description."""
    if not np.all(np.isfinite(got)):
        return f"{name}: {int(np.sum(~np.isfinite(got)))} NaN/Inf values"
    err = np.abs(got.astype(np.float64) - want) - (atol + rtol * np.abs(want))
    if np.any(err > 0):
        i = np.unravel_index(np.argmax(err), err.shape)
        return f"{name}: element {tuple(int(j) for j in i)} is {got[i]!r}, expected {want[i]!r}"
    return None


def run_once(device, record) -> None:
    """Record one run of a case's recorder (iteration 0), submit it, wait, and free the recording."""
    rec = device.recorder()
    record(rec, 0)
    rec.finish()
    rec.run()
    rec.destroy()


class MatVecCase:
    """A [n_rows, n_k] weight of one type, MAX_COLS activation columns, REPS_SLOTS output slots."""

    def __init__(self, device: Device, ggml_type: int, n_rows: int, n_k: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.device, self.type, self.n_rows, self.n_k = device, ggml_type, n_rows, n_k
        self.weight = random_rows(ggml_type, n_rows, n_k, rng)            # [n_rows, row_bytes] u8
        self.x = rng.standard_normal((MAX_COLS, n_k)).astype(np.float32)  # [8, n_k]
        self.ops = Operands(device, {"w": to_device_layout(ggml_type, n_k, self.weight), "x": self.x,
                                     "y": REPS_SLOTS * MAX_COLS * n_rows * 4})
        self.bytes_read = n_rows * row_bytes(ggml_type, n_k)

    def _y(self, slot: int, n: int):
        return self.ops.view("y").sub(slot * MAX_COLS * self.n_rows * 4, n * self.n_rows * 4)

    def recorder(self, mv: MatVec, n: int):
        x = self.ops.view("x").sub(0, n * self.n_k * 4)

        def record(rec, i: int) -> None:
            y = self._y(i % REPS_SLOTS, n)
            mv.record(rec, self.ops.view("w"), self.type, self.n_rows, self.n_k, x, y, n)
        return record

    def run(self, mv: MatVec, n: int) -> np.ndarray:
        run_once(self.device, self.recorder(mv, n))
        return self.device.read(self._y(0, n)).reshape(n, self.n_rows)

    def check(self, mv: MatVec) -> str | None:
        """All 8 columns against the reference; column 0 alone must equal column 0 of the batch, bit for
        bit."""
        batch = self.run(mv, MAX_COLS)
        want = matvec_ref(self.weight, self.type, self.n_rows, self.n_k, self.x)
        tol = matvec_error_bound(self.weight, self.type, self.n_rows, self.n_k, self.x, MATVEC_REL) + 1e-30
        problem = compare("matvec", batch, want, tol)
        if problem is None and not np.array_equal(self.run(mv, 1)[0], batch[0]):
            problem = "matvec: column 0 alone differs from column 0 in a batch of 8 (batch invariance)"
        return problem

    def destroy(self) -> None:
        self.ops.destroy()


# Prefill mat-mat weights [rows, K] of one trunk layer's FFN at real widths (gate and up [F, E], down [E, F]),
# with their count per layer: the bulk of a prompt chunk's multiply-adds, timed by `vkmtp tune` when no model is
# given (tools/make_synthetic_model.py presets: 0.8B E 1024, F 3584; 27B E 5120, F 17408).
PREFILL_FFN_SHAPES = {"0.8b": ((3584, 1024, 2), (1024, 3584, 1)), "27b": ((17408, 5120, 2), (5120, 17408, 1))}


def model_prefill_shapes(path: str) -> dict[int, list[tuple[int, int, int]]]:
    """{ggml type id: [(rows, K, count)]} of a GGUF's 2-D block weights that prompt chunks multiply with the
    mat-mat and that the int8 kernel takes (quantized types). MoE expert stacks are 3-D and run on the expert
    mat-vec (vkmtp.ops.matvec_id) in prompt chunks too, so they are not listed; the conv kernel is no mat-mat."""
    from collections import Counter

    from vkmtp.gguf import open_gguf

    with open_gguf(path) as f:
        shapes = Counter((int(info.ggml_type), int(info.shape[0]), int(info.shape[1]))
                         for name, info in f.tensors.items()
                         if name.startswith("blk.") and len(info.shape) == 2 and "conv1d" not in name
                         and int(info.ggml_type) in INT8_TYPES)
    out: dict[int, list[tuple[int, int, int]]] = {}
    for (t, rows, k), count in sorted(shapes.items()):
        out.setdefault(t, []).append((rows, k, count))
    return out


class MatMulCase:
    """A prompt chunk's product: a [n_rows, n_k] weight of one type times n_tok activation rows, REPS_SLOTS
    output slots. `check` runs the timed shape itself (so the tile that is timed is the tile checked) and
    compares a corner of it, the first and last 64 rows of the first and last 2 tokens (partial tiles
    included), with the reference: computing all of a 27B-sized product in NumPy would take minutes."""

    def __init__(self, device: Device, ggml_type: int, n_rows: int, n_k: int, n_tok: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.device, self.type, self.n_rows, self.n_k, self.n_tok = device, ggml_type, n_rows, n_k, n_tok
        self.weight = random_rows(ggml_type, n_rows, n_k, rng)                  # [n_rows, row_bytes] u8
        self.x = rng.standard_normal((n_tok, n_k)).astype(np.float32)          # [n_tok, n_k]
        self.ops = Operands(device, {"w": to_device_layout(ggml_type, n_k, self.weight), "x": self.x,
                                     "y": REPS_SLOTS * n_tok * n_rows * 4})
        self.bytes_read = n_rows * row_bytes(ggml_type, n_k) + self.x.nbytes

    def _y(self, slot: int):
        size = self.n_tok * self.n_rows * 4
        return self.ops.view("y").sub(slot * size, size)

    def recorder(self, mm: MatMul):
        def record(rec, i: int) -> None:
            mm.record(rec, self.ops.view("w"), self.type, self.n_rows, self.n_k, self.ops.view("x"),
                      self._y(i % REPS_SLOTS), self.n_tok)
        return record

    def check(self, mm: MatMul) -> str | None:
        run_once(self.device, self.recorder(mm))
        got = self.device.read(self._y(0)).reshape(self.n_tok, self.n_rows)
        rows = np.unique(np.r_[0:min(64, self.n_rows), max(0, self.n_rows - 64):self.n_rows])
        toks = np.unique([0, min(1, self.n_tok - 1), max(0, self.n_tok - 2), self.n_tok - 1])
        w, x = self.weight[rows], self.x[toks]
        if mm.uses_int8(self.type):
            want = matmul_q8_1(w, self.type, len(rows), self.n_k, x, None, len(toks))
            q, d = quantize_q8_1(x, self.n_k)
            x = dequantize_q8_1(q, d, self.n_k).astype(np.float32)
        else:
            want = matmul_ref(w, self.type, len(rows), self.n_k, x, None, len(toks))
        tol = matmul_error_bound(w, self.type, len(rows), self.n_k, x, len(toks), MATMUL_REL) + 1e-30
        return compare("matmul_q8" if mm.uses_int8(self.type) else "matmul", got[np.ix_(toks, rows)], want, tol)

    def destroy(self) -> None:
        self.ops.destroy()


class GdnCase:
    """One GDN layer step of n_tok tokens of one sequence: H_k key heads, H_v value heads, head dim d."""

    def __init__(self, device: Device, h_k: int, h_v: int, d: int, n_tok: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.device, self.h_k, self.h_v, self.d, self.n_tok = device, h_k, h_v, d, n_tok
        self.width = (2 * h_k + h_v) * d
        self.qkv = rng.standard_normal((n_tok, self.width)).astype(np.float32)   # q | k | v
        self.gates = rng.standard_normal((n_tok, 2 * h_v)).astype(np.float32)    # b | alpha
        self.params = np.concatenate([-np.exp(rng.uniform(-2, 1.5, h_v)), rng.uniform(-1, 1, h_v)]
                                     ).astype(np.float32)                           # ssm_a | dt_bias
        self.state = (0.3 * rng.standard_normal((1, h_v, d, d))).astype(np.float32)
        self.ops = Operands(device, {"rec": token_records(range(n_tok), [0] * n_tok), "qkv": self.qkv,
                                     "gates": self.gates, "params": self.params, "state": self.state,
                                     "out": n_tok * h_v * d * 4})
        self.bytes_read = 2 * self.state.nbytes + self.qkv.nbytes   # state read and written once

    def recorder(self, op: GatedDeltaNet):
        """Records the step as the engine records a prompt chunk: in dispatches of at most
        op.max_tokens_per_dispatch tokens where the driver ends long loops (DeviceCaps.loop_iterations)."""
        o, n, hk_d, hv = self.ops, self.n_tok, self.h_k * self.d, self.h_v
        qkv, gates, params = o.view("qkv"), o.view("gates"), o.view("params")
        step = op.max_tokens_per_dispatch(self.device.caps.loop_iterations)

        def rows(view, first: int, stride: int, skip: int = 0):
            return view.sub(4 * (first * stride + skip), view.nbytes - 4 * (first * stride + skip))

        def record(rec, _: int) -> None:
            for f in range(0, n, step):
                m = min(step, n - f)
                op.record(rec, o.view("rec").sub(16 * f, 16 * m), m, rows(qkv, f, self.width),
                          rows(qkv, f, self.width, hk_d), rows(qkv, f, self.width, 2 * hk_d), self.width,
                          rows(gates, f, 2 * hv), rows(gates, f, 2 * hv, hv), 2 * hv, params.sub(0, hv * 4),
                          params.sub(hv * 4, hv * 4), o.view("state"), rows(o.view("out"), f, hv * self.d),
                          hv * self.d, self.h_k, hv, EPS)
        return record

    def check(self, op: GatedDeltaNet, atol: float = GDN_ATOL, rtol: float = GDN_RTOL,
              state_atol: float = 4 * GDN_ATOL) -> str | None:
        """op (GatedDeltaNet or ChunkedGatedDeltaNet, with its tolerance) against the recurrence oracle; the
        state is put back afterwards."""
        self.ops.upload("state", self.state)
        run_once(self.device, self.recorder(op))
        n, hk, hv, d = self.n_tok, self.h_k, self.h_v, self.d
        q = self.qkv[:, :hk * d].reshape(n, hk, d)
        k = self.qkv[:, hk * d: 2 * hk * d].reshape(n, hk, d)
        v = self.qkv[:, 2 * hk * d:].reshape(n, hv, d)
        want_out, want_state, _ = gated_delta_net(np.zeros(n, np.uint32), q, k, v, self.gates[:, :hv],
                                                  self.gates[:, hv:], self.params[:hv], self.params[hv:],
                                                  self.state, EPS)
        got_out = self.ops.read("out")[: n * hv * d].reshape(n, hv, d)
        got_state = self.ops.read("state")[: self.state.size].reshape(self.state.shape)
        self.ops.upload("state", self.state)
        return (compare("gdn out", got_out, want_out, atol, rtol)
                or compare("gdn state", got_state, want_state, state_atol, rtol))

    def destroy(self) -> None:
        self.ops.destroy()


class AttnCase:
    """Decode attention of n_tok consecutive tokens ending at position n_ctx - 1 over an f16 KV cache."""

    def __init__(self, device: Device, n_head: int, n_head_kv: int, head_dim: int, n_ctx: int, n_tok: int = 1,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.device, self.n_head, self.head_dim, self.n_tok = device, n_head, head_dim, n_tok
        self.layout = KvLayout("f16", n_head_kv, head_dim, n_ctx)
        self.records = token_records(range(n_ctx - n_tok, n_ctx), [0] * n_tok)
        self.qg = rng.standard_normal((n_tok, n_head, 2, head_dim)).astype(np.float32)   # q | gate per head
        width = n_head_kv * head_dim
        self.k_raw = encode_rows(rng.standard_normal((n_ctx, width)).astype(np.float32), "f16")
        self.v_raw = encode_rows(rng.standard_normal((n_ctx, width)).astype(np.float32), "f16")
        self.k = decode_rows(self.k_raw, "f16", width).reshape(n_ctx, n_head_kv, head_dim)
        self.v = decode_rows(self.v_raw, "f16", width).reshape(n_ctx, n_head_kv, head_dim)
        self.ops = Operands(device, {"rec": self.records, "qg": self.qg, "k": self.k_raw, "v": self.v_raw,
                                     "out": REPS_SLOTS * n_tok * n_head * head_dim * 4,
                                     "scratch": 64 * n_tok * n_head * (head_dim + 2) * 4})
        self.bytes_read = self.k_raw.nbytes + self.v_raw.nbytes

    def _out(self, slot: int) -> Strided:
        size = self.n_tok * self.n_head * self.head_dim * 4
        return Strided.heads(self.ops.view("out").sub(slot * size, size), self.n_head, self.head_dim)

    def recorder(self, fa: FlashAttn):
        h, d, qv = self.n_head, self.head_dim, self.ops.view("qg")
        q = Strided(qv, h * 2 * d, 2 * d)
        gate = Strided(qv.sub(d * 4, qv.nbytes - d * 4), h * 2 * d, 2 * d)
        scratch = self.ops.view("scratch")

        def record(rec, i: int) -> None:
            fa.record(rec, self.ops.view("rec"), q, self.ops.view("k"), self.ops.view("v"),
                      self._out(i % REPS_SLOTS), self.n_tok, scratch, gate=gate)
        return record

    def check(self, fa: FlashAttn) -> str | None:
        run_once(self.device, self.recorder(fa))
        got = self.device.read(self._out(0).view).reshape(self.n_tok, self.n_head, self.head_dim)
        want = flash_attn_ref(self.records, self.qg[:, :, 0], self.k, self.v, self.layout.n_ctx,
                              gate=self.qg[:, :, 1])
        atol, rtol = (ATTN_F16_ATOL, 0.0) if fa.f16_math else (ATTN_ATOL, ATTN_RTOL)
        return compare("flash_attn", got, want.astype(np.float64), atol, rtol)

    def destroy(self) -> None:
        self.ops.destroy()


class PrefillAttnCase:
    """Prefill attention of a first prompt chunk of n_tok tokens (positions 0..n_tok-1, causal) over an f16 KV
    cache: the engine's prompt-chunk attention (q_tile tokens per workgroup, one split). `check` compares the
    last n_check tokens (the longest rows) with the float64 reference: f32 math to ATTN_ATOL / ATTN_RTOL, f16
    math (FlashAttn.f16_math) to ATTN_F16_ATOL."""

    def __init__(self, device: Device, n_head: int, n_head_kv: int, head_dim: int, n_tok: int, seed: int = 0,
                 n_check: int = 8):
        rng = np.random.default_rng(seed)
        self.device, self.n_head, self.head_dim, self.n_tok = device, n_head, head_dim, n_tok
        self.layout = KvLayout("f16", n_head_kv, head_dim, n_tok)
        self.records = token_records(range(n_tok), [0] * n_tok)
        self.qg = rng.standard_normal((n_tok, n_head, 2, head_dim)).astype(np.float32)   # q | gate per head
        width = n_head_kv * head_dim
        self.k_raw = encode_rows(rng.standard_normal((n_tok, width)).astype(np.float32), "f16")
        self.v_raw = encode_rows(rng.standard_normal((n_tok, width)).astype(np.float32), "f16")
        # three buffers: at 27B shapes and 2048 tokens one would exceed maxStorageBufferRange (128 MiB on lavapipe)
        self.ops = Operands(device, {"rec": self.records, "qg": self.qg, "k": self.k_raw, "v": self.v_raw})
        self.out = Operands(device, {"out": n_tok * n_head * head_dim * 4}, "bench-out")
        self.scratch = Operands(device, {"scratch": n_tok * n_head * (head_dim + 2) * 4}, "bench-scratch")
        self.check_rows = slice(max(0, n_tok - n_check), n_tok)
        self.bytes_read = self.k_raw.nbytes + self.v_raw.nbytes

    def recorder(self, fa: FlashAttn):
        h, d, qv = self.n_head, self.head_dim, self.ops.view("qg")
        if fa.decode or fa.n_splits != 1:
            raise ValueError("PrefillAttnCase times the prefill kernel (q_tile > 1, one split)")
        q = Strided(qv, h * 2 * d, 2 * d)
        gate = Strided(qv.sub(d * 4, qv.nbytes - d * 4), h * 2 * d, 2 * d)
        out = Strided.heads(self.out.view("out"), h, d)

        def record(rec, i: int) -> None:
            fa.record(rec, self.ops.view("rec"), q, self.ops.view("k"), self.ops.view("v"), out, self.n_tok,
                      self.scratch.view("scratch"), gate=gate)
        return record

    def check(self, fa: FlashAttn) -> str | None:
        run_once(self.device, self.recorder(fa))
        got = self.out.read("out").reshape(self.n_tok, self.n_head, self.head_dim)
        sel, width = self.check_rows, self.layout.n_head_kv * self.head_dim
        k = decode_rows(self.k_raw, "f16", width).reshape(self.n_tok, -1, self.head_dim)
        v = decode_rows(self.v_raw, "f16", width).reshape(self.n_tok, -1, self.head_dim)
        want = flash_attn_ref(self.records[sel], self.qg[sel, :, 0], k, v, self.n_tok, gate=self.qg[sel, :, 1])
        atol, rtol = (ATTN_F16_ATOL, 0.0) if fa.f16_math else (ATTN_ATOL, ATTN_RTOL)
        return compare("flash_attn prefill", got[sel], want.astype(np.float64), atol, rtol)

    def destroy(self) -> None:
        for ops in (self.ops, self.out, self.scratch):
            ops.destroy()
