"""The memory type of every buffer role, replayed on recorded memory types and heaps of real devices.

Fixtures (tests/device/fixtures/*.json) hold heaps and types as vulkaninfo prints them, a one-line description of
the device and where the layout comes from, and the expected type and fill (staged / mapped) per role.
"""

import json
from pathlib import Path

import pytest

from vkmtp.device.info import MemoryHeap
from vkmtp.device.memory_types import (DEVICE_LOCAL, ROLES, MemoryType, NoMemoryTypeError, choose,
                                       flags_from_names, format_choice, is_uma)

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))
KINDS = {"PHYSICAL_DEVICE_TYPE_DISCRETE_GPU": "discrete", "PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU": "integrated",
         "PHYSICAL_DEVICE_TYPE_CPU": "cpu"}


def load(path: Path):
    d = json.loads(path.read_text())
    heaps = tuple(MemoryHeap(h["size"], "MEMORY_HEAP_DEVICE_LOCAL_BIT" in h["flags"], 0, 0)
                  for h in d["memoryHeaps"])
    types = tuple(MemoryType(t["heapIndex"], flags_from_names(t["propertyFlags"])) for t in d["memoryTypes"])
    return d, KINDS[d["deviceType"]], heaps, types


def test_every_device_kind_is_recorded():
    names = {p.stem for p in FIXTURES}
    assert {"nvidia_h100", "geforce_rtx2070s_nobar", "geforce_rtx4090_rebar", "amd_rx7900xtx_nobar",
            "amd_rx7900xtx_rebar", "amd_strix_halo_gfx1151", "amd_radeon_890m", "intel_igpu_meteor_lake",
            "intel_arc_a770", "lavapipe"} <= names
    for p in FIXTURES:
        d = json.loads(p.read_text())
        assert d["description"] and d["source"], p.name


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_chosen_type_per_role(path):
    d, kind, heaps, types = load(path)
    choice = choose(kind, heaps, types)
    got = {r: [choice[r].type_index, "staged" if choice[r].staged else "mapped"] for r in ROLES}
    assert got == d["expected"]
    for r in ROLES:
        p = choice[r]
        assert p.heap_index == types[p.type_index].heap
        assert p.staged != p.mapped
        if p.mapped:   # Kompute maps persistently and never flushes: a mapped role needs a coherent type
            assert types[p.type_index].has(0x2 | 0x4)
        assert types[p.type_index].usable   # never lazily-allocated, protected or AMD device-coherent
    assert len(format_choice(choice, heaps)) == len(ROLES)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_discrete_keeps_model_data_in_vram_and_uma_never_stages(path):
    d, kind, heaps, types = load(path)
    choice = choose(kind, heaps, types)
    assert choice.uma == (kind != "discrete")
    if kind == "discrete":
        for role in ("weights", "state", "scratch"):
            t = types[choice[role].type_index]
            assert t.has(DEVICE_LOCAL) and heaps[t.heap].device_local and choice[role].staged, role
            # the largest device-local heap (VRAM), not the 256 MiB BAR window
            assert heaps[t.heap].size == max(h.size for h in heaps if h.device_local), role
        assert not types[choice["host_weights"].type_index].has(DEVICE_LOCAL)
        assert not heaps[choice["host_weights"].heap_index].device_local
        assert types[choice["outputs"].type_index].has(0x8)     # host-cached for what the host reads
    else:
        assert not any(choice[r].staged for r in ROLES)
        assert all(choice[r].mapped for r in ROLES)


def test_a_bar_type_does_not_make_a_discrete_gpu_uma():
    _, kind, heaps, types = load(Path(__file__).parent / "fixtures" / "geforce_rtx4090_rebar.json")
    assert any(t.has(DEVICE_LOCAL | 0x2) for t in types)
    assert not is_uma(kind, heaps, types)
    assert is_uma("integrated", heaps, types) and is_uma("cpu", heaps, types)


def test_a_device_without_a_usable_type_is_refused_by_name():
    heaps = (MemoryHeap(1 << 30, True, 0, 0),)
    with pytest.raises(NoMemoryTypeError, match="step inputs"):
        choose("discrete", heaps, (MemoryType(0, DEVICE_LOCAL),))


def test_this_device_reports_its_choice():
    from vkmtp.device.info import format_devices, list_devices
    devices = list_devices()
    info = devices[0]
    assert info.memory_types, "kp.device_infos() reports memory types"
    choice = info.memory
    assert choice.uma == info.uma
    text = format_devices(devices, 0)
    assert "KV + recurrent state" in text and f"type {choice['weights'].type_index}" in text


