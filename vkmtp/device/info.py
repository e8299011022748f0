"""What we know about a Vulkan device, and which one to use.

Facts come from `kp.device_infos()` (vkmtp's addition to the Kompute binding, tools/kp/vkmtp_ext.hpp):
type, driver, subgroup size and operations, memory heaps (and VK_EXT_memory_budget), limits, and the optional
features the device supports and those its VkDevice was created with (`FEATURE_NAMES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vkmtp import env
from vkmtp.device.memory_types import MemoryChoice, MemoryType, choose, is_uma

VENDORS = {0x1002: "AMD", 0x10DE: "NVIDIA", 0x8086: "Intel", 0x13B5: "ARM", 0x5143: "Qualcomm",
           0x106B: "Apple", 0x10005: "Mesa"}
_TYPE_RANK = {"DiscreteGpu": 0, "IntegratedGpu": 1, "VirtualGpu": 2, "Other": 3, "Cpu": 4}
_TYPE_NAME = {"DiscreteGpu": "discrete", "IntegratedGpu": "integrated", "VirtualGpu": "virtual",
              "Cpu": "cpu", "Other": "other"}


# Optional device features vkmtp's kp extension negotiates at device creation (VkPhysicalDeviceFeatures2 chain):
# 16/8-bit storage buffers, float16 / int8 / int16 arithmetic, 8-bit integer dot products, subgroup size control.
FEATURE_NAMES = ("storage_buffer_16bit", "storage_buffer_8bit", "shader_float16", "shader_int8", "shader_int16",
                 "integer_dot_product", "subgroup_size_control", "compute_full_subgroups")


def host_available_bytes() -> int:
    """Memory the host can still give a process: MemAvailable from /proc/meminfo, else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class NoDeviceError(RuntimeError):
    """No usable Vulkan device (no loader, no driver, or the requested index does not exist)."""


@dataclass(frozen=True)
class MemoryHeap:
    size: int
    device_local: bool
    budget: int   # 0 when VK_EXT_memory_budget is absent
    usage: int


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    vendor_id: int
    device_id: int
    kind: str                       # discrete | integrated | virtual | cpu | other
    driver_name: str
    driver_info: str
    api_version: str
    subgroup_size: int
    subgroup_ops: dict = field(hash=False)
    max_shared_memory: int = 0
    max_workgroup_invocations: int = 0
    max_workgroup_count: tuple = (65535, 65535, 65535)
    max_storage_buffer_range: int = 1 << 27
    max_push_constants_size: int = 128
    max_memory_allocation_count: int = 4096
    timestamp_period_ns: float = 1.0
    timestamps: bool = False
    heaps: tuple[MemoryHeap, ...] = ()
    uma: bool = False               # an integrated GPU or a CPU device (memory_types.is_uma): APUs, lavapipe
    memory_types: tuple[MemoryType, ...] = ()
    memory_budget: bool = False
    extensions: tuple[str, ...] = ()
    supported_features: frozenset = frozenset()   # FEATURE_NAMES the device supports
    enabled_features: frozenset = frozenset()     # FEATURE_NAMES its VkDevice was created with (Device sets it)
    integer_dot_accelerated: bool = False          # integerDotProduct4x8BitPackedSignedAccelerated
    min_subgroup_size: int = 0
    max_subgroup_size: int = 0

    def has_feature(self, name: str) -> bool:
        """An optional feature enabled on this device (never true for one it only supports)."""
        return name in self.enabled_features

    @property
    def vendor(self) -> str:
        return VENDORS.get(self.vendor_id, hex(self.vendor_id))

    @property
    def device_local_bytes(self) -> int:
        return sum(h.size for h in self.heaps if h.device_local)

    @property
    def available_bytes(self) -> int:
        """What we may allocate: the budget where the driver reports one, else the device-local heap size. A CPU
        device's memory is the process's own: what the host has available is the limit there (the heap such
        drivers report is a fixed number, 2 GiB on Mesa 22's lavapipe, whatever the machine has)."""
        if self.kind == "cpu":
            return host_available_bytes()
        local = [h for h in self.heaps if h.device_local] or list(self.heaps)
        if self.memory_budget and any(h.budget for h in local):
            return sum(max(h.budget - h.usage, 0) for h in local)
        return sum(h.size for h in local)

    @property
    def memory(self) -> MemoryChoice:
        """The memory type of every buffer role on this device (vkmtp.device.memory_types)."""
        return choose(self.kind, self.heaps, self.memory_types)

    @property
    def has_subgroup_arithmetic(self) -> bool:
        return bool(self.subgroup_ops.get("arithmetic"))

    @property
    def has_subgroup_shuffle(self) -> bool:
        return bool(self.subgroup_ops.get("shuffle"))

    @property
    def has_subgroup_clustered(self) -> bool:
        return bool(self.subgroup_ops.get("clustered"))

    @property
    def cache_tag(self) -> str:
        """Device + driver identity, for per-device tuning profiles."""
        return f"{self.name}|{self.driver_name}|{self.driver_info}"

    @staticmethod
    def from_kp(index: int, d: dict) -> "DeviceInfo":
        heaps = tuple(MemoryHeap(h["size"], h["device_local"], h["budget"], h["usage"]) for h in d["memory_heaps"])
        types = tuple(MemoryType(t["heap"], _property_flags(t)) for t in d["memory_types"])
        kind = _TYPE_NAME.get(d["device_type"], "other")
        api = d["api_version"]
        return DeviceInfo(
            index=index, name=d["name"], vendor_id=d["vendor_id"], device_id=d["device_id"],
            kind=kind, driver_name=d["driver_name"],
            driver_info=d["driver_info"], api_version=f"{api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}",
            subgroup_size=d["subgroup_size"], subgroup_ops=dict(d["subgroup_ops"]),
            max_shared_memory=d["max_shared_memory"], max_workgroup_invocations=d["max_workgroup_invocations"],
            max_workgroup_count=tuple(d["max_workgroup_count"]),
            max_storage_buffer_range=d["max_storage_buffer_range"],
            max_push_constants_size=d["max_push_constants_size"],
            max_memory_allocation_count=d["max_memory_allocation_count"],
            timestamp_period_ns=d["timestamp_period_ns"], timestamps=d["timestamps"], heaps=heaps,
            uma=is_uma(kind, heaps, types), memory_types=types, memory_budget=d["memory_budget"],
            extensions=tuple(d["extensions"]),
            supported_features=_names(d.get("supported_features", {})),
            enabled_features=_names(d.get("enabled_features", {})),
            integer_dot_accelerated=bool(d.get("integer_dot_4x8_packed_accelerated", False)),
            min_subgroup_size=d.get("min_subgroup_size", d["subgroup_size"]),
            max_subgroup_size=d.get("max_subgroup_size", d["subgroup_size"]))


