"""Kernel choices per device: built-in defaults per class of driver, overlaid by the device's tuning profile.

`DeviceInfo` holds what the driver reports (type, subgroup width and operations, limits). `DeviceCaps` is what
the op wrappers do with it: the workgroup shapes, lane counts and split counts they use when a caller does not
pass one. It is built in two steps:

  1. `DeviceCaps.for_device(info)`: the first entry of `DRIVERS` that matches the device gives the defaults
     (`Device.caps` holds this record);
  2. `caps.tuned(...)`: the values a tuning profile measured replace them (`TuningProfile.apply`, used by the
     engine's op set in vkmtp/graph/forward.py).

Optional device features (vkmtp.device.info.FEATURE_NAMES) enter the record as `features` (those enabled on
the device: none with VKMTP_FEATURES=none) and as the kernel choices made from them (`int_dot`,
`matmul_int8` and its per-type overrides `matmul_int8_per_type`, `attn_f16_loads`, `attn_f16_math`); op wrappers
turn these into shader defines.

A new driver that needs other defaults is one more `DriverDefaults` entry in `DRIVERS`, matched by device type
and, where that is not enough, by driver name; nothing in vkmtp/ops tests a driver by name.
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field, replace

from vkmtp.device.info import DeviceInfo


@dataclass(frozen=True)
class MatVecTuning:
    """Mat-vec workgroup shape: block_size threads (power of 2) share each row; rows_per_group rows per
    workgroup; use_subgroup picks the subgroupAdd reduction over the shared-memory tree."""

    block_size: int
    rows_per_group: int
    use_subgroup: bool


@dataclass(frozen=True)
class DriverDefaults:
    """Built-in kernel defaults for one class of Vulkan driver (before any tuning profile).

    kinds / driver_names: the devices it applies to (DeviceInfo.kind, DeviceInfo.driver_name); empty matches any.
    """

    name: str
    kinds: tuple[str, ...]
    driver_names: tuple[str, ...]
    matvec_block_size: int       # mat-vec threads per workgroup (raised to the subgroup size; 0: one subgroup)
    matvec_rows_per_group: int   # weight rows per mat-vec workgroup
    gdn_lanes_per_column: int    # lanes sharing one value column of the GDN state (capped at head_dim)
    compute_units: int           # workgroups the device runs at once when Vulkan does not say (GPUs)
    matmul_tiles: str            # tile set of vkmtp.ops.matmul.TILE_TABLE
    attn_f16_loads: bool         # prefill attention reads f16 caches through 16-bit storage where enabled
    attn_f16_math: bool          # prefill attention multiplies in float16 where shaderFloat16 is enabled

    def matches(self, info: DeviceInfo) -> bool:
        return ((not self.kinds or info.kind in self.kinds)
                and (not self.driver_names or info.driver_name in self.driver_names))


# First match wins. Numbers measured with `vkmtp tune` / tools/bench_kernels.py (docs/TUNING.md):
# - CPU drivers (VK_PHYSICAL_DEVICE_TYPE_CPU: Mesa's lavapipe, SwiftShader) run a workgroup on one CPU thread:
#   one subgroup of threads and 16 rows per mat-vec workgroup (every activation load then feeds 16 rows, which
#   is what a second column costs there: 4 columns take 1.1-1.35x the time of 1 instead of 2.2-2.6x with
#   32 threads x 4 rows, docs/PERFORMANCE.md), one lane per GDN column avoids slow cross-lane
#   operations (2x faster on lavapipe), the compute units are the host's cores (0 here: os.cpu_count()), and
#   the matmul uses its CPU tile set. Prefill attention keeps 32-bit word loads: lavapipe's 16-bit loads made it
#   0.98-1.45x slower (docs/PERFORMANCE.md), and f32 math: its float16 math (F16_MATH) ran 0.79-0.93x the speed
#   of f32 (tools/bench_kernels.py --prefill-attn, docs/PERFORMANCE.md).
# - GPUs: llama.cpp's defaults for NVIDIA / RDNA (2 mat-vec rows per workgroup, 8 lanes per GDN column from its
#   sweep on gfx1150); core Vulkan does not report compute units, so 16 (a mid-size GPU: decode attention then
#   runs 32 workgroups per token over the KV heads) until a tuning profile measures the split count. Prefill
#   attention in float16 math as llama.cpp's Vulkan flash attention (f16 products, f32 softmax statistics; no
#   greedy token of the engine's fixtures changes, tests/engine/test_f16_attention_prefill.py), until a GPU
#   measurement or the profile's flash_attn.f16 says otherwise.
DRIVERS: tuple[DriverDefaults, ...] = (
    DriverDefaults("cpu", kinds=("cpu",), driver_names=(), matvec_block_size=0, matvec_rows_per_group=16,
                   gdn_lanes_per_column=1, compute_units=0, matmul_tiles="cpu", attn_f16_loads=False,
                   attn_f16_math=False),
    DriverDefaults("gpu", kinds=(), driver_names=(), matvec_block_size=32, matvec_rows_per_group=2,
                   gdn_lanes_per_column=8, compute_units=16, matmul_tiles="gpu", attn_f16_loads=True,
                   attn_f16_math=True),
)

# The int8 prefill matmul (Q8_1 activations) is off by default: on the engine's random fixture models it moves
# first-token logits by 2-5 % of the logit scale (dense Q4_K/Q8_0, MoE Q8_0) and up to 30 % on MoE Q4_K, where
# a flipped expert choice changes the greedy token (docs/PERFORMANCE.md). MatMul(int8=True) selects it, and
# a tuning profile's matmul.int8 (one switch, or one per quant type as `vkmtp tune` measures it) selects it for
# the engine's prompt chunks (where integer_dot_product is enabled).
MATMUL_INT8_DEFAULT = False

# Mesa's lavapipe reports this driver name; its subgroup width follows LP_NATIVE_VECTOR_WIDTH (tests/ops).
LAVAPIPE_DRIVER = "llvmpipe"


def driver_defaults(info: DeviceInfo) -> DriverDefaults:
    return next(d for d in DRIVERS if d.matches(info))


@dataclass(frozen=True)
class DeviceCaps:
    """The kernel shapes op wrappers use on one device unless the caller passes its own.

    None in a tuned field means "the op decides" (gdn_variant: the first variant the device supports;
    attn_chunk: twice the attention block size).
    """

    driver: str                         # the DRIVERS entry that matched
    cpu_driver: bool                    # a CPU implementation of Vulkan (device type CPU), e.g. lavapipe
    lavapipe: bool                      # Mesa's lavapipe (its subgroup width can be changed by environment)
    workgroup_size: int                 # default for one-workgroup-per-row reductions: max(64, subgroup)
    matvec: MatVecTuning                # every quant type without a tuned shape
    matvec_per_type: dict = field(default_factory=dict, hash=False)   # ggml type id -> MatVecTuning (tuned)
    gdn_lanes_per_column: int = 8
    gdn_variant: str | None = None
    attn_n_splits: int | None = None   # decode attention splits (None: from compute_units and the context)
    attn_chunk: int | None = None
    compute_units: int = 16             # workgroups the device runs at once (decode attention's split count)
    matmul_tiles: str = "gpu"
    tuned: bool = False                 # a tuning profile was applied
    features: frozenset = frozenset()   # optional device features enabled (DeviceInfo.enabled_features)
    int_dot: bool = False               # OpSDot on packed int8 (shaderIntegerDotProduct): INT_DOT shader variants
    f16_storage: bool = False           # 16-bit storage buffers enabled: F16_LOADS shader variants may run
    attn_f16_loads: bool = False        # prefill attention reads f16 KV through it (f16_storage and driver default)
    f16_math: bool = False              # shaderFloat16 enabled: F16_MATH shader variants may run
    attn_f16_math: bool = False         # prefill attention's products in float16, softmax statistics in f32
                                        # (vkmtp.ops.flash_attn); decode / verify attention is unaffected
    matmul_int8: bool = False           # prefill matmul of quantized weights with Q8_1 activations and
                                        # integer dot products (vkmtp.ops.matmul); decode mat-vec is unaffected
    matmul_int8_per_type: dict = field(default_factory=dict, hash=False)   # ggml type id -> bool (tuned),
                                        # over matmul_int8 for that weight type
    # longest queue submission (ms): a driver may reset a GPU whose one submission runs longer than its lockup
    # timeout (2 s is common on discrete GPUs); integrated / UMA GPUs share the desktop and CPU drivers the
    # host's cores, so they get a quarter of it
    max_submit_ms: float = 2000.0

    @staticmethod
    def for_device(info: DeviceInfo) -> "DeviceCaps":
        d = driver_defaults(info)
        return DeviceCaps(
            driver=d.name, cpu_driver=info.kind == "cpu", lavapipe=info.driver_name == LAVAPIPE_DRIVER,
            workgroup_size=max(64, info.subgroup_size),
            matvec=MatVecTuning(max(d.matvec_block_size, info.subgroup_size), d.matvec_rows_per_group,
                                info.has_subgroup_arithmetic),
            gdn_lanes_per_column=d.gdn_lanes_per_column,
            compute_units=d.compute_units or os.cpu_count() or 1,
            matmul_tiles=d.matmul_tiles, features=frozenset(info.enabled_features),
            int_dot=info.has_feature("integer_dot_product"),
            f16_storage=info.has_feature("storage_buffer_16bit"),
            attn_f16_loads=d.attn_f16_loads and info.has_feature("storage_buffer_16bit"),
            f16_math=info.has_feature("shader_float16"),
            attn_f16_math=d.attn_f16_math and info.has_feature("shader_float16"),
            matmul_int8=MATMUL_INT8_DEFAULT and info.has_feature("integer_dot_product"),
            max_submit_ms=2000.0 if info.kind == "discrete" and not info.uma else 500.0)

    def tuned_with(self, matvec_per_type: dict | None = None, gdn_lanes_per_column: int | None = None,
                   gdn_variant: str | None = None, attn_n_splits: int | None = None,
                   attn_chunk: int | None = None, matmul_int8: bool | None = None,
                   matmul_int8_per_type: dict | None = None,
                   attn_f16_math: bool | None = None) -> "DeviceCaps":
        """These caps with measured values in place of the defaults; None keeps a field as it is."""
        def pick(value, current):
            return current if value is None else value

        return replace(self, matvec_per_type={**self.matvec_per_type, **(matvec_per_type or {})},
                       gdn_lanes_per_column=pick(gdn_lanes_per_column, self.gdn_lanes_per_column),
                       gdn_variant=pick(gdn_variant, self.gdn_variant),
                       attn_n_splits=pick(attn_n_splits, self.attn_n_splits),
                       attn_chunk=pick(attn_chunk, self.attn_chunk),
                       # the int8 prefill path is a feature path: never on a device without integer dot products
                       matmul_int8=pick(matmul_int8, self.matmul_int8) and self.int_dot,
                       matmul_int8_per_type={**self.matmul_int8_per_type,
                                             **{int(t): bool(on) and self.int_dot
                                                for t, on in (matmul_int8_per_type or {}).items()}},
                       # f16 attention math likewise: never on a device without shaderFloat16
                       attn_f16_math=pick(attn_f16_math, self.attn_f16_math) and self.f16_math,
                       tuned=True)

    def int8_for(self, ggml_type: int) -> bool:
        """Whether prompt chunks of this (quantized) weight type take the int8 mat-mat: its tuned choice, else
        the device-wide one."""
        return self.matmul_int8_per_type.get(int(ggml_type), self.matmul_int8)

    def gdn_lanes_for(self, head_dim: int) -> int:
        """Lanes per GDN column for this head size: the tuned/default value where it divides head_dim (a
        profile may come from a wider head), else the default capped at head_dim."""
        lanes = self.gdn_lanes_per_column
        if lanes <= head_dim and head_dim % lanes == 0:
            return lanes
        return min(DRIVER_BY_NAME[self.driver].gdn_lanes_per_column, head_dim)


DRIVER_BY_NAME = {d.name: d for d in DRIVERS}
