"""Helpers shared by the quantized-weight op tests: weights on the device, guarded outputs, comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from vkmtp.gguf import GGMLType
from vkmtp.ops.matvec import MatVecTuning
from vkmtp.ops.quant_types import to_device_layout
from vkmtp.ref.random_quant import random_rows

GUARD_WORDS = 16
GUARD = np.uint32(0x7FC0DEAD)  # a NaN pattern no kernel writes by accident

ALL_TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1,
             GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
             GGMLType.Q6_K, GGMLType.IQ4_NL, GGMLType.IQ4_XS]
TYPE_IDS = [t.name.lower() for t in ALL_TYPES]


def upload_rows(device, rows: np.ndarray, ggml_type: int, n_k: int, name: str = "weight", pad: int = 0):
    """Upload GGUF rows [n_rows, row_bytes] u8 of n_k values, in the device layout, into a fresh buffer (after
    `pad` bytes); returns (buffer, view)."""
    raw = to_device_layout(ggml_type, n_k, rows)
    buf = device.buffer(pad + raw.nbytes + 8, "device", name)
    view = buf.view(pad, -(-raw.nbytes // 4) * 4)
    device.upload(view, raw)
    return buf, view


def guarded_output(device, n_floats: int, fill: np.ndarray | None = None, name: str = "out"):
    """A buffer of n_floats (initialized to `fill` or zeros) followed by GUARD_WORDS guard words."""
    buf = device.buffer((n_floats + GUARD_WORDS) * 4, "device", name)
    init = np.zeros(n_floats + GUARD_WORDS, np.uint32)
    if fill is not None:
        init[:n_floats] = np.asarray(fill, np.float32).reshape(-1).view(np.uint32)
    init[n_floats:] = GUARD
    device.upload(buf.view(), init)
    return buf, buf.view(0, n_floats * 4)


def read_guarded(device, buf, n_floats: int) -> np.ndarray:
    words = device.read(buf.view(), np.uint32)
    assert np.all(words[n_floats:] == GUARD), "kernel wrote past the end of its output"
    return words[:n_floats].view(np.float32).copy()


def assert_close(got: np.ndarray, want: np.ndarray, tol: np.ndarray | float, what: str) -> None:
    """|got - want| <= tol elementwise, NaN/Inf checked first; prints the worst elements on failure."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values at {np.argwhere(~np.isfinite(got))[:5]}"
    err = np.abs(got.astype(np.float64) - want)
    bad = err > tol
    if bad.any():
        idx = np.argwhere(bad)[:5]
        worst = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {err.size} outside tolerance; max err {err.max():.3g} "
                             f"at {worst}; first bad {idx.tolist()}: got {got[bad][:5]} want {want[bad][:5]}")


def random_weight(ggml_type, n_rows: int, n_k: int, seed: int = 0) -> np.ndarray:
    return random_rows(ggml_type, n_rows, n_k, np.random.default_rng(seed))


class Workspace:
    """Buffers reused by every case of a test module, so cached pipelines (keyed by bound buffers) are reused:
    lavapipe compiles each new pipeline, which would dominate the test time."""

    def __init__(self, device, n_weight_buffers: int = 3):
        self.device = device
        self._sizes = {}
        self._bufs = {}
        self.n_weight_buffers = n_weight_buffers

    def _buffer(self, name: str, nbytes: int):
        buf = self._bufs.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.destroy()
            buf = self.device.buffer(max(nbytes, 1 << 20), "device", f"ws_{name}")
            self._bufs[name] = buf
        return buf

    def weight(self, rows: np.ndarray, ggml_type: int, n_k: int, parts=None):
        """GGUF rows [n_rows, row_bytes] u8 of n_k values (a row may hold several weight rows, e.g. an expert)
        -> a View in the device layout, or RowParts (one buffer each) for parts [(start, n)]."""
        from vkmtp.ops.quant_types import RowPart

        if parts is None:
            return self._upload_rows("weight0", rows, ggml_type, n_k)
        assert len(parts) <= self.n_weight_buffers
        return [RowPart(self._upload_rows(f"weight{i}", rows[s:s + n], ggml_type, n_k), s, n)
                for i, (s, n) in enumerate(parts)]

    def _upload_rows(self, name: str, rows: np.ndarray, ggml_type: int, n_k: int):
        raw = to_device_layout(ggml_type, n_k, rows)
        buf = self._buffer(name, raw.nbytes + 8)
        view = buf.view(0, -(-raw.nbytes // 4) * 4)
        self.device.upload(view, raw)
        return view

    def input(self, name: str, data: np.ndarray, pad_words: int = 0):
        """A View holding `data` (f32, or u32 for ids) after pad_words words."""
        data = np.ascontiguousarray(data)
        buf = self._buffer(name, (pad_words * 4) + data.nbytes)
        view = buf.view(pad_words * 4, data.nbytes)
        self.device.upload(view, data)
        return view

    def output(self, n_floats: int, fill: np.ndarray | None = None, name: str = "out"):
        """A View of n_floats (zeros or `fill`) followed by GUARD_WORDS guard words."""
        buf = self._buffer(name, (n_floats + GUARD_WORDS) * 4)
        init = np.zeros(n_floats + GUARD_WORDS, np.uint32)
        if fill is not None:
            init[:n_floats] = np.asarray(fill, np.float32).reshape(-1).view(np.uint32)
        init[n_floats:] = GUARD
        self.device.upload(buf.view(0, init.nbytes), init)
        return buf.view(0, n_floats * 4)

    def read_output(self, n_floats: int, name: str = "out") -> np.ndarray:
        words = self.device.read(self._bufs[name].view(0, (n_floats + GUARD_WORDS) * 4), np.uint32)
        assert np.all(words[n_floats:] == GUARD), "kernel wrote past the end of its output"
        return words[:n_floats].view(np.float32).copy()

    def run(self, record) -> None:
        """Record with `record(rec)`, submit, wait."""
        rec = self.device.recorder()
        record(rec)
        rec.finish()
        rec.run()
        rec.destroy()

    def destroy(self) -> None:
        for buf in self._bufs.values():
            buf.destroy()
        self._bufs.clear()


def tuning_for(device, variant: str, rows: int = 3) -> MatVecTuning:
    """A mat-vec workgroup shape for a test: the device's own ("default"), a subgroup reduction over at least 32
    threads ("subgroup"; skipped without subgroup arithmetic) or a 32-thread shared-memory reduction ("shared"),
    `rows` rows per workgroup."""
    if variant == "default":       # the device's own (CPU drivers: one subgroup x 16 rows)
        return device.caps.matvec
    if variant == "subgroup":
        if not device.info.has_subgroup_arithmetic:
            pytest.skip("device has no subgroup arithmetic")
        return MatVecTuning(max(32, device.info.subgroup_size), rows, True)
    return MatVecTuning(32, rows, False)