def _property_flags(t: dict) -> int:
    """VkMemoryPropertyFlags of one memory type (kp extension 4+ reports them whole)."""
    if "property_flags" in t:
        return int(t["property_flags"])
    return sum(bit for key, bit in (("device_local", 1), ("host_visible", 2), ("host_coherent", 4),
                                    ("host_cached", 8)) if t.get(key))


def _names(flags: dict) -> frozenset:
    return frozenset(k for k, v in flags.items() if v)


def _rank(info: DeviceInfo) -> tuple:
    kind = {"discrete": 0, "integrated": 1, "virtual": 2, "other": 3, "cpu": 4}[info.kind]
    return (kind, -info.device_local_bytes, info.index)


def list_devices() -> list[DeviceInfo]:
    """Every Vulkan physical device, in the driver's order."""
    try:
        import kp
    except ImportError as exc:  # kp is built by tools/setup.sh
        raise NoDeviceError(f"the Kompute module 'kp' is not installed ({exc}); run tools/setup.sh") from None
    try:
        mgr = kp.Manager()
    except Exception as exc:
        raise NoDeviceError(f"no Vulkan device could be opened: {exc}") from None
    try:
        # This probe's own VkDevice says nothing about what a Device will enable: Device fills that in.
        return [replace(DeviceInfo.from_kp(i, d), enabled_features=frozenset())
                for i, d in enumerate(kp.device_infos(mgr))]
    finally:
        mgr.destroy()


def pick_device(devices: list[DeviceInfo], requested: int | str | None = None) -> DeviceInfo:
    """The user's choice (`--device N` or VKMTP_DEVICE), else the best: discrete > integrated > cpu."""
    if not devices:
        raise NoDeviceError("no Vulkan device found (install mesa-vulkan-drivers for the lavapipe CPU driver)")
    if requested is None:
        requested = env.device_index()
    if requested not in (None, ""):
        idx = int(requested)
        if not 0 <= idx < len(devices):
            raise NoDeviceError(f"device {idx} does not exist; `vkmtp devices` lists {len(devices)}")
        return devices[idx]
    return min(devices, key=_rank)


def format_devices(devices: list[DeviceInfo], chosen: int | None = None) -> str:
    """A table for `vkmtp devices`."""
    rows = [("#", "name", "type", "vendor", "driver", "subgroup", "shared", "memory (GiB)", "UMA", "budget")]
    for d in devices:
        mark = "*" if d.index == chosen else " "
        ops = "+".join(k for k in ("arithmetic", "shuffle", "clustered") if d.subgroup_ops.get(k))
        rows.append((f"{mark}{d.index}", d.name, d.kind, d.vendor,
                     f"{d.driver_name} {d.driver_info}".strip(), f"{d.subgroup_size} ({ops})",
                     f"{d.max_shared_memory // 1024} KiB", f"{d.device_local_bytes / 2**30:.1f}",
                     "yes" if d.uma else "no", "yes" if d.memory_budget else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for d in devices:
        lines += ["", f"device {d.index} memory types per buffer role:"]
        lines += ["  " + line for line in format_memory(d)]
    return "\n".join(lines)


def format_memory(info: DeviceInfo) -> list[str]:
    """The chosen memory type and heap of each buffer role (vkmtp devices, vkmtp info)."""
    from vkmtp.device.memory_types import NoMemoryTypeError, format_choice
    try:
        return format_choice(info.memory, info.heaps)
    except NoMemoryTypeError as exc:
        return [str(exc)]
