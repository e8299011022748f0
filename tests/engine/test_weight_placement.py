"""Routed experts in host memory (--cpu-moe, --n-cpu-moe, -ot): same tokens as all on the device, the plan per
location is what is allocated, bad placements are refused before allocation, and --fit moves the fewest expert
layers to host memory when the device budget is small."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from vkmtp.device import Device
from vkmtp.device.info import DeviceInfo, MemoryHeap
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.graph.memory_plan import DeviceMemoryError
from vkmtp.graph.tensor_overrides import (PlacementError, TensorOverride, cpu_moe_overrides, is_expert_stack,
                                          n_cpu_moe_overrides, parse_override_tensor, resolve)
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2, 64, 71, 200, 19, 23, 31, 37]


def _tokens(eng, n=24):
    out = []
    for ev in eng.generate(Request(PROMPT, SamplingParams.greedy_params(), max_tokens=n)):
        out += ev.new_ids
    return out


def _buffers(bufs):
    return sorted((b.name, b.nbytes) for b in bufs)


def _host_blocks(eng) -> set[int]:
    locs = eng.memory_plan.weight_plan.locations
    return {int(n.split(".")[1]) for n, loc in locs.items() if loc == "host"}


@pytest.mark.parametrize("mtp", [True, False], ids=["mtp", "nomtp"])
@pytest.mark.parametrize("file_type", ["f32", "q4_0"])
def test_experts_in_host_memory_give_the_same_tokens(device, fixture_models, mtp, file_type):
    path = fixture_models("moe", file_type)
    runs = {}
    for label, overrides in (("device", ()), ("cpu-moe", cpu_moe_overrides()), ("n-cpu-moe 2", n_cpu_moe_overrides(2))):
        before = {id(b) for b in device.live_buffers()}
        config = EngineConfig(n_ctx=256, ubatch=8, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False),
                              tensor_overrides=overrides)
        eng = VulkanEngine(path, config, device=device)
        try:
            made = [b for b in device.live_buffers() if id(b) not in before]
            plan = eng.memory_plan
            assert _buffers(made) == _buffers(plan.buffers)   # the plan is what is allocated, per location
            host = [b for b in made if b.name.startswith("host_weights")]
            assert sum(b.nbytes for b in host) == plan.host_weights == plan.part("host_weights")
            assert plan.device_total == plan.total - plan.host_weights
            for b in host:
                assert b.role == "host_weights" and b.memory_type == device.memory["host_weights"].type_index
            locs = plan.weight_plan.locations
            for name, loc in locs.items():
                if loc == "host":
                    assert is_expert_stack(name)
                    # the expert mat-vecs read the stack from the host buffers
                    assert all(p.view.buffer.role == "host_weights" for p in eng.weights[name].parts)
                elif "+" not in name:
                    assert all(p.view.buffer.role == "weights" for p in eng.weights[name].parts)
            if label == "device":
                assert plan.host_weights == 0
            elif label == "cpu-moe":
                n_blocks = eng.cfg.n_layer + (1 if mtp and eng.table.mtp is not None else 0)
                assert _host_blocks(eng) == set(range(n_blocks)) and plan.expert_bytes_on_device == 0
            else:
                assert _host_blocks(eng) == {0, 1} and plan.expert_bytes_on_device > 0
            runs[label] = _tokens(eng)
        finally:
            eng.close()
        assert {id(b) for b in device.live_buffers()} == before
    assert runs["cpu-moe"] == runs["device"] and runs["n-cpu-moe 2"] == runs["device"]
    assert len(runs["device"]) == 24


def test_override_syntax_and_resolution():
    got = parse_override_tensor(["blk\\.0\\.ffn_up_exps=CPU,exps=Vulkan0", "down=CPU"])
    assert [(o.pattern, o.buffer_type) for o in got] == [("blk\\.0\\.ffn_up_exps", "CPU"), ("exps", "Vulkan0"),
                                                          ("down", "CPU")]
    names = ["blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight", "blk.1.ffn_up_exps.weight",
             "blk.0.attn_q.weight"]
    locs = resolve(names, got[:2])      # the first matching pattern wins (llama.cpp's order)
    assert locs == {"blk.0.ffn_up_exps.weight": "host", "blk.0.ffn_down_exps.weight": "device",
                    "blk.1.ffn_up_exps.weight": "device", "blk.0.attn_q.weight": "device"}
    assert set(resolve(names, n_cpu_moe_overrides(99)).values()) == {"host", "device"}   # N > layers: all
    for bad, match in ((["exps"], "REGEX=BUFFER_TYPE"), (["=CPU"], "REGEX=BUFFER_TYPE")):
        with pytest.raises(PlacementError, match=match):
            parse_override_tensor(bad)
    with pytest.raises(PlacementError, match="unknown buffer type 'CUDA0'.*CPU.*Vulkan0"):
        resolve(names, [TensorOverride("exps", "CUDA0")])
    with pytest.raises(PlacementError, match="unknown buffer type 'Vulkan1'"):
        resolve(names, [TensorOverride("exps", "Vulkan1")])
    with pytest.raises(PlacementError, match="matches no tensor"):
        resolve(names, [TensorOverride("nothing_like_this", "CPU")])
    with pytest.raises(PlacementError, match="not a valid regular expression"):
        resolve(names, [TensorOverride("blk(", "CPU")])
    with pytest.raises(PlacementError, match="attn_q.*only routed expert stacks"):
        resolve(names, [TensorOverride("blk\\.0\\.", "CPU")])
    with pytest.raises(PlacementError, match="--cpu-moe: the model has no routed experts"):
        resolve(["blk.0.ffn_up.weight"], cpu_moe_overrides())


def test_bad_placements_are_refused_before_allocation(fixture_models):
    dev = Device()
    try:
        for overrides, match in (((TensorOverride("zzz", "CPU"),), "matches no tensor"),
                                 ((TensorOverride("exps", "ROCm0"),), "unknown buffer type"),
                                 ((TensorOverride("attn", "CPU"),), "only routed expert stacks")):
            with pytest.raises(PlacementError, match=match):
                VulkanEngine(fixture_models("moe", "f32"), EngineConfig(n_ctx=256, tensor_overrides=overrides),
                             device=dev)
            assert dev.allocated_bytes == 0 and dev.live_buffers() == []
        with pytest.raises(PlacementError, match="no routed experts"):
            VulkanEngine(fixture_models("dense", "f32"), EngineConfig(n_ctx=256, tensor_overrides=cpu_moe_overrides()),
                         device=dev)
        assert dev.live_buffers() == []
    finally:
        dev.destroy()


def _small_device(budget: int) -> Device:
    dev = Device()
    dev.info = dataclasses.replace(dev.info, heaps=(MemoryHeap(budget, True, 0, 0),), memory_budget=False,
                                   kind="integrated")
    return dev


def _plan_device_bytes(path, n_cpu: int) -> tuple[int, int]:
    """(device bytes, host bytes) of the ctx-256 plan with the experts of the first n_cpu layers in host memory."""
    dev = Device()
    try:
        eng = VulkanEngine(path, EngineConfig(n_ctx=256, spec=SpecConfig(n_max=3),
                                              tensor_overrides=n_cpu_moe_overrides(n_cpu)), device=dev)
        try:
            return eng.memory_plan.device_total, eng.memory_plan.host_weights
        finally:
            eng.close()
    finally:
        dev.destroy()


@pytest.mark.parametrize("ctx_fixed", [True, False], ids=["c256", "c-not-given"])
def test_fit_moves_the_fewest_expert_layers_to_host_memory(fixture_models, ctx_fixed):
    path = fixture_models("moe", "f32")
    all_on_device, _ = _plan_device_bytes(path, 0)
    one_moved, one_host = _plan_device_bytes(path, 1)
    layer = all_on_device - one_moved
    assert layer == one_host > 0
    # a device 1.5 expert layers short: two layers must move, one is not enough
    budget = all_on_device - layer - layer // 2
    dev = _small_device(budget)
    try:
        config = EngineConfig(n_ctx=256, ctx_fixed=ctx_fixed, fit_margin_mib=0, spec=SpecConfig(n_max=3))
        with pytest.raises(DeviceMemoryError, match="--cpu-moe or --n-cpu-moe"):
            VulkanEngine(path, dataclasses.replace(config, fit=False), device=dev)
        assert dev.live_buffers() == []
        eng = VulkanEngine(path, config, device=dev)
        try:
            assert _host_blocks(eng) == {0, 1}
            assert "moved the routed experts of 2 of 5 layers to host memory (--n-cpu-moe 2" in eng.fit_message
            assert eng.memory_plan.device_total <= budget < all_on_device
            assert _buffers(dev.live_buffers()) == _buffers(eng.memory_plan.buffers)
            assert len(_tokens(eng, 8)) == 8
        finally:
            eng.close()
    finally:
        dev.destroy()


def test_fit_says_how_many_layers_it_moved_on_the_command_line(fixture_models, monkeypatch, capsys):
    from vkmtp.cli.main import main

    path = fixture_models("moe", "f32")
    all_on_device, _ = _plan_device_bytes(path, 0)
    one_moved, _ = _plan_device_bytes(path, 1)
    budget = all_on_device - (all_on_device - one_moved) // 2   # half a layer short: one layer moves
    monkeypatch.setattr(DeviceInfo, "available_bytes", property(lambda self: budget))
    assert main(["generate", "-m", path, "-p", "one two three", "-n", "4", "--temp", "0", "-c", "256",
                 "--fit-target", "0", "--spec-draft-n-max", "3"]) == 0
    err = capsys.readouterr().err
    assert "vkmtp: fit: moved the routed experts of 1 of 5 layers to host memory (--n-cpu-moe 1" in err
    # `vkmtp info` plans what the engine allocates (checkpoints, tuning): the same budget, the same one layer
    assert main(["info", path, "-c", "256", "--fit-target", "0"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" in out and "--fit on moves the routed experts of 1 layer(s)" in out
    assert main(["info", path, "-c", "256", "--fit-target", "0", "--cpu-moe"]) == 0
    out = capsys.readouterr().out
    assert "routed experts in host memory" in out and "does not fit" not in out
    assert main(["generate", "-m", path, "-p", "x", "-n", "1", "-ot", "exps=CUDA0"]) == 1
    assert "-ot exps=CUDA0: unknown buffer type 'CUDA0'" in capsys.readouterr().err


@pytest.mark.parametrize("file_type", ["q8_0", "q4_0", "q4_k"])
def test_uploaded_weights_are_the_gguf_rows_in_the_device_layout(device, fixture_models, file_type):
    """What placement uploads, read back and turned into GGUF order again, is the file's bytes (Q8_0 / Q4_0 rows
    are repacked, quants then scales; Q4_K rows are unchanged), for fused groups and split parts too."""
    from vkmtp.gguf import GGUFFile
    from vkmtp.graph.placement import WeightPlan
    from vkmtp.model.config import ModelConfig
    from vkmtp.model.weights import fused_groups, validate
    from vkmtp.ops.quant_types import from_device_layout

    gguf = GGUFFile(fixture_models("dense", file_type))
    table = validate(gguf, ModelConfig.from_gguf(gguf))
    names = [s.name for s in table.specs()]
    fused = fused_groups(table, {n: gguf.tensors[n].ggml_type for n in names})
    assert fused
    limit = max(gguf.tensors[n].n_bytes for n in names) // 2   # the largest tensor is split in parts
    plan = WeightPlan(gguf, names, limit, fused=fused)
    assert any(len(p) > 1 for p in plan.slots.values())
    refs = plan.allocate(device)
    try:
        for name in names:
            ref, info = refs[name], gguf.tensors[name]
            got = b"".join(device.download(p.view) for p in ref.parts)
            back = from_device_layout(info.ggml_type, info.shape[-1], np.frombuffer(got, np.uint8))
            assert back.tobytes() == np.asarray(gguf.raw(name)).tobytes(), name
    finally:
        for b in plan.buffers:
            b.destroy()
