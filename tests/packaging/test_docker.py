"""The Dockerfile builds and its container serves, where a Docker daemon and the Debian base image are at hand
(a machine without them skips: the image cannot be built offline)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server.live_server import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "debian:12-slim"


def _docker_ready() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        return "no Docker daemon"
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, timeout=60).returncode != 0:
        return f"the base image {BASE_IMAGE} is not available locally"
    return None


@pytest.mark.slow
def test_the_image_builds_and_serves():
    reason = _docker_ready()
    if reason:
        pytest.skip(reason)
    subprocess.run(["docker", "build", "-t", "vkmtp-test", str(ROOT)], check=True, timeout=1800)
    port = free_port()
    container = subprocess.run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8080", "vkmtp-test"],
                               capture_output=True, text=True, check=True).stdout.strip()
    try:
        logs = lambda: subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout  # noqa: E731
        wait_until_serving(port, output=logs, timeout=300)
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True)
