"""Which Vulkan memory type each buffer role lives in, chosen from the device's memory types and heaps.

Kompute would allocate a host tensor from the first HOST_VISIBLE|HOST_COHERENT type, which on a discrete GPU is
system RAM (read by the GPU over PCIe), and a storage tensor from the first DEVICE_LOCAL type. vkmtp instead
chooses, once per device, a type for every buffer role and allocates from that index (kp.set_memory_type):

- discrete GPU: weights, KV/recurrent state and scratch in device-local memory that the host does not map,
  filled through the staging buffer; step inputs (small, host-written every step) in the BAR type
  (DEVICE_LOCAL|HOST_VISIBLE) when there is one, else in host memory; outputs the host reads and the staging
  buffer in host-cached memory; host-resident weights (weights left in system RAM, read by the GPU directly) in
  host-visible memory that is not device-local.
- UMA (integrated GPU or CPU device): every role in a host-visible coherent type -- the device-local one where
  there is one -- mapped, nothing staged; outputs prefer a host-cached type; host-resident weights go to a heap
  that is not device-local where there is one (an AMD APU's GTT heap, outside the carve-out).

Types the driver marks lazily-allocated, protected or AMD device-coherent/uncached are never chosen (they need
features vkmtp does not enable). A mapped role always gets a HOST_COHERENT type: Kompute maps memory
persistently and never flushes or invalidates. Docs: docs/DESIGN.md, "Memory types".
"""

from __future__ import annotations

from dataclasses import dataclass

# Buffer roles, in the order `vkmtp devices` / `vkmtp info` print them.
ROLES = ("weights", "state", "scratch", "step_inputs", "outputs", "staging", "host_weights")
ROLE_TITLES = {
    "weights": "weights",
    "state": "KV + recurrent state",
    "scratch": "scratch",
    "step_inputs": "step inputs (host writes)",
    "outputs": "outputs (host reads)",
    "staging": "staging",
    "host_weights": "host-resident weights",
}
# Roles whose bytes live on the host side of the accounting (Device.allocated['host']).
HOST_ROLES = frozenset({"step_inputs", "outputs", "staging", "host_weights"})

# VkMemoryPropertyFlagBits, by the names vulkaninfo prints (MEMORY_PROPERTY_<NAME>_BIT).
PROPERTY_BITS = {
    "DEVICE_LOCAL": 0x1, "HOST_VISIBLE": 0x2, "HOST_COHERENT": 0x4, "HOST_CACHED": 0x8,
    "LAZILY_ALLOCATED": 0x10, "PROTECTED": 0x20, "DEVICE_COHERENT_AMD": 0x40, "DEVICE_UNCACHED_AMD": 0x80,
    "RDMA_CAPABLE_NV": 0x100,
}


def flags_from_names(names) -> int:
    """VkMemoryPropertyFlags from vulkaninfo's names (MEMORY_PROPERTY_DEVICE_COHERENT_BIT_AMD, ...)."""
    out = 0
    for n in names:
        key = n.removeprefix("MEMORY_PROPERTY_").replace("_BIT", "")
        if key not in PROPERTY_BITS:
            raise ValueError(f"unknown memory property flag {n!r}")
        out |= PROPERTY_BITS[key]
    return out


_UNUSABLE = 0x10 | 0x20 | 0x40 | 0x80
DEVICE_LOCAL, HOST_VISIBLE, HOST_COHERENT, HOST_CACHED = 0x1, 0x2, 0x4, 0x8
_MAPPED = HOST_VISIBLE | HOST_COHERENT


@dataclass(frozen=True)
class MemoryType:
    heap: int
    flags: int        # VkMemoryPropertyFlags

    def has(self, bits: int) -> bool:
        return self.flags & bits == bits

    @property
    def usable(self) -> bool:
        return not self.flags & _UNUSABLE

    def describe(self) -> str:
        names = [n for n, b in PROPERTY_BITS.items() if self.flags & b]
        return "|".join(names) or "none"


@dataclass(frozen=True)
class HeapSize:
    size: int
    device_local: bool


