"""shaders/matmul.comp (vkmtp.ops.matmul.MatMul) against the float64 NumPy reference of the dequantized weight.

Error measure: |gpu - ref| / (|W| |X|^T) per output, i.e. relative to the magnitude of the terms summed, which
bounds f32 accumulation error (~K * 2^-24 at worst) without blowing up on outputs that cancel to ~0.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from vkmtp.gguf import GGMLType as T
from vkmtp.gguf import block_size, row_bytes
from vkmtp.ops.matmul import CPU_TILES, GPU_TILES, SUPPORTED_TYPES, MatMul, usable_tiles
from vkmtp.ref.ops.matmul import dequantize_weight
from vkmtp.ref.ops.matmul import matmul as matmul_ref
from vkmtp.ref.quant_samples import random_weight

GUARD_WORDS = 16
GUARD = np.uint32(0xDEADBEEF)
# Relative tolerance per weight type (error / sum |w x|): dequantization is exact f32 either way, what is left
# is the f32 accumulation order.
TOLERANCE = {t: 1e-5 for t in SUPPORTED_TYPES}


def check_close(got: np.ndarray, ref: np.ndarray, scale: np.ndarray, tol: float, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    bad = ~np.isfinite(got)
    assert not bad.any(), f"{what}: {bad.sum()} non-finite outputs, first at {np.argwhere(bad)[0]}"
    err = np.abs(got - ref) / np.maximum(scale, 1e-30)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= tol, (f"{what}: max rel err {err.max():.3g} > {tol:g} at {worst}: got {got[worst]!r} "
                              f"ref {ref[worst]!r}; first outputs {got.reshape(-1)[:4]} vs {ref.reshape(-1)[:4]}")


class Case:
    """Weight, activations and output on the device, at odd word offsets, with guard words after y."""

    def __init__(self, device, ggml_type, n_rows, k, n_tok, seed=0, parts=1):
        rng = np.random.default_rng(seed)
        self.device, self.t, self.n_rows, self.k, self.n_tok = device, ggml_type, n_rows, k, n_tok
        self.w = random_weight(rng, ggml_type, n_rows, k)
        self.x = rng.standard_normal((n_tok, k)).astype(np.float32)        # [n_tok, k] f32
        self.y0 = rng.standard_normal((n_tok, n_rows)).astype(np.float32)  # [n_tok, n_rows] f32
        rb = row_bytes(ggml_type, k)
        cuts = np.linspace(0, n_rows, parts + 1).astype(int)
        self.w_parts = [self.w[a * rb: b * rb] for a, b in zip(cuts[:-1], cuts[1:])]
        self.w_bufs, self.w_views = [], []
        for i, raw in enumerate(self.w_parts):
            buf = device.buffer(raw.nbytes + 12 + 4, "device", f"w{i}")
            self.w_bufs.append(buf)
            self.w_views.append(buf.view(12, raw.nbytes))                   # odd word offset
            device.upload(self.w_views[-1], raw)
        xy = device.buffer((1 + self.x.size + 3 + self.y0.size + GUARD_WORDS) * 4, "device", "xy")
        self.xy = xy
        self.x_view = xy.view(4, self.x.nbytes)
        self.y_view = xy.view(4 + self.x.nbytes + 12, self.y0.nbytes)
        self.guard_view = xy.view(self.y_view.offset + self.y0.nbytes, GUARD_WORDS * 4)
        device.upload(self.x_view, self.x)
        self.reset_y()

    def reset_y(self):
        self.device.upload(self.y_view, self.y0)
        self.device.upload(self.guard_view, np.full(GUARD_WORDS, GUARD, np.uint32))

    def run(self, mm: MatMul, accumulate=False, tile=None, n_tok=None) -> np.ndarray:
        n_tok = n_tok or self.n_tok
        rec = self.device.recorder()
        weight = self.w_views[0] if len(self.w_views) == 1 else self.w_views
        mm.record(rec, weight, self.t, self.n_rows, self.k, self.x_view, self.y_view, n_tok,
                  accumulate=accumulate, tile=tile)
        rec.finish()
        rec.run()
        rec.destroy()
        guard = self.device.read(self.guard_view, np.uint32)
        assert (guard == GUARD).all(), "matmul wrote past the end of y"
        return self.device.read(self.y_view).reshape(self.n_tok, self.n_rows)

    def reference(self, accumulate=False):
        ref = matmul_ref(self.w_parts, self.t, self.n_rows, self.k, self.x, self.y0, self.n_tok, accumulate)
        w = np.abs(dequantize_weight(self.w, self.t, self.n_rows, self.k).astype(np.float64))
        scale = np.abs(self.x.astype(np.float64)) @ w.T + (np.abs(self.y0) if accumulate else 0.0)
        return ref, scale

    def destroy(self):
        for buf in self.w_bufs:
            buf.destroy()
        self.xy.destroy()


@pytest.fixture(scope="module")
def mm(device):
    return MatMul(device)


def run_and_check(device, mm, ggml_type, n_rows, k, n_tok, accumulate=False, parts=1, tile=None, seed=0):
    case = Case(device, ggml_type, n_rows, k, n_tok, seed=seed, parts=parts)
    try:
        got = case.run(mm, accumulate=accumulate, tile=tile)
        ref, scale = case.reference(accumulate)
        check_close(got, ref, scale, TOLERANCE[ggml_type],
                    f"{T(ggml_type).name} M={n_rows} K={k} N={n_tok} acc={accumulate} parts={parts}")
        return got
    finally:
        case.destroy()


def _shape_k(ggml_type, k):
    """k rounded up to a whole number of blocks of the type."""
    elems = block_size(ggml_type)[0]
    return -(-k // elems) * elems


FAST_SHAPES = [(1, 4, 1), (37, 67, 5), (64, 128, 16), (100, 96, 33)]


@pytest.mark.lanes
@pytest.mark.parametrize("ggml_type", SUPPORTED_TYPES, ids=lambda t: T(t).name.lower())
@pytest.mark.parametrize("n_rows,k,n_tok", FAST_SHAPES)
def test_matmul_matches_reference(device, mm, ggml_type, n_rows, k, n_tok):
    run_and_check(device, mm, ggml_type, n_rows, _shape_k(ggml_type, k), n_tok)


@pytest.mark.parametrize("ggml_type", SUPPORTED_TYPES, ids=lambda t: T(t).name.lower())
@pytest.mark.parametrize("n_rows,k,n_tok", [(129, 260, 300), (200, 33, 130), (17, 512, 64)])
def test_matmul_matches_reference_edges(device, mm, ggml_type, n_rows, k, n_tok):
    run_and_check(device, mm, ggml_type, n_rows, _shape_k(ggml_type, k), n_tok)


@pytest.mark.lanes
@pytest.mark.parametrize("ggml_type", [T.F32, T.F16], ids=["f32", "f16"])
def test_matmul_accumulates_into_y(device, mm, ggml_type):
    run_and_check(device, mm, ggml_type, 70, 96, 19, accumulate=True)


@pytest.mark.parametrize("tile", GPU_TILES + CPU_TILES, ids=lambda t: t.name)
def test_every_tile_gives_the_same_bits(device, mm, tile):
    """Each output is one fma chain over k in order, so the tile shape changes no bit (GPU and CPU tables)."""
    case = Case(device, T.F16, 150, 80, 70, seed=3)
    try:
        if tile not in usable_tiles(device.info, [tile]):
            pytest.skip(f"{tile} does not fit this device")
        got = case.run(mm, tile=tile)
        base = case.run(mm, tile=GPU_TILES[-1])
        ref, scale = case.reference()
        check_close(got, ref, scale, TOLERANCE[T.F16], f"tile {tile}")
        np.testing.assert_array_equal(got, base)
    finally:
        case.destroy()


@pytest.mark.lanes
def test_token_alone_equals_token_in_batch(device, mm):
    """Batch invariance: each token's outputs are bit-identical computed alone, in 8 or in 300 tokens."""
    n_tok = 300
    case = Case(device, T.BF16, 45, 72, n_tok, seed=5)
    try:
        batch = case.run(mm)
        for n in (8, 1):
            got = case.run(mm, n_tok=n)[:n]
            np.testing.assert_array_equal(got, batch[:n], err_msg=f"first {n} tokens differ from the batch")
    finally:
        case.destroy()


