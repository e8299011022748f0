"""The built wheel is the whole product: installed into a fresh venv (offline, from the set-up's wheelhouse) and
run from outside the checkout, it generates with MTP from the embedded model and serves; no `server` module."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.server.live_server import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _wheelhouse() -> tuple[Path, str]:
    """The set-up's wheel cache and the kp requirement of THIS checkout's patch (the cache keeps the wheels of
    earlier patches too, and pip would pick the highest local version label, not the current one)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_kp
    finally:
        sys.path.pop(0)
    house = build_kp.default_cache()
    kp = f"kp=={build_kp.KP_VERSION}+vkmtp{build_kp.ext_tag()}"
    if not any(house.glob(f"kp-{build_kp.KP_VERSION}+vkmtp{build_kp.ext_tag()}-*.whl")) \
            or not any(house.glob(".deps-*")):
        pytest.fail(f"{house} lacks the kp wheel ({kp}) or the dependency wheels: run tools/setup.sh")
    return house, kp


def _run(cmd: list[str], cwd: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "VKMTP_MODEL")}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_pyproject_lists_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "vkmtp").rglob("__init__.py")
    }
    listed = set(config["packages"])
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    for mapped, folder in config["package-dir"].items():
        assert (ROOT / folder / "__init__.py").is_file() and mapped in listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the built wheel and its dependencies; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    house, kp = _wheelhouse()
    offline = ["--no-index", "--find-links", str(house), "--disable-pip-version-check", "-q"]
    source = tmp / "source"  # a copy of the checkout without build leftovers (stale build/lib would ship)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "-w", str(tmp / "dist"), str(source)], tmp)
    (wheel,) = (tmp / "dist").glob("vkmtp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vkmtp/shaders/matvec.comp" in names and "vkmtp/shaders/common/dequant.glsl" in names
    assert any(n.startswith("vkmtp/models/vkmtp-demo-") and n.endswith(".gguf") for n in names)
    assert "vkmtp/server/app.py" in names
    assert not [n for n in names if n.split("/")[0] not in ("vkmtp",) and ".dist-info/" not in n]
    _run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], tmp)
    bin_dir = tmp / "venv" / "bin"
    _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", *offline, str(wheel), kp], tmp)
    return bin_dir


def test_the_installed_wheel_generates_with_mtp_from_outside_the_checkout(installed, tmp_path):
    where = _run(
        [str(installed / "python"), "-c", "import vkmtp, vkmtp.server; print(vkmtp.__file__)"], tmp_path
    ).stdout.strip()
    assert "site-packages" in where and not where.startswith(str(ROOT))
    no_server = subprocess.run([str(installed / "python"), "-c", "import server"], cwd=tmp_path, capture_output=True)
    assert no_server.returncode != 0 and b"No module named 'server'" in no_server.stderr
    out = _run(
        [str(installed / "vkmtp"), "generate", "-p", "def parse_args(argv=None):", "-n", "24", "--temp", "0",
         "--json"],
        tmp_path,
    ).stdout
    report = json.loads(out[out.index("{"):])
    assert report["timings"]["predicted_n"] == 24 and report["timings"]["draft_n"] > 0
    assert "vkmtp-demo-" in report["model"]


def test_the_installed_wheel_serves(installed, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [str(installed / "vkmtp"), "serve", "--port", str(port), "--backend", "reference", "--log-level", "warning"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until_serving(port, proc, proc.stdout.read, timeout=300)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json() == {"status": "ok"}
        body = {"prompt": "import os", "n_predict": 4, "ignore_eos": True}
        assert httpx.post(f"http://127.0.0.1:{port}/completion", json=body, timeout=120).json()["tokens_predicted"] == 4
    finally:
        proc.terminate()
        proc.wait(30)


def test_no_module_finds_files_from_its_own_path():
    """Code finds its data through importlib.resources, never by walking from __file__ into the checkout."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in [*(ROOT / "vkmtp").rglob("*.py"), *(ROOT / "server").rglob("*.py")]
        if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(ast.parse(path.read_text())))
    ]
    assert not offenders, offenders
