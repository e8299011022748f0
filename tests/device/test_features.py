"""Optional device features: negotiated at device creation (kp extension), recorded in DeviceInfo/DeviceCaps,
restricted by VKMTP_FEATURES."""

import os

import pytest

from vkmtp import env
from vkmtp.device import Device
from vkmtp.device.info import FEATURE_NAMES


@pytest.mark.lanes
def test_enabled_features_follow_the_request(device):
    info = device.info
    assert info.enabled_features <= info.supported_features <= set(FEATURE_NAMES)
    if os.environ.get("VKMTP_FEATURES", "").lower() == "none":
        assert not info.enabled_features and not device.caps.int_dot and not device.caps.matmul_int8
    else:
        assert info.enabled_features == info.supported_features
    assert device.caps.features == info.enabled_features
    assert device.caps.int_dot == info.has_feature("integer_dot_product")


def test_a_device_with_one_feature(device):
    if "integer_dot_product" not in device.info.supported_features:
        pytest.skip("the device has no integer dot product")
    d = Device(device.info.index, features=["integer_dot_product"])
    try:
        assert d.info.enabled_features == {"integer_dot_product"} and d.caps.int_dot
    finally:
        d.destroy()


def test_unknown_feature_is_refused(device):
    with pytest.raises(ValueError, match="unknown device feature"):
        Device(device.info.index, features=["warp_drive"])


def test_env_spelling(monkeypatch):
    for value, want in [("", None), ("all", None), ("none", []), ("NONE", []),
                        ("shader_int8, integer_dot_product", ["shader_int8", "integer_dot_product"])]:
        monkeypatch.setenv("VKMTP_FEATURES", value)
        assert env.device_features() == want