@pytest.mark.parametrize("parts", [2, 3])
def test_weight_split_into_row_parts(device, mm, parts):
    got = run_and_check(device, mm, T.F16, 90, 64, 40, parts=parts)
    whole = run_and_check(device, mm, T.F16, 90, 64, 40, parts=1)
    np.testing.assert_array_equal(got, whole)


def test_bad_arguments_are_refused_clearly(device, mm):
    case = Case(device, T.F32, 8, 16, 4)
    rec = device.recorder()
    try:
        with pytest.raises(ValueError, match="not supported"):
            mm.record(rec, case.w_views[0], 999, 8, 16, case.x_view, case.y_view, 4)
        with pytest.raises(ValueError, match="x holds"):
            mm.record(rec, case.w_views[0], T.F32, 8, 16, case.x_view, case.y_view, 5)
        with pytest.raises(ValueError, match="y holds"):
            mm.record(rec, case.w_views[0], T.F32, 9, 16, case.x_view, case.y_view, 4)
        with pytest.raises(ValueError, match="does not hold"):
            mm.record(rec, case.w_views[0].sub(0, 32), T.F32, 8, 16, case.x_view, case.y_view, 1)
        with pytest.raises(ValueError, match="empty product"):
            mm.record(rec, case.w_views[0], T.F32, 8, 16, case.x_view, case.y_view, 0)
    finally:
        rec.destroy()
        case.destroy()


@pytest.mark.slow
@pytest.mark.parametrize("ggml_type", [T.F16], ids=["f16"])
def test_real_size_prefill_chunk(device, mm, ggml_type):
    """512 tokens x 5120 -> 1024 (Qwen3.6-27B E=5120, a 1024-row projection)."""
    start = time.perf_counter()
    run_and_check(device, mm, ggml_type, 1024, 5120, 512)
    print(f"512 x 5120 -> 1024 {T(ggml_type).name}: {time.perf_counter() - start:.1f} s with reference")
