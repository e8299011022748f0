"""Where each weight lives: raw GGUF blocks packed into a few large buffers, in device or host memory.

Weights keep their quantized GGUF rows (no dequantized copies; Q8_0 / Q4_0 / IQ4_NL rows are repacked into
the device layout of vkmtp.ops.quant_types.to_device_layout as they are uploaded, the same bytes per row).
Tensors are packed in file order into buffers of at most `max_buffer_bytes` (the device's
maxStorageBufferRange, capped at 1 GiB so the first upload starts early); a tensor larger than that is split by
rows into parts, and every kernel that reads weights takes a list of parts. Projections that read the same input with the same quant type (vkmtp.model.weights.fused_groups)
are stored as one tensor, their rows one after another, so one mat-vec covers them; each member keeps its own
WeightRef (a row range of the group's). Each tensor has a location (vkmtp.graph.tensor_overrides): "device"
tensors go to `weights{i}` buffers in device-local memory, "host" tensors (routed experts under --cpu-moe,
--n-cpu-moe, -ot exps=CPU) to `host_weights{i}` buffers in the host memory the device reads directly; kernels
bind either alike. The plan is made before anything is allocated, so the memory check can run first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vkmtp.device import Device, View
from vkmtp.gguf import GGUFFile, row_bytes
from vkmtp.graph.tensor_overrides import DEVICE, LOCATIONS
from vkmtp.ops.quant_types import upload_weight

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


def fused_name(members) -> str:
    """The name of a concatenated weight: its members' names joined by '+'."""
    return "+".join(members)


class WeightPlan:
    """Packing of named tensors into buffers; `bytes_total` is known before any allocation.

    `fused`: groups of tensor names (same type, same row length) stored as one tensor of concatenated rows,
    under `fused_name(group)`, placed where the group's first member would be.
    `locations`: tensor name -> "device" | "host" (missing: "device"); each location packs its own buffers."""

    def __init__(self, gguf: GGUFFile, names: list[str], max_buffer_bytes: int,
                 fused: list[tuple[str, ...]] = (), locations: dict[str, str] | None = None):
        self.gguf = gguf
        self.names = list(names)
        self.max_buffer_bytes = max(ALIGN, max_buffer_bytes - max_buffer_bytes % ALIGN)
        self.buffer_sizes: list[int] = []
        self.buffer_locations: list[str] = []
        self.locations: dict[str, str] = {}
        locations = locations or {}
        self.slots: dict[str, list[_Slot]] = {}
        # placed items: a plain tensor is a group of one
        self.members: dict[str, tuple[str, ...]] = {}
        in_group = {}
        for group in fused:
            infos = [gguf.tensors[m] for m in group]
            if len(group) < 2 or len({(i.ggml_type, i.shape[-1]) for i in infos}) != 1 \
                    or any(len(i.shape) > 2 for i in infos):
                raise ValueError(f"cannot fuse {list(group)}: members need one type and one row length")
            for m in group:
                in_group[m] = group
        for name in self.names:
            group = in_group.get(name, (name,))
            if group[0] == name:
                self.members[fused_name(group)] = group
        last: dict[str, int] = {}   # location -> index of its buffer being filled
        for item, group in self.members.items():
            where = {locations.get(m, DEVICE) for m in group}
            if len(where) != 1 or not where <= set(LOCATIONS):
                raise ValueError(f"{item}: members of one stored tensor need one location, got {sorted(where)}")
            loc = where.pop()
            for m in group:
                self.locations[m] = loc
            self.locations[item] = loc
            info = gguf.tensors[group[0]]
            rb = row_bytes(info.ggml_type, info.shape[-1])
            n_rows = sum(gguf.tensors[m].n_elements // info.shape[-1] for m in group)
            name = item
            if rb > self.max_buffer_bytes:
                raise MemoryError(f"one row of {name} ({rb} B) exceeds the device's buffer limit")
            rows_per_part = self.max_buffer_bytes // rb
            if len(info.shape) == 3:  # expert stacks split only between experts
                per_expert = info.shape[1]
                rows_per_part = max(per_expert, rows_per_part // per_expert * per_expert)
                if per_expert * rb > self.max_buffer_bytes:
                    raise MemoryError(f"one expert of {name} ({per_expert * rb} B) exceeds the device's buffer limit")
            parts = []
            for row in range(0, n_rows, rows_per_part):
                n = min(rows_per_part, n_rows - row)
                b = last.get(loc)
                start = -(-self.buffer_sizes[b] // ALIGN) * ALIGN if b is not None else 0
                if b is None or start + n * rb > self.max_buffer_bytes:
                    self.buffer_sizes.append(0)
                    self.buffer_locations.append(loc)
                    b = last[loc] = len(self.buffer_sizes) - 1
                    start = 0
                parts.append(_Slot(name, b, start, row, n))
                self.buffer_sizes[b] = start + n * rb
            self.slots[name] = parts
        self.buffer_names = []
        count = dict.fromkeys(LOCATIONS, 0)
        for loc in self.buffer_locations:
            self.buffer_names.append(f"{'weights' if loc == DEVICE else 'host_weights'}{count[loc]}")
            count[loc] += 1

    @property
    def bytes_total(self) -> int:
        return sum(self.buffer_sizes)

    def bytes_at(self, location: str) -> int:
        """Bytes of the buffers in one location ("device" or "host")."""
        return sum(n for n, loc in zip(self.buffer_sizes, self.buffer_locations) if loc == location)

    def planned(self) -> list[tuple[str, str, int]]:
        """(buffer name, location, bytes) of every weight buffer, in allocation order."""
        return list(zip(self.buffer_names, self.buffer_locations, self.buffer_sizes))

    def allocate(self, device: Device, progress=None) -> dict[str, WeightRef]:
        """Allocate the buffers and upload every tensor (from the memory-mapped file, no float copies; the
        split-layout types are repacked a chunk of rows at a time).
        Returns a WeightRef per tensor name, and per fused group (its name from `fused_name`)."""
        buffers = [device.buffer(size, "device", name, role="weights") if loc == DEVICE
                   else device.buffer(size, "host", name, role="host_weights")
                   for name, loc, size in self.planned()]
        refs: dict[str, WeightRef] = {}
        for item, group in self.members.items():
            info = self.gguf.tensors[group[0]]
            k = info.shape[-1]
            rb = row_bytes(info.ggml_type, k)
            member_rows = [(m, self.gguf.tensors[m].n_elements // k) for m in group]
            total = sum(n for _, n in member_rows)
            ref = WeightRef(item, info.ggml_type, info.shape if len(group) == 1 else (total, k))
            for slot in self.slots[item]:
                view = buffers[slot.buffer_index].view(slot.offset, slot.n_rows * rb)
                ref.parts.append(WeightPart(view, slot.row_start, slot.n_rows))
            first = 0
            for m, n in member_rows:   # each member's rows go where the group's rows first..first+n-1 are
                raw = self.gguf.raw(m)
                mref = WeightRef(m, info.ggml_type, self.gguf.tensors[m].shape)
                for part in ref.parts:
                    lo, hi = max(first, part.row_start), min(first + n, part.row_start + part.n_rows)
                    if lo >= hi:
                        continue
                    view = part.view.sub((lo - part.row_start) * rb, (hi - lo) * rb)
                    upload_weight(device, view, info.ggml_type, k, raw[(lo - first) * rb: (hi - first) * rb])
                    mref.parts.append(WeightPart(view, lo - first, hi - lo))
                    if progress is not None:
                        progress((hi - lo) * rb)
                refs[m] = mref
                first += n
            refs[item] = ref
        self.buffers = buffers
        return refs
