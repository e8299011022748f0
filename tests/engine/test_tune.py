"""`vkmtp tune --quick` end to end on the test device: it writes a profile into the config dir, and a
VulkanEngine started afterwards loads it, builds its ops with those values and still decodes correctly."""

from __future__ import annotations

import dataclasses
import json
import os


from vkmtp.cli.main import main
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.gguf import GGMLType
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.tuning.sweeps import run
from vkmtp.tuning.profile import profile_path

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
    assert data["mtp"][os.path.basename(path)]["n_max"] in (1, 2)
    assert data["measurements"]["matvec"]["Q8_0"]["cols"] == [1, 4, 8]
    # the prompt chunks' GDN kernel: recurrent vs chunked timed at the model's GDN heads, one picked
    prefill = data["measurements"]["gdn_prefill"]
    assert data["gdn"]["chunked"] in (True, False) and "recurrent" in prefill["candidates"]
    assert any(k.startswith("chunked/") for k in prefill["candidates"])

    engine = VulkanEngine(path, config, device=device)
    try:
        t = engine.tuning
        assert t is not None and t.device == device.info.cache_tag
        assert engine.ops.matvec.tuning_for(GGMLType.Q8_0) == t.matvec["Q8_0"]
        assert engine.ops.attn.n_splits == t.attn_n_splits and engine.ops.attn.chunk == t.attn_chunk
        assert engine.ops.attn_mtp.n_splits == t.attn_n_splits
        if engine.cfg.ssm_d_state % t.gdn_lanes_per_column == 0:
            assert engine.ops.gdn.lanes_per_column == t.gdn_lanes_per_column
        assert engine.ops.gdn.variant == t.gdn_variant
        assert (engine.ops.gdn_prefill is not None) == t.gdn_chunked
        if t.gdn_chunked:
            assert (engine.ops.gdn_prefill.chunk, engine.ops.gdn_prefill.columns) == (t.gdn_chunk_tokens,
                                                                                  t.gdn_chunk_columns)
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


def test_tune_plot_without_matplotlib_is_a_clear_error(device, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["tune", "--quick", "--plot", str(tmp_path / "x.png")]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not profile_path(device.info).exists()
