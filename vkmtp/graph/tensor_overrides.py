"""Which weights live in host memory the GPU reads: llama.cpp's -ot / --cpu-moe / --n-cpu-moe, resolved per tensor.

A weight's location is "device" (device-local memory) or "host" (host memory the device reads directly: a
host-visible, device-accessible memory type -- zero copy over the bus on a discrete GPU, ordinary memory on UMA;
vkmtp.device.memory_types' `host_weights` role). llama.cpp computes what it places on its "CPU" buffer type on
the CPU; vkmtp keeps every computation on the GPU, which then reads those rows over the bus. Only routed expert
stacks (ffn_{gate,up,down}_exps) may live in host memory: per token the GPU reads just the rows of the few experts
the router chose, while attention, Gated DeltaNet, norms and the shared expert are read whole every token and stay
on the device. The overrides are resolved before anything is allocated, so an unknown buffer type, a regex that
matches nothing and a tensor that cannot move are refused first. Docs: docs/DESIGN.md, "Weight placement".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE = "device"
HOST = "host"
LOCATIONS = (DEVICE, HOST)

# llama.cpp's LLM_FFN_EXPS_REGEX: the routed expert stacks (gate, up, down; fused gate_up; "chexps" variants)
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
_EXPERT_STACK = re.compile(r"^blk\.\d+\.ffn_(gate|up|down)_exps\.weight$")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


class PlacementError(ValueError):
    """A placement flag vkmtp cannot follow; the message names the flag."""


@dataclass(frozen=True)
class TensorOverride:
    """One `REGEX=BUFFER_TYPE` of -ot (or what --cpu-moe / --n-cpu-moe stand for); `flag` names its source."""

    pattern: str
    buffer_type: str
    flag: str = "-ot"

    def __str__(self) -> str:
        return f"{self.flag} {self.pattern}={self.buffer_type}" if self.flag == "-ot" else self.flag


def parse_override_tensor(values) -> tuple[TensorOverride, ...]:
    """-ot/--override-tensor values (each `REGEX=TYPE[,REGEX=TYPE...]`, llama.cpp's syntax), in order."""
    out = []
    for value in values or ():
        for item in value.split(","):
            pattern, eq, buffer_type = item.rpartition("=")
            if not eq or not pattern or not buffer_type:
                raise PlacementError(f"-ot {value!r}: expected REGEX=BUFFER_TYPE, e.g. 'exps=CPU'")
            out.append(TensorOverride(pattern, buffer_type.strip()))
    return tuple(out)


def cpu_moe_overrides() -> tuple[TensorOverride, ...]:
    """--cpu-moe: every routed expert stack in host memory."""
    return (TensorOverride(FFN_EXPS_REGEX, "CPU", "--cpu-moe"),)


def n_cpu_moe_overrides(n: int) -> tuple[TensorOverride, ...]:
    """--n-cpu-moe N: the routed experts of blocks 0..N-1 in host memory (llama.cpp's one pattern per block)."""
    if n < 0:
        raise PlacementError(f"--n-cpu-moe {n}: a number of layers, >= 0")
    return tuple(TensorOverride(rf"blk\.{i}{FFN_EXPS_REGEX}", "CPU", f"--n-cpu-moe {n}") for i in range(n))


def is_expert_stack(name: str) -> bool:
    return bool(_EXPERT_STACK.match(name))


def expert_blocks(names) -> list[int]:
    """Block indices holding routed expert stacks among `names`, ascending."""
    return sorted({int(_BLOCK.match(n).group(1)) for n in names if is_expert_stack(n)})


def buffer_location(buffer_type: str, device_name: str) -> str:
    """A llama.cpp buffer-type name as a location: CPU -> host memory the GPU reads; the device in use -> its
    own memory. Anything else is refused (vkmtp computes every layer on one device)."""
    if buffer_type.upper() == "CPU":
        return HOST
    if buffer_type == device_name:
        return DEVICE
    raise PlacementError(f"unknown buffer type {buffer_type!r}; known here: CPU (host memory the GPU reads), "
                         f"{device_name} (this device's memory)")


def resolve(names, overrides, device_name: str = "Vulkan0") -> dict[str, str]:
    """The location of every tensor in `names` (the model's weights): the first override whose regex is found in
    the name (llama.cpp's order), else the device. Raises PlacementError for a bad regex, an unknown buffer type,
    a pattern that matches no tensor, or a tensor other than a routed expert stack sent to host memory."""
    compiled = []
    for ov in overrides:
        try:
            rx = re.compile(ov.pattern)
        except re.error as exc:
            raise PlacementError(f"{ov}: not a valid regular expression ({exc})") from None
        try:
            loc = buffer_location(ov.buffer_type, device_name)
        except PlacementError as exc:
            raise PlacementError(f"{ov}: {exc}") from None
        compiled.append((ov, rx, loc))
    locations: dict[str, str] = {}
    used = set()
    for name in names:
        loc = DEVICE
        for i, (ov, rx, where) in enumerate(compiled):
            if rx.search(name):
                used.add(i)
                loc = where
                break
        if loc == HOST and not is_expert_stack(name):
            ov = next(ov for i, (ov, rx, _) in enumerate(compiled) if rx.search(name))
            raise PlacementError(
                f"{ov}: puts {name} in host memory; vkmtp places only routed expert stacks (ffn_*_exps) there "
                f"(attention, Gated DeltaNet, norms and the shared expert are read whole every token and stay on "
                f"the device): narrow the pattern, e.g. 'blk\\.3\\.ffn_.*_exps=CPU'")
        locations[name] = loc
    for i, (ov, rx, _) in enumerate(compiled):
        # --n-cpu-moe N beyond the model's layers means all of them (llama.cpp's reading)
        if i not in used and not ov.flag.startswith("--n-cpu-moe") and not any(rx.search(n) for n in names):
            what = "the model has no routed experts" if ov.flag == "--cpu-moe" else \
                "the pattern matches no tensor of this model"
            raise PlacementError(f"{ov}: {what}")
    return locations
