"""Re-run the op tests on the word-only path: the device created with no optional feature (VKMTP_FEATURES=none).

The default run enables every optional feature the device supports (on lavapipe: 16/8-bit storage, float16 and
int8 arithmetic, integer dot products, subgroup size control); shaders pick feature variants from the capability
record, so each path needs its own process (its own VkDevice). The subset marked `lanes` runs here too.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_op_tests_pass_without_optional_features(device):
    if os.environ.get("VKMTP_FEATURES", "").lower() == "none" or os.environ.get("LP_NATIVE_VECTOR_WIDTH"):
        pytest.skip("only from the default run")
    if not device.info.enabled_features:
        pytest.skip("this device enabled no optional feature: the default run is the word-only path")
    env = dict(os.environ, VKMTP_FEATURES="none")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-m", "lanes and not gpu and not slow", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "ops"), str(ROOT / "tests" / "device" / "test_features.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
    assert proc.returncode == 0, f"op tests failed with VKMTP_FEATURES=none:\n{tail}"