@dataclass(frozen=True)
class Placement:
    """Where one role's buffers go: memory type and heap, mapped by the host or filled through staging."""

    role: str
    type_index: int
    heap_index: int
    flags: int
    mapped: bool      # host-visible and coherent: the host reads and writes it directly
    staged: bool      # device-local and not mapped: filled and read back through the staging buffer

    def describe(self, heaps) -> str:
        heap = heaps[self.heap_index]
        where = "device-local" if heap.device_local else "host"
        how = "staged" if self.staged else "mapped"
        return (f"type {self.type_index} ({MemoryType(self.heap_index, self.flags).describe()}), heap "
                f"{self.heap_index} ({where}, {heap.size / 2**30:.1f} GiB), {how}")


@dataclass(frozen=True)
class MemoryChoice:
    uma: bool
    placements: dict

    def __getitem__(self, role: str) -> Placement:
        return self.placements[role]


class NoMemoryTypeError(RuntimeError):
    """The device exposes no memory type a role can use."""


def is_uma(kind: str, heaps, types) -> bool:
    """Unified memory: an integrated GPU or a CPU device; for other non-discrete kinds, one device-local heap that
    the host can map (all memory is host memory). A discrete GPU is never UMA, whatever BAR types it exposes."""
    if kind in ("integrated", "cpu"):
        return True
    if kind == "discrete":
        return False
    return (len(heaps) == 1 and heaps[0].device_local
            and any(t.heap == 0 and t.has(DEVICE_LOCAL | _MAPPED) for t in types))


def _pick(types, heaps, want: int, avoid: int = 0, prefer: tuple = (), shun: int = 0):
    """Index of the usable type with all `want` bits and none of `avoid`; ties: the `prefer` bits in priority
    order, fewest `shun` bits, the largest heap, fewest flags, lowest index. None when nothing qualifies."""
    best, best_key = None, None
    for i, t in enumerate(types):
        if not t.usable or not t.has(want) or t.flags & avoid:
            continue
        key = (tuple(0 if t.flags & b else 1 for b in prefer), bin(t.flags & shun).count("1"),
               -heaps[t.heap].size, bin(t.flags).count("1"), i)
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def choose(kind: str, heaps, types) -> MemoryChoice:
    """The memory type of every role (ROLES) for a device of this kind with these heaps and types."""
    heaps, types = tuple(heaps), tuple(types)
    uma = is_uma(kind, heaps, types)
    picks: dict[str, int | None] = {}
    if uma:
        local = _pick(types, heaps, _MAPPED, prefer=(DEVICE_LOCAL,), shun=HOST_CACHED)
        readback = _pick(types, heaps, _MAPPED, prefer=(HOST_CACHED, DEVICE_LOCAL))
        # weights placed in host memory: a heap that is not the device-local one where the driver has it (the
        # GTT heap of an AMD APU, outside the carve-out the device budget counts), else the one memory there is
        system = _pick(types, heaps, _MAPPED, avoid=DEVICE_LOCAL, shun=HOST_CACHED)
        for role in ROLES:
            picks[role] = readback if role in ("outputs", "staging") else local
        picks["host_weights"] = local if system is None else system
    else:
        vram = _pick(types, heaps, DEVICE_LOCAL, shun=HOST_VISIBLE)
        bar = _pick(types, heaps, DEVICE_LOCAL | _MAPPED, shun=HOST_CACHED)
        host_wc = _pick(types, heaps, _MAPPED, avoid=DEVICE_LOCAL, shun=HOST_CACHED)
        host_cached = _pick(types, heaps, _MAPPED, avoid=DEVICE_LOCAL, prefer=(HOST_CACHED,))
        picks.update(weights=vram, state=vram, scratch=vram, step_inputs=bar if bar is not None else host_wc,
                     outputs=host_cached, staging=host_cached, host_weights=host_wc)
    placements = {}
    for role in ROLES:
        idx = picks[role]
        if idx is None:
            raise NoMemoryTypeError(f"this {kind} device has no memory type for {ROLE_TITLES[role]} "
                                    f"(types: {[t.describe() for t in types]})")
        t = types[idx]
        mapped = t.has(_MAPPED) and (uma or role in HOST_ROLES)
        placements[role] = Placement(role, idx, t.heap, t.flags, mapped, not mapped)
    return MemoryChoice(uma, placements)


def format_choice(choice: MemoryChoice, heaps) -> list[str]:
    """One line per role, for `vkmtp devices` and `vkmtp info`."""
    width = max(len(t) for t in ROLE_TITLES.values())
    return [f"{ROLE_TITLES[r].ljust(width)}  {choice[r].describe(heaps)}" for r in ROLES]
