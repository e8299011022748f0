"""`vkmtp tune --quick` end to end on the test device: it writes a profile into the config dir, and a
VulkanEngine started afterwards loads it, builds its ops with those values and still decodes correctly."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from vkmtp.cli.main import main
from vkmtp.convert import synthetic
from vkmtp.convert.writer import write_gguf
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.gguf import GGMLType
from vkmtp.ops.quant_types import SUPPORTED_TYPES
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.tuning import kernel_cases, sweeps
from vkmtp.tuning.profile import FORMAT_VERSION, ProfileError, TuningProfile, parse_profile, profile_path
from vkmtp.tuning.sweeps import choose_int8, run
from vkmtp.tuning.timing import Timing

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7]


def greedy(engine: VulkanEngine, n: int = 6) -> list[int]:
    out = []
    for ev in engine.generate(Request(PROMPT, SamplingParams.greedy_params(), max_tokens=n)):
        out += ev.new_ids
    return out


def test_tune_quick_writes_a_profile_the_engine_loads(device, fixture_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("VKMTP_TUNING", raising=False)
    path = fixture_models("dense", "q8_0")
    config = EngineConfig(n_ctx=64, spec=SpecConfig(n_max=2))
    monkeypatch.setenv("VKMTP_TUNING", "off")
    untuned = VulkanEngine(path, config, device=device)
    assert untuned.tuning is None
    want = greedy(untuned)
    untuned.close()
    monkeypatch.delenv("VKMTP_TUNING")

    assert run(None, True, path, "Q8_0", False, None, device=device) == 0
    saved = profile_path(device.info)
    assert saved.parent == tmp_path / "vkmtp" / "tuning"
    data = json.loads(saved.read_text())
    assert data["device"] == device.info.cache_tag and set(data["matvec"]) == {"Q8_0"}
    assert data["gdn"]["lanes_per_column"] >= 1 and data["flash_attn"]["n_splits"] >= 1
    if device.caps.f16_math:   # prefill attention math measured both ways (VKMTP_FEATURES=none: f32 only)
        times = data["measurements"]["flash_attn_prefill"]
        assert data["flash_attn"]["f16"] == (times["f16_us"] < times["f32_us"])
    else:
        assert data["flash_attn"]["f16"] is None
    assert data["mtp"][os.path.basename(path)]["n_max"] in (1, 2)
    assert data["measurements"]["matvec"]["Q8_0"]["cols"] == [1, 4, 8]
    int8 = data["matmul"]["int8"]
    if device.caps.int_dot:   # the prefill mat-mat measured at the model's own Q8_0 shapes, both paths
        assert set(int8) == {"Q8_0"}
        m = data["measurements"]["matmul"]["types"]["Q8_0"]
        assert m["f32_ms"] > 0 and m["int8_ms"] > 0 and m["shapes"] and m["tokens"] == 64
        assert m["int8"] == int8["Q8_0"] == (m["int8_speedup"] >= data["measurements"]["matmul"]["margin"])
    else:                     # VKMTP_FEATURES=none: no int8 path on this device, nothing measured
        assert int8 is None and "matmul" not in data["measurements"]

    engine = VulkanEngine(path, config, device=device)
    try:
        t = engine.tuning
        assert t is not None and t.device == device.info.cache_tag
        assert engine.ops.matvec.tuning_for(GGMLType.Q8_0) == t.matvec["Q8_0"]
        assert engine.ops.attn.n_splits == t.attn_n_splits and engine.ops.attn.chunk == t.attn_chunk
        assert engine.ops.attn_mtp.n_splits == t.attn_n_splits
        assert engine.ops.attn_prefill.f16_math == bool(t.attn_f16_math)
        if engine.cfg.ssm_d_state % t.gdn_lanes_per_column == 0:
            assert engine.ops.gdn.lanes_per_column == t.gdn_lanes_per_column
        assert engine.ops.gdn.variant == t.gdn_variant
        assert engine.ops.matmul.uses_int8(GGMLType.Q8_0) == bool(int8 and int8["Q8_0"])
        assert greedy(engine) == want
    finally:
        engine.close()

    # draft settings the user did not give come from the profile (the CLI sets from_profile then)
    tuned_mtp = t.mtp_for(path)
    engine = VulkanEngine(path, dataclasses.replace(config, spec=SpecConfig(from_profile=True)), device=device)
    try:
        assert (engine.K, engine.config.spec.p_min) == (tuned_mtp.n_max, tuned_mtp.p_min)
    finally:
        engine.close()

    capsys.readouterr()
    assert main(["tune", "--show"]) == 0
    shown = capsys.readouterr().out
    assert str(saved) in shown and "matvec Q8_0" in shown
    assert ("matmul Q8_0" if device.caps.int_dot else "matmul int8 (prefill, every quant type) default") in shown


def test_tune_plot_without_matplotlib_is_a_clear_error(device, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["tune", "--quick", "--plot", str(tmp_path / "x.png")]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not profile_path(device.info).exists()


# --- the prefill mat-mat path per quant type (int8 with Q8_1 activations, or f32) -----------------------------

def test_int8_is_chosen_only_where_it_is_faster_by_the_margin():
    totals = {"Q4_K": {"f32": 2.0, "int8": 1.0}, "Q8_0": {"f32": 1.1, "int8": 1.0},
              "Q6_K": {"f32": 1.0, "int8": 2.0}, "Q5_K": {"f32": 1.0, "int8": None}}
    assert choose_int8(totals, margin=1.15) == {"Q4_K": True, "Q8_0": False, "Q6_K": False, "Q5_K": False}
    assert choose_int8(totals, margin=1.05)["Q8_0"] is True
    assert choose_int8({"Q4_0": {"f32": 1.15, "int8": 1.0}}, margin=1.15) == {"Q4_0": True}


def fake_timings(device, speed: dict[str, dict[str, float]]):
    """time_recorded stand-in: seconds per repetition from `speed` {type: {path: s}}, the path and type read from
    the dispatch labels of the recorded work (int8: matmul_q8.comp)."""
    def timed(dev, record, reps, runs=3):
        rec = device.recorder()
        record(rec, 0)
        (path, name), = {kernel_of(lab) for lab in rec.labels}   # one kernel and type per recording
        rec.destroy()
        return Timing(speed[name][path], "host")
    return timed


def test_sweep_matmul_chooses_per_type_from_its_timings(device, monkeypatch):
    """The sweep checks both paths at each shape and picks from the (here injected) times, summed with counts
    (with VKMTP_FEATURES=none the int8 kernel runs its bit-field fallback; `run` measures it only with OpSDot)."""
    speed = {"Q4_K": {"f32": 3e-3, "int8": 1e-3}, "Q8_0": {"f32": 1.05e-3, "int8": 1e-3}}
    monkeypatch.setattr(sweeps, "time_recorded", fake_timings(device, speed))
    shapes = {"Q4_K": [(96, 512, 2), (80, 256, 1)], "Q8_0": [(64, 256, 3)]}
    chosen, measured = sweeps.sweep_matmul(device, shapes, sweeps.Sweep(quick=True))
    assert chosen == {"Q4_K": True, "Q8_0": False}
    assert measured["types"]["Q4_K"]["f32_ms"] == pytest.approx(3 * 3.0)      # 2 + 1 weights at 3 ms
    assert measured["types"]["Q4_K"]["int8_speedup"] == pytest.approx(3.0)
    assert measured["types"]["Q8_0"]["int8_ms"] == pytest.approx(3 * 1.0)
    assert measured["types"]["Q8_0"]["int8"] is False and measured["margin"] == sweeps.INT8_MARGIN


def test_sweep_matmul_drops_an_int8_path_that_fails_its_check(device, monkeypatch):
    monkeypatch.setattr(sweeps, "time_recorded", fake_timings(device, {"Q4_0": {"f32": 9.0, "int8": 1.0}}))
    monkeypatch.setattr(kernel_cases, "matmul_q8_1",
                        lambda *a, **k: np.full((len(a[4]), a[2]), 1e3))           # a wrong reference
    chosen, measured = sweeps.sweep_matmul(device, {"Q4_0": [(64, 64, 1)]}, sweeps.Sweep(quick=True))
    assert chosen == {"Q4_0": False} and measured["types"]["Q4_0"]["int8_ms"] is None


def two_type_model(tmp_path) -> str:
    """k256 dense model in Q4_K with every FFN down projection in Q6_K (both run on the prefill mat-mat)."""
    spec = synthetic.K256_DENSE
    path = str(tmp_path / "k256-dense-q4_k-down-q6_k.gguf")
    types = write_gguf(synthetic.random_state_dict(spec, 10), synthetic.hf_config(spec), path, file_type="q4_k",
                       type_overrides={"blk.*.ffn_down.weight": "q6_k"})
    assert {"Q4_K", "Q6_K"} <= set(types.values())
    return path


def kernel_of(label: str) -> tuple[str, str] | None:
    """('int8' | 'f32', weight type name) of a mat-mat dispatch label (`{shader variant}_{tile}`), else None."""
    if not label.startswith("matmul"):
        return None
    name = next(n for n in SUPPORTED_TYPES.values() if f"_data_a_{n.lower()}_" in label)
    return ("int8" if label.startswith("matmul_q8_") else "f32"), name


def prefill_kernels(engine: VulkanEngine) -> dict[str, set[str]]:
    """{'int8' | 'f32': weight type names} of the mat-mat dispatches in the engine's recorded prompt chunks."""
    seen: dict[str, set[str]] = {"int8": set(), "f32": set()}
    for key, graph in engine._graphs.items():
        if key[0] == "prefill":
            for rec in graph.rec.recs:
                for path, name in filter(None, map(kernel_of, rec.labels)):
                    seen[path].add(name)
    return seen


