"""Per-device tuning profiles: the kernel knobs `vkmtp tune` measured best on one GPU + driver.

A profile is JSON in the user's config dir, `$XDG_CONFIG_HOME/vkmtp/tuning/<device and driver>.json`
(~/.config when XDG_CONFIG_HOME is unset), keyed inside by `DeviceInfo.cache_tag`. It holds
  matvec         per quant type name ('Q4_K'): block_size, rows_per_group, use_subgroup
  gdn            lanes_per_column and reduction variant of the recurrent update
  flash_attn     n_splits and chunk of decode / verify attention; f16: prefill attention in float16 math (f16
                 products, f32 softmax statistics) rather than f32; honoured only where shader_float16 is enabled
  matmul         int8: prompt chunks through the int8 mat-mat (Q8_1 activations, integer dot products) rather
                 than the f32 one, per quant type name ({'Q4_K': true, 'Q8_0': false}, as `vkmtp tune`
                 measures it) or true / false for every quantized type (the older form, still read);
                 honoured only where the device enabled integer_dot_product
  mtp            per model file name: the draft n_max and p_min that gave the most tokens per second
Every field is optional; a missing one keeps the op's built-in default. A file that cannot be read, that
fails validation or that belongs to another device gives a warning and the defaults, never an error:
a stale profile must not stop a model from loading. VKMTP_TUNING=off skips loading altogether.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vkmtp import env
from vkmtp.device import DeviceCaps, DeviceInfo
from vkmtp.ops.matmul import INT8_TYPES
from vkmtp.ops.matvec import MatVecTuning, check_tuning
from vkmtp.ops.quant_types import SUPPORTED_TYPES

FORMAT_VERSION = 1
GDN_VARIANTS = ("shared", "shuffle", "clustered")


class ProfileError(ValueError):
    """A tuning file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class MtpTuning:
    n_max: int
    p_min: float


@dataclass
class TuningProfile:
    """Knobs for one device; None (or an absent key) means the op's default."""

    device: str = ""                                              # DeviceInfo.cache_tag it was measured on
    matvec: dict[str, MatVecTuning] = field(default_factory=dict)  # 'Q4_K' -> tuning
    gdn_lanes_per_column: int | None = None
    gdn_variant: str | None = None
    attn_n_splits: int | None = None
    attn_chunk: int | None = None
    attn_f16_math: bool | None = None                             # prefill attention math (DeviceCaps.attn_f16_math)
    # prefill mat-mat path: {'Q4_K': True, ...} per quant type, or one bool for every quantized type
    matmul_int8: bool | dict[str, bool] | None = None
    mtp: dict[str, MtpTuning] = field(default_factory=dict)       # model file name -> draft settings
    measurements: dict[str, Any] = field(default_factory=dict)    # what tune measured (for --show, docs)

    def matvec_by_type(self) -> dict[int, MatVecTuning]:
        """{ggml type id: tuning} for MatVec."""
        ids = {name: t for t, name in SUPPORTED_TYPES.items()}
        return {ids[name]: t for name, t in self.matvec.items()}

    def int8_by_type(self) -> dict[int, bool]:
        """{ggml type id: int8 prefill mat-mat} of a per-type `matmul_int8` ({} for the one-switch form)."""
        if not isinstance(self.matmul_int8, dict):
            return {}
        ids = {name: t for t, name in SUPPORTED_TYPES.items()}
        return {ids[name]: on for name, on in self.matmul_int8.items()}

    def apply(self, caps: DeviceCaps) -> DeviceCaps:
        """The device's kernel defaults with this profile's measured values in their place."""
        one_switch = None if isinstance(self.matmul_int8, dict) else self.matmul_int8
        return caps.tuned_with(matvec_per_type=self.matvec_by_type(), gdn_lanes_per_column=self.gdn_lanes_per_column,
                               gdn_variant=self.gdn_variant, attn_n_splits=self.attn_n_splits,
                               attn_chunk=self.attn_chunk, matmul_int8=one_switch,
                               matmul_int8_per_type=self.int8_by_type(), attn_f16_math=self.attn_f16_math)

    def mtp_for(self, model_path: str) -> MtpTuning | None:
        return self.mtp.get(os.path.basename(model_path))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION, "device": self.device,
            "matvec": {k: asdict(v) for k, v in sorted(self.matvec.items())},
            "gdn": {"lanes_per_column": self.gdn_lanes_per_column, "variant": self.gdn_variant},
            "flash_attn": {"n_splits": self.attn_n_splits, "chunk": self.attn_chunk, "f16": self.attn_f16_math},
            "matmul": {"int8": dict(sorted(self.matmul_int8.items())) if isinstance(self.matmul_int8, dict)
                       else self.matmul_int8},
            "mtp": {k: asdict(v) for k, v in sorted(self.mtp.items())},
            "measurements": self.measurements,
        }

    def describe(self) -> str:
        """A few lines for `vkmtp tune --show` and the engine's log."""
        lines = [f"device: {self.device or '(any)'}"]
        for name, t in sorted(self.matvec.items()):
            red = "subgroup" if t.use_subgroup else "shared-memory"
            lines.append(f"matvec {name:7} block_size {t.block_size:4}  rows/group {t.rows_per_group}  {red}")
        lines.append(f"gdn    lanes_per_column {_or_default(self.gdn_lanes_per_column)}  "
                     f"variant {_or_default(self.gdn_variant)}")
        lines.append(f"attn   n_splits {_or_default(self.attn_n_splits)}  "
                     f"chunk {_or_default(self.attn_chunk)}  f16 math (prefill) {_or_default(self.attn_f16_math)}")
        lines += self._describe_matmul()
        for model, m in sorted(self.mtp.items()):
            lines.append(f"mtp    {model}: --spec-draft-n-max {m.n_max} --spec-draft-p-min {m.p_min:g}")
        return "\n".join(lines)

    def _describe_matmul(self) -> list[str]:
        """The prefill mat-mat path per quant type, with the int8 / f32 speed `vkmtp tune` measured."""
        if not isinstance(self.matmul_int8, dict):
            return [f"matmul int8 (prefill, every quant type) {_or_default(self.matmul_int8)}"]
        measured = _mapping(_mapping(self.measurements.get("matmul")).get("types"))
        lines = []
        for name, on in sorted(self.matmul_int8.items()):
            speed = _mapping(measured.get(name)).get("int8_speedup")
            note = f"  (int8 {speed:.2f}x the f32 speed)" if isinstance(speed, (int, float)) else ""
            lines.append(f"matmul {name:7} prefill {'int8 (Q8_1 activations)' if on else 'f32'}{note}")
        return lines


