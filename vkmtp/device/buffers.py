"""Device memory: buffers (one kp.Tensor each) and typed views into them.

Many small tensors share one buffer (an arena) and are addressed by word offsets passed as push constants,
so one pipeline serves every layer whose shapes match: few Vulkan allocations (`maxMemoryAllocationCount`),
few pipelines, and one place to plan memory. A `View` is (buffer, byte offset, byte size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORD = 4


class Buffer:
    """A storage buffer. kind: 'device' (device-local, not mapped), 'host' (host-visible, coherent, mapped);
    role and memory_type: the buffer role and the memory type index it was allocated from (Device.buffer)."""

    def __init__(self, device, tensor, nbytes: int, kind: str, name: str):
        self._device = device
        self.tensor = tensor
        self.nbytes = nbytes
        self.kind = kind
        self.name = name
        self.role = ""
        self.memory_type = -1

    @property
    def n_words(self) -> int:
        return self.nbytes // WORD

    @property
    def mapped(self) -> bool:
        return self.kind == "host"

    def words(self) -> np.ndarray:
        """The mapped memory as a uint32 array (host buffers only; no copy)."""
        if not self.mapped:
            raise TypeError(f"buffer '{self.name}' is device-local; use Device.download()")
        return self.tensor.data()

    def view(self, offset: int = 0, nbytes: int | None = None) -> "View":
        nbytes = self.nbytes - offset if nbytes is None else nbytes
        return View(self, offset, nbytes)

    def destroy(self) -> None:
        if self.tensor is not None:
            self._device._release(self)
            self.tensor.destroy()
            self.tensor = None

    def __repr__(self) -> str:
        return f"Buffer({self.name!r}, {self.nbytes} B, {self.kind})"


@dataclass(frozen=True)
class View:
    """A byte range of a buffer; offsets are multiples of 4 (shaders index uint/float words)."""

    buffer: Buffer
    offset: int
    nbytes: int

    def __post_init__(self):
        if self.offset % WORD or self.offset < 0 or self.offset + self.nbytes > self.buffer.nbytes:
            raise ValueError(f"view [{self.offset}, +{self.nbytes}) does not fit {self.buffer!r} word-aligned")

    @property
    def word_offset(self) -> int:
        return self.offset // WORD

    @property
    def n_words(self) -> int:
        return (self.nbytes + WORD - 1) // WORD

    def sub(self, offset: int, nbytes: int) -> "View":
        if offset + nbytes > self.nbytes:
            raise ValueError("sub-view outside its view")
        return View(self.buffer, self.offset + offset, nbytes)

    def array(self, dtype=np.float32) -> np.ndarray:
        """Mapped memory of a host view as `dtype` (no copy)."""
        words = self.buffer.words()[self.word_offset: self.word_offset + self.n_words]
        return words.view(dtype)[: self.nbytes // np.dtype(dtype).itemsize]

    def overlaps(self, other: "View") -> bool:
        return (self.buffer is other.buffer and self.offset < other.offset + other.nbytes
                and other.offset < self.offset + self.nbytes)


@dataclass(frozen=True)
class ColumnsView(View):
    """The same columns of every row of a row-major matrix: bytes [offset + r * stride, + width) for the rows the
    view spans. Two such views of one matrix whose columns do not meet do not overlap, so the recorder puts no
    barrier between a dispatch that writes q and one that reads k of a fused q | k | v projection."""

    stride: int = 0   # bytes between rows
    width: int = 0    # bytes used in each row

    def sub(self, offset: int, nbytes: int) -> View:
        """A range starting at a row start keeps the columns (a subset of the rows); any other is a plain View."""
        v = View.sub(self, offset, nbytes)
        if self.stride and offset % self.stride == 0:
            return ColumnsView(v.buffer, v.offset, v.nbytes, self.stride, self.width)
        return v

    def overlaps(self, other: View) -> bool:
        if isinstance(other, ColumnsView) and other.buffer is self.buffer and other.stride == self.stride \
                and 0 < self.width <= self.stride and 0 < other.width <= self.stride:
            d = (other.offset - self.offset) % self.stride   # other's first column, relative to ours
            if self.width <= d and d + other.width <= self.stride:
                return False
        return View.overlaps(self, other)


class Arena:
    """Bump allocator handing out aligned views of one buffer (activations, weights of a group, states)."""

    def __init__(self, buffer: Buffer, alignment: int = 256):
        self.buffer = buffer
        self.alignment = alignment
        self.used = 0

    def take(self, nbytes: int, name: str = "") -> View:
        start = -(-self.used // self.alignment) * self.alignment
        if start + nbytes > self.buffer.nbytes:
            raise MemoryError(f"arena {self.buffer.name!r} full: {name or 'view'} needs {nbytes} B at {start}, "
                              f"capacity {self.buffer.nbytes} B")
        self.used = start + nbytes
        return View(self.buffer, start, max(nbytes, 0))

    @staticmethod
    def size_for(sizes: list[int], alignment: int = 256) -> int:
        total = 0
        for n in sizes:
            total = -(-total // alignment) * alignment + n
        return max(total, WORD)
