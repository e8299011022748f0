"""Which trunk layers each device of a layer split holds: llama.cpp's --tensor-split proportions, or free memory.

llama.cpp's rule (split mode `layer`, every layer offloaded): the proportions are summed to cumulative split points
s_0 <= s_1 <= ... <= s_{D-1} = 1, and of the file's B blocks plus the output layer (B + 1 "layers"), layer i goes
to the first device d with s_d > i / (B + 1). So each device holds a contiguous run of blocks, and the output layer
(final norm, LM head) falls on the last device with a non-zero share. vkmtp's design (docs/DESIGN.md, "Several
devices") keeps the MTP head and the LM head together on the last device, so it applies the rule to the trunk
blocks with the output layer counted as llama.cpp counts it (the MTP block is a file block too: counting it keeps
the trunk ranges the same as llama.cpp's for the same -ts) and puts both heads on the last device. Without -ts
the proportions are the devices' free memory, as llama.cpp's default split is; logical devices opened on one
physical device share its free memory equally.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


class SplitError(ValueError):
    """A --tensor-split / --device combination vkmtp refuses; the message names the flag."""


@dataclass(frozen=True)
class DeviceLayers:
    """One device's share of a layer split: trunk blocks first..first+count-1, and whether it holds the heads."""

    name: str
    first: int
    count: int
    heads: bool   # output norm, LM head and (with MTP) the MTP head

    @property
    def blocks(self) -> range:
        """The trunk blocks (layer indices) this device holds."""
        return range(self.first, self.first + self.count)

    @property
    def embeds(self) -> bool:
        """The first device: it looks the step's tokens up in the embedding (the others receive the residual
        stream from the device before them)."""
        return self.first == 0 and self.count > 0

    def describe(self) -> str:
        if not self.count:
            return f"{self.name}: the LM head and MTP head only"
        blocks = f"block {self.first}" if self.count == 1 else f"blocks {self.first}-{self.first + self.count - 1}"
        return f"{self.name}: {blocks}" + (" + LM head and MTP head" if self.heads else "")


def logical_names(physical: tuple[int, ...]) -> list[str]:
    """The name of each logical device: `Vulkan<N>` as llama.cpp prints it, `Vulkan<N>.<k>` for the k-th
    further opening of the same physical device (`-dev 0,0` -> Vulkan0, Vulkan0.1)."""
    seen: dict[int, int] = {}
    names = []
    for p in physical:
        k = seen.get(p, 0)
        seen[p] = k + 1
        names.append(f"Vulkan{p}" if k == 0 else f"Vulkan{p}.{k}")
    return names


def parse_tensor_split(text: str, n_devices: int) -> tuple[float, ...]:
    """-ts/--tensor-split: one positive proportion per device, comma- or slash-separated (llama.cpp accepts
    both). A 0 would leave a listed device unused (llama.cpp skips it; vkmtp asks to drop it from the list)."""
    parts = [p.strip() for p in text.replace("/", ",").split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise SplitError(f"-ts/--tensor-split {text}: expected proportions such as 3,1") from None
    if any(not v > 0 or v == float("inf") for v in values):
        raise SplitError(f"-ts/--tensor-split {text}: proportions are > 0 (a device that gets no layers does not "
                         f"belong in -dev/--device)")
    if n_devices < 2:
        raise SplitError(f"-ts/--tensor-split {text}: splits a model over several devices, but one is in use; "
                         f"list them with -dev/--device (e.g. -dev Vulkan0,Vulkan1)")
    if len(values) != n_devices:
        raise SplitError(f"-ts/--tensor-split {text}: {len(values)} proportions for {n_devices} devices in "
                         f"-dev/--device; give one per device")
    return values


def proportions_from_free(free_bytes: list[int], physical: list[int]) -> tuple[float, ...]:
    """llama.cpp's default split: each device's free memory. Logical devices opened on the same physical device
    (`-dev 0,0`) share that device's free memory equally, so the proportions are not counted twice."""
    shares = [physical.count(p) for p in physical]
    values = tuple(free / n for free, n in zip(free_bytes, shares))
    if not any(values):
        raise SplitError("--split-mode layer: no device in -dev/--device reports free memory to split by; "
                         "give -ts/--tensor-split")
    return values


def split_layers(n_blocks_file: int, n_trunk: int, proportions: tuple[float, ...],
                 names: list[str]) -> list[DeviceLayers]:
    """The contiguous trunk blocks of each device (llama.cpp's rule over the file's n_blocks_file blocks plus
    the output layer), the heads on the last device. A device left with no trunk block is refused unless it is
    the last (it then holds only the heads, as llama.cpp's output layer can), since it would only pass the hidden
    state on."""
    total = sum(proportions)
    points, acc = [], 0.0
    for p in proportions:
        acc += p
        points.append(acc / total)
    n_layers = n_blocks_file + 1
    owner = [min(bisect.bisect_right(points, i / n_layers), len(points) - 1) for i in range(n_trunk)]
    out = []
    for d, name in enumerate(names):
        mine = [i for i, o in enumerate(owner) if o == d]
        out.append(DeviceLayers(name, mine[0] if mine else n_trunk, len(mine), d == len(names) - 1))
    empty = [dl.name for dl in out[:-1] if dl.count == 0]
    if empty:
        shares = ",".join(f"{p:g}" for p in proportions)
        raise SplitError(f"the layer split {shares} leaves {', '.join(empty)} without a trunk block "
                         f"({n_trunk} blocks); drop it from -dev/--device or give it a larger -ts/--tensor-split "
                         f"share")
    return out