def test_buffers_are_allocated_from_the_chosen_type_and_staged_ones_round_trip(device):
    """On lavapipe every role maps type 0; a staged placement (as on a discrete GPU) is a storage tensor of the
    given type, filled and read back through the staging buffer."""
    import dataclasses

    import numpy as np

    from vkmtp.device.memory_types import MemoryChoice

    for role in ROLES:
        buf = device.buffer(64, "device", f"probe-{role}", role=role)
        try:
            place = device.memory[role]
            assert (buf.role, buf.memory_type, buf.mapped) == (role, place.type_index, place.mapped)
        finally:
            buf.destroy()
    saved = device.memory
    staged = dataclasses.replace(saved["weights"], mapped=False, staged=True)
    device.memory = MemoryChoice(False, {**saved.placements, "weights": staged})
    try:
        buf = device.buffer(1 << 20, "device", "staged-weights", role="weights")
        try:
            assert not buf.mapped and buf.memory_type == staged.type_index
            data = (np.arange(1 << 18, dtype=np.uint64) * 2654435761 % (1 << 32)).astype(np.uint32)
            device.upload(buf.view(), data)
            assert np.array_equal(device.read(buf.view(), np.uint32), data)
        finally:
            buf.destroy()
    finally:
        device.memory = saved
    with pytest.raises(ValueError, match="unknown buffer role"):
        device.buffer(64, "device", "x", role="kv")


def test_a_memory_type_the_device_lacks_is_refused(device):
    import dataclasses

    from vkmtp.device.memory_types import MemoryChoice

    saved = device.memory
    bad = dataclasses.replace(saved["scratch"], type_index=len(device.info.memory_types) + 3)
    device.memory = MemoryChoice(saved.uma, {**saved.placements, "scratch": bad})
    try:
        with pytest.raises(MemoryError, match="memory type"):
            device.buffer(64, "device", "bad")
    finally:
        device.memory = saved


def test_vkmtp_info_prints_the_type_and_heap_of_each_role(device):
    from vkmtp.cli.info import describe_model
    from vkmtp.demo_model import default_model_path
    from vkmtp.device.memory_types import ROLE_TITLES

    text = describe_model(default_model_path(), n_ctx=256, device=device)
    assert "memory types  per buffer role on " in text
    section = text.split("memory types  per buffer role on ", 1)[1].splitlines()[1: 1 + len(ROLES)]
    for role, line in zip(ROLES, section):
        assert line.strip().startswith(ROLE_TITLES[role]), line
        place = device.memory[role]
        assert f"type {place.type_index} (" in line and f"heap {place.heap_index} (" in line


@pytest.mark.parametrize("name,type_index,heap_index", [
    ("geforce_rtx4090_rebar", 8, 1),     # NVIDIA discrete: system RAM, write-combined (not the BAR window)
    ("nvidia_h100", 8, 1),
    ("amd_rx7900xtx_rebar", 1, 1),       # AMD discrete: system RAM, uncached (not host-cached, not device-local)
    ("amd_rx7900xtx_nobar", 1, 1),
    ("amd_radeon_890m", 1, 1),           # AMD APU: the GTT heap, outside the device-local carve-out
    ("amd_strix_halo_gfx1151", 1, 1),
    ("intel_igpu_meteor_lake", 0, 0),    # one heap: weights in host memory are where everything is
    ("lavapipe", 0, 0),
])
def test_weights_in_host_memory_get_a_host_heap_the_device_reads(name, type_index, heap_index):
    """--cpu-moe / --n-cpu-moe / -ot exps=CPU: the expert stacks go to a host-visible, coherent type the GPU reads
    directly (zero copy over PCIe on a discrete GPU), in a heap that is not device-local wherever one exists."""
    _, kind, heaps, types = load(Path(__file__).parent / "fixtures" / f"{name}.json")
    place = choose(kind, heaps, types)["host_weights"]
    assert (place.type_index, place.heap_index) == (type_index, heap_index)
    t = types[place.type_index]
    assert t.has(0x2 | 0x4) and place.mapped and not place.staged and t.usable
    if any(not h.device_local for h in heaps):
        assert not heaps[place.heap_index].device_local and not t.has(DEVICE_LOCAL)