def _mapping(value) -> dict:
    """`value` if it is a dict, else {} (measurements are informative: a hand-edited entry must not break --show)."""
    return value if isinstance(value, dict) else {}


def _or_default(value) -> str:
    return "default" if value is None else str(value)


def config_dir() -> Path:
    return env.tuning_dir()


def profile_path(info: DeviceInfo) -> Path:
    """One file per device + driver: the name is the cache tag with anything but [A-Za-z0-9._-] as '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{info.name} {info.driver_name} {info.driver_info}").strip("_")
    return config_dir() / f"{name[:120] or 'device'}.json"


def parse_profile(data: Any, info: DeviceInfo, source: str) -> TuningProfile:
    """Validate decoded JSON against the device; ProfileError naming `source` and the field otherwise."""
    def fail(problem: str) -> ProfileError:
        return ProfileError(f"{source}: {problem}")

    if not isinstance(data, dict):
        raise fail("not a JSON object")
    if data.get("version") != FORMAT_VERSION:
        raise fail(f"format version {data.get('version')!r}, this vkmtp reads {FORMAT_VERSION}")
    if data.get("device") != info.cache_tag:
        raise fail(f"measured on {data.get('device')!r}, not on this device ({info.cache_tag!r}); "
                   f"run `vkmtp tune` again")
    profile = TuningProfile(device=info.cache_tag)
    for name, t in _section(data, "matvec", fail).items():
        if name not in SUPPORTED_TYPES.values():
            raise fail(f"matvec: unknown quant type {name!r}")
        if not isinstance(t, dict) or set(t) != {"block_size", "rows_per_group", "use_subgroup"}:
            raise fail(f"matvec.{name}: needs exactly block_size, rows_per_group, use_subgroup")
        tuning = MatVecTuning(_int(t["block_size"], f"matvec.{name}.block_size", fail),
                              _int(t["rows_per_group"], f"matvec.{name}.rows_per_group", fail),
                              _bool(t["use_subgroup"], f"matvec.{name}.use_subgroup", fail))
        try:
            check_tuning(info, tuning)
        except ValueError as exc:
            raise fail(f"matvec.{name}: {exc}") from None
        profile.matvec[name] = tuning
    gdn = _section(data, "gdn", fail)
    lanes = gdn.get("lanes_per_column")
    if lanes is not None:
        lanes = _int(lanes, "gdn.lanes_per_column", fail)
        if lanes & (lanes - 1) or lanes > info.max_workgroup_invocations:
            raise fail(f"gdn.lanes_per_column {lanes} is not a power of two "
                       f"<= {info.max_workgroup_invocations}")
        profile.gdn_lanes_per_column = lanes
    variant = gdn.get("variant")
    if variant is not None:
        if variant not in GDN_VARIANTS:
            raise fail(f"gdn.variant {variant!r} is not one of {GDN_VARIANTS}")
        needs = {"shuffle": info.has_subgroup_shuffle,
                 "clustered": info.has_subgroup_arithmetic and info.has_subgroup_clustered}
        if not needs.get(variant, True):
            raise fail(f"gdn.variant {variant!r} needs subgroup operations this device lacks")
        profile.gdn_variant = variant
    attn = _section(data, "flash_attn", fail)
    if attn.get("n_splits") is not None:
        profile.attn_n_splits = _int(attn["n_splits"], "flash_attn.n_splits", fail, hi=64)
    if attn.get("chunk") is not None:
        profile.attn_chunk = _int(attn["chunk"], "flash_attn.chunk", fail, hi=1 << 16)
        if profile.attn_chunk % 64:
            raise fail(f"flash_attn.chunk {profile.attn_chunk} is not a multiple of 64 (the block size)")
    if attn.get("f16") is not None:
        profile.attn_f16_math = _bool(attn["f16"], "flash_attn.f16", fail)
    profile.matmul_int8 = _matmul_int8(_section(data, "matmul", fail).get("int8"), fail)
    for model, m in _section(data, "mtp", fail).items():
        if not isinstance(m, dict) or set(m) != {"n_max", "p_min"}:
            raise fail(f"mtp.{model}: needs exactly n_max and p_min")
        p_min = m["p_min"]
        if not isinstance(p_min, (int, float)) or isinstance(p_min, bool) or not 0.0 <= p_min <= 1.0:
            raise fail(f"mtp.{model}.p_min must be a number in [0, 1], found {p_min!r}")
        profile.mtp[model] = MtpTuning(_int(m["n_max"], f"mtp.{model}.n_max", fail, hi=7), float(p_min))
    measured = data.get("measurements", {})
    profile.measurements = measured if isinstance(measured, dict) else {}
    return profile


INT8_TYPE_NAMES = tuple(SUPPORTED_TYPES[t] for t in INT8_TYPES)


def _matmul_int8(value: Any, fail) -> bool | dict[str, bool] | None:
    """matmul.int8: null, true / false (every quantized type) or {quant type name: true / false}."""
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        raise fail(f"matmul.int8 must be true or false, or an object {{quant type: true or false}}, "
                   f"found {value!r}")
    for name, on in value.items():
        if name not in INT8_TYPE_NAMES:
            raise fail(f"matmul.int8: {name!r} is not a quantized type the int8 mat-mat takes "
                       f"({', '.join(INT8_TYPE_NAMES)})")
        _bool(on, f"matmul.int8.{name}", fail)
    return dict(value)


def _section(data: dict, key: str, fail) -> dict:
    value = data.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"'{key}' must be an object, found {type(value).__name__}")
    return value


def _int(value: Any, where: str, fail, hi: int = 1 << 20) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise fail(f"{where} must be an integer in 1..{hi}, found {value!r}")
    return value


def _bool(value: Any, where: str, fail) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{where} must be true or false, found {value!r}")
    return value


def load_profile(info: DeviceInfo, path: str | os.PathLike | None = None, warn=None) -> TuningProfile | None:
    """The device's profile, or None (defaults) when there is none, it is disabled (VKMTP_TUNING=off) or it
    is unusable; the last case is reported through `warn` (default: a line on stderr)."""
    if env.tuning_disabled():
        return None
    file = Path(path) if path is not None else profile_path(info)
    if not file.exists():
        return None
    warn = warn or (lambda msg: print(f"vkmtp: warning: {msg}", file=sys.stderr))
    try:
        data = json.loads(file.read_text())
        return parse_profile(data, info, str(file))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warn(f"tuning profile {file} could not be read ({exc}); using default kernel settings")
    except ProfileError as exc:
        warn(f"tuning profile ignored, using default kernel settings: {exc}")
    return None


def save_profile(profile: TuningProfile, info: DeviceInfo, path: str | os.PathLike | None = None) -> Path:
    """Write `profile` for `info` (atomically: a crash never leaves half a file) and return the path."""
    profile.device = info.cache_tag
    parse_profile(json.loads(json.dumps(profile.to_json())), info, "<profile to save>")  # refuse bad values
    file = Path(path) if path is not None else profile_path(info)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(profile.to_json(), indent=1) + "\n")
    os.replace(tmp, file)
    return file
