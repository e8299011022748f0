"""Tuning profiles (vkmtp.tuning.profile): round trip, where they live, and every way a file can be unusable, which
must give a warning naming the problem and the defaults, never an exception."""

from __future__ import annotations

import json

import pytest

from vkmtp.device.info import DeviceInfo
from vkmtp.ops.matvec import MatVecTuning
from vkmtp.tuning.profile import MtpTuning, TuningProfile, load_profile, profile_path, save_profile

GPU = DeviceInfo(index=0, name="Radeon RX 7600 (RADV NAVI33)", vendor_id=0x1002, device_id=1, kind="discrete",
                 driver_name="radv", driver_info="Mesa 24.0.5", api_version="1.3.0", subgroup_size=64,
                 subgroup_ops={"arithmetic": True, "shuffle": True, "clustered": False},
                 max_shared_memory=65536, max_workgroup_invocations=1024)
OTHER = DeviceInfo(**{**GPU.__dict__, "driver_info": "Mesa 25.1.0"})


def sample() -> TuningProfile:
    return TuningProfile(matvec={"Q4_K": MatVecTuning(64, 2, True), "Q8_0": MatVecTuning(128, 1, False)},
                         gdn_lanes_per_column=16, gdn_variant="shuffle", attn_n_splits=8, attn_chunk=256,
                         matmul_int8=True, attn_f16_math=False, mtp={"Qwen3.6-27B-Q4_K_M.gguf": MtpTuning(3, 0.4)}, measurements={"quick": False})


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("VKMTP_TUNING", raising=False)
    return tmp_path


def test_round_trip_in_the_config_dir(config_home):
    path = save_profile(sample(), GPU)
    assert path == profile_path(GPU)
    assert path.parent == config_home / "vkmtp" / "tuning"
    assert path.name == "Radeon_RX_7600_RADV_NAVI33_radv_Mesa_24.0.5.json"
    got = load_profile(GPU)
    assert got.matvec == sample().matvec
    assert got.matvec_by_type() == {12: MatVecTuning(64, 2, True), 8: MatVecTuning(128, 1, False)}
    knobs = (got.gdn_lanes_per_column, got.gdn_variant, got.attn_n_splits, got.attn_chunk)
    assert knobs == (16, "shuffle", 8, 256) and got.matmul_int8 is True and got.attn_f16_math is False
    assert got.mtp_for("/models/Qwen3.6-27B-Q4_K_M.gguf") == MtpTuning(3, 0.4)
    assert got.device == GPU.cache_tag
    assert "Q4_K" in got.describe() and "--spec-draft-n-max 3" in got.describe()


def test_no_file_and_switched_off_give_defaults(config_home, monkeypatch):
    assert load_profile(GPU) is None
    save_profile(sample(), GPU)
    monkeypatch.setenv("VKMTP_TUNING", "off")
    assert load_profile(GPU) is None


def edit(data: dict, path: str, value) -> dict:
    *keys, last = path.split(".")
    node = data
    for k in keys:
        node = node[k]
    node[last] = value
    return data


@pytest.mark.parametrize("change,message", [
    (lambda d: edit(d, "version", 99), "format version 99"),
    (lambda d: edit(d, "matvec.Q4_K.block_size", 48), "block_size 48 must be a power of 2"),
    (lambda d: edit(d, "matvec.Q4_K.block_size", 32), "not a multiple of the subgroup size 64"),
    (lambda d: edit(d, "matvec.Q4_K.rows_per_group", "2"), "rows_per_group must be an integer"),
    (lambda d: edit(d, "matvec.Q4_K.use_subgroup", 1), "use_subgroup must be true or false"),
    (lambda d: edit(d, "matvec.Q9_X", {"block_size": 64, "rows_per_group": 1, "use_subgroup": False}),
     "unknown quant type 'Q9_X'"),
    (lambda d: edit(d, "matvec.Q4_K", {"block_size": 64}), "needs exactly block_size"),
    (lambda d: edit(d, "matvec.Q8_0.rows_per_group", 64), "shared memory"),
    (lambda d: edit(d, "gdn.lanes_per_column", 12), "not a power of two"),
    (lambda d: edit(d, "gdn.variant", "clustered"), "subgroup operations this device lacks"),
    (lambda d: edit(d, "gdn.variant", "fast"), "is not one of"),
    (lambda d: edit(d, "flash_attn.n_splits", 0), "flash_attn.n_splits must be an integer in 1..64"),
    (lambda d: edit(d, "flash_attn.chunk", 100), "not a multiple of 64"),
    (lambda d: edit(d, "matmul.int8", "yes"), "matmul.int8 must be true or false"),
    (lambda d: edit(d, "flash_attn.f16", 1), "flash_attn.f16 must be true or false"),
    (lambda d: d["mtp"].update({"a.gguf": {"n_max": 9, "p_min": 0.1}}), "n_max must be an integer in 1..7"),
    (lambda d: d["mtp"].update({"a.gguf": {"n_max": 2, "p_min": 1.5}}), "p_min must be a number in [0, 1]"),
    (lambda d: edit(d, "matvec", [1, 2]), "'matvec' must be an object"),
])
def test_invalid_values_warn_and_give_defaults(config_home, change, message):
    path = save_profile(sample(), GPU)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    warnings = []
    assert load_profile(GPU, warn=warnings.append) is None
    assert len(warnings) == 1 and str(path) in warnings[0] and message in warnings[0], warnings


def test_foreign_device_is_refused(config_home):
    path = save_profile(sample(), GPU)
    warnings = []
    assert load_profile(OTHER, path=path, warn=warnings.append) is None
    assert "not on this device" in warnings[0] and "Mesa 24.0.5" in warnings[0]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[1, 2, 3]", b""])
def test_unreadable_file_warns(config_home, content):
    path = profile_path(GPU)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    warnings = []
    assert load_profile(GPU, warn=warnings.append) is None
    assert len(warnings) == 1 and str(path) in warnings[0]


def test_save_refuses_invalid_values(config_home):
    bad = sample()
    bad.matvec["Q4_K"] = MatVecTuning(48, 1, False)
    with pytest.raises(ValueError, match="block_size 48"):
        save_profile(bad, GPU)
    assert not profile_path(GPU).exists()
