"""Test support for op kernels: operands packed into one buffer with guard words, and comparisons.

Every operand is followed by GUARD_WORDS words of a known pattern; `check_guards` fails when a kernel wrote
past the end of an operand (llama.cpp's sentinel idea). `assert_close` checks shape, NaN/Inf and then the
tolerance, printing the worst element.
"""

from __future__ import annotations

import numpy as np

GUARD_WORDS = 16
GUARD = 0xA5A5A5A5
ALIGN = 256


class Packed:
    """Named operands in one device buffer: arrays are uploaded, sizes (int bytes) are filled with `fill`."""

    def __init__(self, device, operands: dict, name: str = "operands", fill: int = 0x7FC00000):
        self.device = device
        self.offsets: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        total = 0
        for key, spec in operands.items():
            nbytes = spec if isinstance(spec, int) else np.asarray(spec).nbytes
            nbytes = -(-max(nbytes, 4) // 4) * 4
            total = -(-total // ALIGN) * ALIGN
            self.offsets[key], self.sizes[key] = total, nbytes
            total += nbytes + GUARD_WORDS * 4
        self.buffer = device.buffer(total, "device", name)
        words = np.full(total // 4, GUARD, dtype=np.uint32)
        for key, spec in operands.items():
            start = self.offsets[key] // 4
            if isinstance(spec, int):
                words[start: start + self.sizes[key] // 4] = fill
            else:
                raw = np.ascontiguousarray(spec).tobytes().ljust(self.sizes[key], b"\0")
                raw = np.frombuffer(raw, np.uint32)
                words[start: start + raw.size] = raw
        device.upload(self.buffer.view(), words)

    def view(self, key: str):
        return self.buffer.view(self.offsets[key], self.sizes[key])

    def read(self, key: str, dtype=np.float32) -> np.ndarray:
        return self.device.read(self.view(key), dtype)

    def check_guards(self) -> None:
        words = self.device.read(self.buffer.view(), np.uint32)
        for key, off in self.offsets.items():
            start = (off + self.sizes[key]) // 4
            guard = words[start: start + GUARD_WORDS]
            bad = np.flatnonzero(guard != GUARD)
            assert bad.size == 0, f"kernel wrote past the end of '{key}' (guard words {bad.tolist()})"

    def destroy(self) -> None:
        self.buffer.destroy()


def assert_close(got: np.ndarray, want: np.ndarray, atol: float, rtol: float = 0.0, what: str = "") -> None:
    """Shapes equal, no NaN/Inf where the reference has none, |got - want| <= atol + rtol * |want|."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad_nonfinite = ~np.isfinite(got) & np.isfinite(want)
    assert not bad_nonfinite.any(), (f"{what}: {int(bad_nonfinite.sum())} NaN/Inf values where finite "
                                     f"expected, first at {np.argwhere(bad_nonfinite)[0].tolist()}")
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    limit = atol + rtol * np.abs(want.astype(np.float64))
    if not (err <= limit).all():
        worst = np.unravel_index(np.argmax(err - limit), err.shape)
        raise AssertionError(f"{what}: max error {err.max():.3g} (limit at worst {limit[worst]:.3g}) at "
                             f"{list(worst)}: got {got[worst]!r} want {want[worst]!r}; "
                             f"got[:4] {got.reshape(-1)[:4]} want[:4] {want.reshape(-1)[:4]}")


def token_records(pos, seq, token_id=None) -> np.ndarray:
    """[n_tok, 4] uint32 records {token_id, pos, seq, flags} (shaders/common/tokens.glsl)."""
    pos = np.asarray(pos, dtype=np.uint32)
    rec = np.zeros((pos.size, 4), dtype=np.uint32)
    rec[:, 0] = 0 if token_id is None else np.asarray(token_id, dtype=np.uint32)
    rec[:, 1] = pos
    rec[:, 2] = np.asarray(seq, dtype=np.uint32)
    return rec


def upload_parts(device, raw: np.ndarray, rows_per_part: int) -> list:
    """Cache rows `raw` [n_rows, row_bytes] as buffers of rows_per_part rows (the last one shorter)."""
    bufs = []
    for r0 in range(0, len(raw), rows_per_part):
        block = np.ascontiguousarray(raw[r0:r0 + rows_per_part])
        bufs.append(device.buffer(block.nbytes, "device", "kv_part"))
        device.upload(bufs[-1].view(), block.view(np.uint32))
    return bufs
