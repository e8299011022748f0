"""Test helper: operands packed into one device buffer, each followed by guard words that must stay intact."""

from __future__ import annotations

import numpy as np

from vkmtp.device import Arena, Device, View

GUARD_WORDS = 16
GUARD_PATTERN = np.uint32(0x7FC0DEAD)   # a NaN payload no kernel writes


def token_records(seqs, positions=None) -> np.ndarray:
    """Per-token records {token_id, pos, seq, flags} for a step. [n_tok, 4] uint32."""
    seqs = np.asarray(seqs, np.uint32)
    recs = np.zeros((len(seqs), 4), np.uint32)
    recs[:, 0] = np.arange(len(seqs)) + 100
    recs[:, 1] = np.arange(len(seqs)) if positions is None else positions
    recs[:, 2] = seqs
    recs[:, 3] = 1
    return recs


class Workspace:
    """A bump-allocated device buffer; `put` uploads an array, `read` downloads it, `check_guards` asserts
    that no kernel wrote past any operand."""

    def __init__(self, device: Device, nbytes: int, name: str = "workspace"):
        self.device = device
        self.buffer = device.buffer(nbytes, "device", name)
        self.arena = Arena(self.buffer, alignment=64)
        self._guards: list[tuple[str, View]] = []
        self.views: dict[str, View] = {}

    def put(self, name: str, array: np.ndarray) -> View:
        array = np.ascontiguousarray(array)
        if array.dtype.itemsize != 4:
            raise TypeError(f"{name}: workspace holds 32-bit words, got {array.dtype}")
        body = self.arena.take(array.nbytes + GUARD_WORDS * 4, name)
        words = np.concatenate([array.reshape(-1).view(np.uint32), np.full(GUARD_WORDS, GUARD_PATTERN)])
        self.device.upload(body, words)
        view = body.sub(0, array.nbytes)
        self._guards.append((name, body.sub(array.nbytes, GUARD_WORDS * 4)))
        self.views[name] = view
        return view

    def read(self, name: str, shape, dtype=np.float32) -> np.ndarray:
        return self.device.read(self.views[name], dtype).reshape(shape)

    def check_guards(self) -> None:
        for name, guard in self._guards:
            got = self.device.read(guard, np.uint32)
            bad = np.nonzero(got != GUARD_PATTERN)[0]
            assert bad.size == 0, f"guard words after '{name}' overwritten at {bad.tolist()}"

    def destroy(self) -> None:
        self.buffer.destroy()

    @staticmethod
    def size_for(*arrays: np.ndarray) -> int:
        return Arena.size_for([a.nbytes + GUARD_WORDS * 4 for a in arrays], 64) + 64


def report(name: str, got: np.ndarray, want: np.ndarray) -> str:
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    i = int(np.argmax(err))
    return (f"{name}: max abs err {err.max():.3e} at flat {i} (got {got.reshape(-1)[i]!r}, want "
            f"{want.reshape(-1)[i]!r}); first got {got.reshape(-1)[:4]}, want {want.reshape(-1)[:4]}")


def assert_close(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{name}: NaN/Inf in the result"
    ok = np.abs(got.astype(np.float64) - want) <= atol + rtol * np.abs(want)
    assert ok.all(), report(name, got, want)
