"""How many KV positions one prefill attention workgroup (shaders/flash_attn.comp, one pass, no windows) reads
before the driver ends its loops: lavapipe ends all loops of an invocation after 65535 iterations in all.

q_tile tokens (a full workgroup) at the last positions of an n_ctx cache, q = 0 (every score equal: uniform
weights over the positions the kernel reaches) and V[r][0] = r / n_ctx: output 0 is the mean of r / n_ctx over
the positions read, so a workgroup that read positions [0, m) gives m = 2 * n_ctx * out + 1 (within a few
positions: f16 rounding of V). Windows are off here (caps.loop_iterations None): the point is one pass's reach.

    PYTHONPATH=. .venv/bin/python tools/prefill_attn_reach.py --q-tile 4,2
    PYTHONPATH=. .venv/bin/python tools/prefill_attn_reach.py --q-tile 4,2 --shader-dir /tmp/main/shaders
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from vkmtp.device import Device
from vkmtp.device.compiler import ShaderCompiler
from vkmtp.ops.flash_attn import FlashAttn
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.set_rows import encode_rows


def reach(dev, n_head: int, n_head_kv: int, head_dim: int, n_ctx: int, q_tile: int) -> float:
    layout = KvLayout("f16", n_head_kv, head_dim, n_ctx, 1)
    caps = dataclasses.replace(dev.caps, loop_iterations=None)     # one pass over the whole context
    fa = FlashAttn(dev, n_head, layout, q_tile=q_tile, caps=caps, f16_math=False)
    width = n_head_kv * head_dim
    v = np.zeros((n_ctx, width), np.float32)
    v[:, 0::head_dim] = (np.arange(n_ctx, dtype=np.float32) / n_ctx)[:, None]
    k_raw = encode_rows(np.zeros((n_ctx, width), np.float32), "f16")
    v_raw = encode_rows(v, "f16")
    tokens = np.zeros((q_tile, 4), np.uint32)                      # records {id, pos, seq, flags}
    tokens[:, 1] = np.arange(n_ctx - q_tile, n_ctx)
    bufs = {}
    for name, arr in (("tok", tokens), ("q", np.zeros(q_tile * n_head * head_dim, np.float32)), ("k", k_raw),
                      ("v", v_raw)):
        bufs[name] = dev.buffer(arr.nbytes, "device", name)
        dev.upload(bufs[name].view(), np.ascontiguousarray(arr).view(np.uint32).ravel())
    out = dev.buffer(q_tile * n_head * head_dim * 4)
    scratch = dev.buffer(fa.scratch_bytes(q_tile))
    rec = dev.recorder()
    fa.record(rec, bufs["tok"].view(), Strided.heads(bufs["q"].view(), n_head, head_dim), bufs["k"].view(),
              bufs["v"].view(), Strided.heads(out.view(), n_head, head_dim), q_tile, scratch.view())
    rec.finish()
    rec.run()
    o = dev.read(out.view()).reshape(q_tile, n_head, head_dim)[-1]   # the last token: the longest range
    for b in (*bufs.values(), out, scratch):
        b.destroy()
    return 2 * n_ctx * float(o[:, 0].mean()) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--q-tile", default="4", help="comma list of q_tile values")
    ap.add_argument("--n-ctx", type=int, default=65536)
    ap.add_argument("--heads", default="6,1,256", help="n_head,n_head_kv,head_dim (27B's GQA 6 x 256)")
    ap.add_argument("--shader-dir", default=None, help="compile that tree's shaders/ instead of this one's")
    args = ap.parse_args()
    dev = Device(0, compiler=ShaderCompiler(args.shader_dir)) if args.shader_dir else Device(0)
    h, h_kv, d = (int(x) for x in args.heads.split(","))
    for q_tile in (int(x) for x in args.q_tile.split(",")):
        m = reach(dev, h, h_kv, d, args.n_ctx, q_tile)
        print(f"q_tile {q_tile}: one workgroup read ~{m:.0f} of {args.n_ctx} positions "
              f"({h}/{h_kv} heads x {d})", flush=True)
    dev.destroy()


if __name__ == "__main__":
    main()
