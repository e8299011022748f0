"""Re-run the op tests marked `lanes` on lavapipe at other subgroup sizes.

lavapipe's subgroup size follows LP_NATIVE_VECTOR_WIDTH (128 -> 4 lanes, 256 -> 8, 512 -> 16) and is fixed
when the driver loads, so each width needs its own process. NVIDIA runs 32 lanes, AMD 32 or 64, Intel 8-32:
a shader that assumes one width fails here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("width", ["128", "512"])
def test_op_tests_pass_at_other_subgroup_sizes(device, width):
    if not device.caps.lavapipe or os.environ.get("LP_NATIVE_VECTOR_WIDTH"):
        pytest.skip("only on lavapipe, from the default-width run")
    env = dict(os.environ, LP_NATIVE_VECTOR_WIDTH=width)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-m", "lanes and not gpu and not slow", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "ops")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
    if proc.returncode == 5:
        pytest.skip("no op test is marked `lanes` yet")
    assert proc.returncode == 0, f"op tests failed at LP_NATIVE_VECTOR_WIDTH={width}:\n{tail}"
