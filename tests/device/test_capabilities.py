"""The capability record (vkmtp.device.capabilities): defaults per driver class, and a tuning profile over them."""

from __future__ import annotations

import os
from dataclasses import replace

from vkmtp.device.capabilities import DRIVERS, DeviceCaps, MatVecTuning
from vkmtp.device.info import DeviceInfo
from vkmtp.tuning.profile import TuningProfile

GPU = DeviceInfo(index=0, name="Radeon RX 7600 (RADV NAVI33)", vendor_id=0x1002, device_id=1, kind="discrete",
                 driver_name="radv", driver_info="Mesa 24.0.5", api_version="1.3.0", subgroup_size=64,
                 subgroup_ops={"arithmetic": True, "shuffle": True, "clustered": False},
                 max_shared_memory=65536, max_workgroup_invocations=1024)
LAVAPIPE = DeviceInfo(**{**GPU.__dict__, "name": "llvmpipe (LLVM 15.0.6, 256 bits)", "kind": "cpu",
                         "driver_name": "llvmpipe", "subgroup_size": 8})


def test_defaults_follow_the_device_type():
    gpu, cpu = DeviceCaps.for_device(GPU), DeviceCaps.for_device(LAVAPIPE)
    assert (gpu.driver, gpu.cpu_driver, gpu.lavapipe) == ("gpu", False, False)
    assert (cpu.driver, cpu.cpu_driver, cpu.lavapipe) == ("cpu", True, True)
    assert gpu.matvec == MatVecTuning(64, 2, True) and cpu.matvec == MatVecTuning(8, 16, True)
    assert (gpu.gdn_lanes_per_column, gpu.compute_units, gpu.matmul_tiles) == (8, 16, "gpu")
    assert (cpu.gdn_lanes_per_column, cpu.compute_units, cpu.matmul_tiles) == (1, os.cpu_count(), "cpu")
    assert gpu.attn_n_splits is None and cpu.attn_n_splits is None   # decode attention derives its splits
    assert gpu.workgroup_size == 64 and cpu.workgroup_size == 64
    assert not gpu.tuned and DRIVERS[-1].matches(GPU)   # the last entry takes any device


def test_a_profile_replaces_only_what_it_measured():
    caps = TuningProfile(matvec={"Q4_K": MatVecTuning(128, 1, False)}, gdn_lanes_per_column=16,
                         attn_chunk=256).apply(DeviceCaps.for_device(GPU))
    assert caps.tuned and caps.matvec_per_type == {12: MatVecTuning(128, 1, False)}
    assert (caps.gdn_lanes_per_column, caps.gdn_variant, caps.attn_n_splits, caps.attn_chunk) == (16, None, None, 256)
    assert caps.matvec == MatVecTuning(64, 2, True)


def test_f16_loads_in_prefill_attention_need_the_feature_and_a_gpu_default():
    f16 = frozenset({"storage_buffer_16bit"})
    assert DeviceCaps.for_device(replace(GPU, enabled_features=f16)).attn_f16_loads
    assert not DeviceCaps.for_device(GPU).attn_f16_loads                  # feature not enabled
    cpu = DeviceCaps.for_device(replace(LAVAPIPE, enabled_features=f16))
    assert cpu.f16_storage and not cpu.attn_f16_loads                      # slower on CPU drivers


def test_the_int8_prefill_path_needs_integer_dot_products():
    """A profile's matmul.int8 takes effect only where the device enabled integer dot products."""
    with_dot = DeviceCaps.for_device(replace(GPU, enabled_features=frozenset({"integer_dot_product"})))
    without = DeviceCaps.for_device(GPU)
    assert not with_dot.matmul_int8 and with_dot.int_dot   # off by default (MATMUL_INT8_DEFAULT)
    assert TuningProfile(matmul_int8=True).apply(with_dot).matmul_int8
    assert not TuningProfile(matmul_int8=True).apply(without).matmul_int8
    assert not TuningProfile(matmul_int8=False).apply(with_dot).matmul_int8


def test_f16_math_in_prefill_attention_needs_shader_float16_and_a_gpu_default():
    """On by default for GPUs where shaderFloat16 is enabled, off on CPU drivers (slower on lavapipe); a
    profile's flash_attn.f16 sets it, but never on a device without the feature."""
    f16 = frozenset({"shader_float16"})
    gpu = DeviceCaps.for_device(replace(GPU, enabled_features=f16))
    assert gpu.f16_math and gpu.attn_f16_math
    assert not DeviceCaps.for_device(GPU).attn_f16_math                   # feature not enabled
    cpu = DeviceCaps.for_device(replace(LAVAPIPE, enabled_features=f16))
    assert cpu.f16_math and not cpu.attn_f16_math
    assert TuningProfile(attn_f16_math=True).apply(cpu).attn_f16_math
    assert not TuningProfile(attn_f16_math=False).apply(gpu).attn_f16_math
    assert not TuningProfile(attn_f16_math=True).apply(DeviceCaps.for_device(GPU)).attn_f16_math
    assert TuningProfile().apply(gpu).attn_f16_math                       # no profile key: the default


def test_gdn_lanes_fall_back_where_the_tuned_value_does_not_fit_the_head():
    caps = DeviceCaps.for_device(GPU).tuned_with(gdn_lanes_per_column=64)
    assert caps.gdn_lanes_for(128) == 64
    assert caps.gdn_lanes_for(32) == 8      # profile from a wider head: the GPU default
    assert caps.gdn_lanes_for(4) == 4       # the default capped at the head size
