"""Shared fixtures: one Vulkan device per test session (skips cleanly where none exists)."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--device-index", default=None, help="Vulkan device index (default: best found)")


@pytest.fixture(scope="session")
def device(request):
    from vkmtp.device import Device, NoDeviceError

    try:
        dev = Device(request.config.getoption("--device-index"))
    except NoDeviceError as exc:
        pytest.skip(f"no Vulkan device: {exc}")
    yield dev
    dev.destroy()


@pytest.fixture(scope="session")
def lanes(device) -> int:
    """The device's subgroup size (lavapipe: LP_NATIVE_VECTOR_WIDTH / 32)."""
    return device.info.subgroup_size


def lavapipe_width() -> str:
    return os.environ.get("LP_NATIVE_VECTOR_WIDTH", "256")
