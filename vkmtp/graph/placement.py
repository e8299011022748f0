"""Where each weight lives on the device: raw GGUF blocks packed into a few large buffers.

Weights keep their quantized GGUF layout (no dequantized copies). Tensors are packed in file order into buffers
of at most `max_buffer_bytes` (the device's maxStorageBufferRange, capped at 1 GiB so the first upload starts
early); a tensor larger than that is split by rows into parts, and every kernel that reads weights takes a
list of parts. The plan is made before anything is allocated, so the memory check can run first; one plan per
device keeps the door open for layer split over several GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vkmtp.device import Device, View
from vkmtp.gguf import GGUFFile, row_bytes

ALIGN = 256


@dataclass(frozen=True)
class WeightPart:
    """Rows [row_start, row_start + n_rows) of a weight, stored contiguously at `view`."""

    view: View
    row_start: int
    n_rows: int


@dataclass
class WeightRef:
    """A weight on the device. shape is NumPy order: (rows, K) for a matrix, (n_expert, rows, K) for experts."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    parts: list[WeightPart] = field(default_factory=list)

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.ggml_type, self.shape[-1])

    @property
    def n_rows(self) -> int:
        n = 1
        for d in self.shape[:-1]:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.n_rows

    @property
    def single(self) -> View:
        """The weight's one view (kernels that cannot take parts, e.g. small norms and expert stacks)."""
        if len(self.parts) != 1:
            raise ValueError(f"weight {self.name} is split in {len(self.parts)} parts")
        return self.parts[0].view


@dataclass(frozen=True)
class _Slot:
    name: str
    buffer_index: int
    offset: int
    row_start: int
    n_rows: int


class WeightPlan:
    """Packing of named tensors into buffers; `bytes_total` is known before any allocation."""

    def __init__(self, gguf: GGUFFile, names: list[str], max_buffer_bytes: int):
        self.gguf = gguf
        self.names = list(names)
        self.max_buffer_bytes = max(ALIGN, max_buffer_bytes - max_buffer_bytes % ALIGN)
        self.buffer_sizes: list[int] = []
        self.slots: dict[str, list[_Slot]] = {}
        for name in self.names:
            info = gguf.tensors[name]
            rb = row_bytes(info.ggml_type, info.shape[-1])
            n_rows = info.n_elements // info.shape[-1]
            if rb > self.max_buffer_bytes:
                raise MemoryError(f"one row of {name} ({rb} B) exceeds the device's buffer limit")
            rows_per_part = self.max_buffer_bytes // rb
            if len(info.shape) == 3:  # expert stacks split only between experts
                group = info.shape[1]
                rows_per_part = max(group, rows_per_part // group * group)
                if group * rb > self.max_buffer_bytes:
                    raise MemoryError(f"one expert of {name} ({group * rb} B) exceeds the device's buffer limit")
            parts = []
            for row in range(0, n_rows, rows_per_part):
                n = min(rows_per_part, n_rows - row)
                start = -(-self.buffer_sizes[-1] // ALIGN) * ALIGN if self.buffer_sizes else 0
                if not self.buffer_sizes or start + n * rb > self.max_buffer_bytes:
                    self.buffer_sizes.append(0)
                    start = 0
                parts.append(_Slot(name, len(self.buffer_sizes) - 1, start, row, n))
                self.buffer_sizes[-1] = start + n * rb
            self.slots[name] = parts

    @property
    def bytes_total(self) -> int:
        return sum(self.buffer_sizes)

    def allocate(self, device: Device, progress=None) -> dict[str, WeightRef]:
        """Allocate the buffers and upload every tensor (from the memory-mapped file, no float copies)."""
        buffers = [device.buffer(size, "device", f"weights{i}", role="weights")
                   for i, size in enumerate(self.buffer_sizes)]
        refs: dict[str, WeightRef] = {}
        for name in self.names:
            info = self.gguf.tensors[name]
            rb = row_bytes(info.ggml_type, info.shape[-1])
            raw = self.gguf.raw(name)
            ref = WeightRef(name, info.ggml_type, info.shape)
            for slot in self.slots[name]:
                view = buffers[slot.buffer_index].view(slot.offset, slot.n_rows * rb)
                device.upload(view, raw[slot.row_start * rb: (slot.row_start + slot.n_rows) * rb])
                ref.parts.append(WeightPart(view, slot.row_start, slot.n_rows))
                if progress is not None:
                    progress(slot.n_rows * rb)
            refs[name] = ref
        self.buffers = buffers
        return refs