@pytest.mark.parametrize("int8_type", ["Q4_K", "Q6_K"])
def test_profile_sends_only_its_int8_types_through_the_int8_matmul(device, tmp_path, int8_type):
    path = two_type_model(tmp_path)
    other = ({"Q4_K", "Q6_K"} - {int8_type}).pop()
    profile = TuningProfile(matmul_int8={int8_type: True, other: False})
    engine = VulkanEngine(path, EngineConfig(n_ctx=64, ubatch=16, spec=SpecConfig(enabled=False)), device=device,
                          tuning=profile)
    try:
        got = greedy(engine, 2)
        seen = prefill_kernels(engine)
        if device.caps.int_dot:
            assert engine.ops.matmul.int8_types() == (getattr(GGMLType, int8_type),)
            assert seen == {"int8": {int8_type}, "f32": {other}}
        else:   # VKMTP_FEATURES=none: the profile's choice is not honoured without integer dot products
            assert engine.ops.matmul.int8_types() == ()
            assert seen == {"int8": set(), "f32": {"Q4_K", "Q6_K"}}
        assert len(got) == 2
    finally:
        engine.close()


def test_matmul_int8_profile_values(device):
    """matmul.int8 per type (what tune writes), the older single true / false, and bad values named."""
    info = device.info
    base = {"version": FORMAT_VERSION, "device": info.cache_tag}
    per_type = parse_profile({**base, "matmul": {"int8": {"Q4_K": True, "Q8_0": False}}}, info, "p.json")
    assert per_type.int8_by_type() == {int(GGMLType.Q4_K): True, int(GGMLType.Q8_0): False}
    assert per_type.to_json()["matmul"] == {"int8": {"Q4_K": True, "Q8_0": False}}
    assert "matmul Q4_K    prefill int8" in per_type.describe() and "matmul Q8_0    prefill f32" in per_type.describe()
    caps = per_type.apply(device.caps)
    assert caps.int8_for(GGMLType.Q4_K) == device.caps.int_dot and not caps.int8_for(GGMLType.Q8_0)
    assert not caps.int8_for(GGMLType.Q6_K)                                  # not named: the default (off)
    old = parse_profile({**base, "matmul": {"int8": True}}, info, "p.json")
    assert old.matmul_int8 is True and old.apply(device.caps).int8_for(GGMLType.Q6_K) == device.caps.int_dot
    for value, message in (("yes", "matmul.int8 must be true or false, or an object"),
                           ({"Q4_K": "on"}, "matmul.int8.Q4_K must be true or false"),
                           ({"F16": True}, "matmul.int8: 'F16' is not a quantized type"),
                           ({"Q9_X": False}, "matmul.int8: 'Q9_X' is not a quantized type")):
        with pytest.raises(ProfileError, match=re.escape(message)) as exc:
            parse_profile({**base, "matmul": {"int8": value}}, info, "p.json")
        assert str(exc.value).startswith("p.json: ")
