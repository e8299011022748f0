"""Variant choices shared by the op wrappers: subgroup or shared-memory reductions, workgroup sizes, and the
common set-up of the two-pass row reductions (argmax, top-k)."""

from __future__ import annotations

from vkmtp.device import ShaderKey


def use_subgroup(device, requested: bool | None) -> bool:
    """Subgroup arithmetic when the device reports it (or as requested); refuse a request it cannot serve."""
    has = device.info.has_subgroup_arithmetic
    if requested is None:
        return has
    if requested and not has:
        raise ValueError(f"device '{device.info.name}' reports no subgroup arithmetic operations")
    return requested


def check_block_size(block_size: int, device, power_of_two: bool = True) -> int:
    """A workgroup size that is a multiple of the subgroup size and within the device's limit."""
    sub = max(device.info.subgroup_size, 1)
    limit = device.info.max_workgroup_invocations or 1024
    if block_size < 1 or block_size > limit:
        raise ValueError(f"workgroup size {block_size} outside 1..{limit}")
    if power_of_two and block_size & (block_size - 1):
        raise ValueError(f"workgroup size {block_size} must be a power of two")
    if block_size % sub and block_size >= sub:
        raise ValueError(f"workgroup size {block_size} is not a multiple of the subgroup size {sub}")
    return block_size


def fold_groups(n: int, limit: int = 65535) -> tuple[int, int]:
    """(x, y) group counts covering n workgroups with x <= limit (shaders use x + y * num_groups.x)."""
    if n < 1:
        raise ValueError("nothing to dispatch")
    return min(n, limit), -(-n // limit)


def flag_variants(source: str, *flags: str) -> list[ShaderKey]:
    """ShaderKeys of `source` for every subset of boolean `flags` (for ops/variants.py)."""
    keys = []
    for mask in range(1 << len(flags)):
        keys.append(ShaderKey.make(source, **{f: 1 for i, f in enumerate(flags) if mask >> i & 1}))
    return keys


class TwoPassRows:
    """Set-up shared by Argmax and TopK: pass 1 reduces `part_size` values of a row per workgroup into a scratch
    of partial results, pass 2 reduces a row's partials in one workgroup."""

    def __init__(self, device, block_size: int, part_size: int, subgroup: bool | None):
        self.device = device
        self.block_size = check_block_size(block_size, device)
        self.part_size = part_size
        self.subgroup = use_subgroup(device, subgroup)

    def n_parts(self, n: int) -> int:
        """Pass-1 workgroups per row of n values."""
        return -(-n // self.part_size)

    def scratch_part(self, what: str, scratch, need: int):
        """The first `need` bytes of `scratch` (pass 1's partial results); ValueError if it is smaller."""
        if scratch.nbytes < need:
            raise ValueError(f"{what} scratch of {scratch.nbytes} B, {need} B needed")
        return scratch.sub(0, need)
