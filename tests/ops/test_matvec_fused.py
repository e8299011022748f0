"""The mat-vec's fused input preparation and output write (shaders/common/matvec_io.glsl) vs the NumPy
references of the kernels they replace: RMSNorm, the GDN gated head norm, SwiGLU and the MoE shared expert's
sigmoid-gated add; batch invariance of every mode; matvec_id with a fused norm and SwiGLU."""

import numpy as np
import pytest

from quant_testing import assert_close, random_weight, tuning_for
from vkmtp.gguf import GGMLType
from vkmtp.ops.matvec import InputPrep, MatVec
from vkmtp.ops.matvec_id import MatVecId, routes_words
from vkmtp.ref.ops.elementwise import sigmoid_scale_add, swiglu
from vkmtp.ref.ops.matvec import matvec as matvec_ref, matvec_error_bound
from vkmtp.ref.ops.matvec_id import matvec_id as matvec_id_ref
from vkmtp.ref.ops.rms_norm import rms_norm

EPS = 1e-6
REL = 1e-5   # f32 dot products plus the f32 rounding of the prepared input


def prepared(mode: str, x: np.ndarray, w: np.ndarray, side: np.ndarray, head_dim: int) -> np.ndarray:
    """The input the fused mat-vec sees, by the references of the kernels it replaces."""
    if mode == "norm":
        return rms_norm(x, w, EPS)
    if mode == "head_norm":
        n_tok, n_k = x.shape
        heads = x.reshape(n_tok, n_k // head_dim, head_dim)
        return rms_norm(heads, w, EPS, gate=side.reshape(heads.shape)).reshape(n_tok, n_k)
    return swiglu(x, side)


def run_fused(ws, tuning, rows, t, n_rows, n_k, mode, x, w, side, head_dim=0, gate=None, y0=None):
    """x, side: [n_tok, n_k]; packed as one [n_tok, 2 n_k + 4] activation matrix (x | side | gate logit)."""
    n_tok = x.shape[0]
    stride = 2 * n_k + 4
    act = np.zeros((n_tok, stride), np.float32)
    act[:, :n_k], act[:, n_k:2 * n_k] = x, side
    if gate is not None:
        act[:, 2 * n_k] = gate
    weight = ws.weight(rows, t, n_k)
    av = ws.input("act", act)
    wv = ws.input("norm_w", w.astype(np.float32))
    yv = ws.output(n_tok * n_rows, fill=y0)
    prep = None if mode is None else InputPrep(mode, wv if mode != "swiglu" else None, EPS,
                                               av.sub(4 * n_k, av.nbytes - 4 * n_k) if mode != "norm" else None,
                                               stride, head_dim)
    out_gate = (av.sub(8 * n_k, av.nbytes - 8 * n_k), stride) if gate is not None else None
    ws.run(lambda rec: MatVec(ws.device, tuning).record(rec, weight, t, n_rows, n_k, av, yv, n_tok,
                                                        accumulate=y0 is not None and gate is None,
                                                        x_stride=stride, prep=prep, out_gate=out_gate))
    return ws.read_output(n_tok * n_rows).reshape(n_tok, n_rows)


CASES = [("norm", GGMLType.Q4_K), ("norm", GGMLType.F16), ("head_norm", GGMLType.Q6_K),
         ("head_norm", GGMLType.Q8_0), ("swiglu", GGMLType.Q4_K), ("swiglu", GGMLType.Q5_0)]


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["shared", "subgroup"])
@pytest.mark.parametrize("mode,t", CASES, ids=[f"{m}-{t.name.lower()}" for m, t in CASES])
def test_fused_input_matches_the_unfused_reference_and_is_batch_invariant(device, ws, mode, t, variant):
    n_rows, n_k, head_dim = 19, 512, 128
    rng = np.random.default_rng(int(t))
    rows = random_weight(t, n_rows, n_k, seed=int(t) + 1)
    x = (rng.standard_normal((8, n_k)) * 3).astype(np.float32)
    side = rng.standard_normal((8, n_k)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, head_dim if mode == "head_norm" else n_k).astype(np.float32)
    tuning = tuning_for(device, variant, rows=2)
    alone = np.stack([run_fused(ws, tuning, rows, t, n_rows, n_k, mode, x[c:c + 1], w, side[c:c + 1], head_dim)[0]
                      for c in range(8)])
    for n in (3, 8):
        batch = run_fused(ws, tuning, rows, t, n_rows, n_k, mode, x[:n], w, side[:n], head_dim)
        assert np.array_equal(batch, alone[:n]), f"{mode}: {n} columns differ from 1 column"
    xin = prepared(mode, x, w, side, head_dim)
    want = matvec_ref(rows, t, n_rows, n_k, xin)
    assert_close(alone, want, matvec_error_bound(rows, t, n_rows, n_k, xin, REL) + 1e-30, f"fused {mode}")


@pytest.mark.lanes
def test_sigmoid_gated_output_with_swiglu_input(device, ws):
    """The MoE shared expert's down projection: y += sigmoid(s) * (W swiglu(g, u)), in one dispatch."""
    t, n_rows, n_k, n_tok = GGMLType.Q4_K, 21, 256, 4
    rng = np.random.default_rng(3)
    rows = random_weight(t, n_rows, n_k, seed=4)
    g, u = rng.standard_normal((2, n_tok, n_k)).astype(np.float32)
    s = rng.standard_normal(n_tok).astype(np.float32)
    y0 = rng.standard_normal((n_tok, n_rows)).astype(np.float32)
    w = np.ones(n_k, np.float32)
    got = run_fused(ws, tuning_for(device, "shared", rows=2), rows, t, n_rows, n_k, "swiglu", g, w, u, gate=s, y0=y0)
    xin = swiglu(g, u)
    down = matvec_ref(rows, t, n_rows, n_k, xin)
    want = sigmoid_scale_add(down, s, y0)
    tol = matvec_error_bound(rows, t, n_rows, n_k, xin, REL) + 1e-6 * np.abs(y0)
    assert_close(got, want, tol, "gated add")
    one = run_fused(ws, tuning_for(device, "shared", rows=2), rows, t, n_rows, n_k, "swiglu", g[:1], w, u[:1], gate=s[:1],
                    y0=y0[:1])
    assert np.array_equal(one[0], got[0])


@pytest.mark.lanes
@pytest.mark.parametrize("mode", ["norm", "swiglu"])
def test_matvec_id_fused_input(device, ws, mode):
    """Expert gate (normed token input) and down (SwiGLU of each slot's gate | up row)."""
    t, n_expert, n_rows, n_k, n_tok, n_used = GGMLType.Q4_K, 8, 24, 256, 3, 4
    rng = np.random.default_rng(5)
    stack = random_weight(t, n_expert * n_rows, n_k, seed=6)
    ids = np.stack([rng.permutation(n_expert)[:n_used] for _ in range(n_tok)]).astype(np.uint32)
    n_x = n_tok * n_used if mode == "swiglu" else n_tok
    gu = rng.standard_normal((n_x, 2 * n_k)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n_k).astype(np.float32)
    tuning = tuning_for(device, "shared", rows=2)

    def run(n):
        xv = ws.input("act", gu[:n * n_used if mode == "swiglu" else n])
        wv = ws.input("norm_w", w)
        iv = ws.input("ids", ids[:n])
        rv = ws.output(routes_words(n, n_used), name="routes")
        yv = ws.output(n * n_used * n_rows)
        prep = InputPrep("norm", wv, EPS) if mode == "norm" else \
            InputPrep("swiglu", None, 0.0, xv.sub(4 * n_k, xv.nbytes - 4 * n_k))
        mv = MatVecId(ws.device, tuning)

        def record(rec):
            mv.record_routes(rec, iv, rv, n, n_used)
            mv.record(rec, ws.weight(stack.reshape(n_expert, -1), t, n_k), t, n_expert, n_rows, n_k, xv, yv, rv, n, n_used,
                      x_per_slot=mode == "swiglu", x_stride=2 * n_k, prep=prep)
        ws.run(record)
        return ws.read_output(n * n_used * n_rows).reshape(n * n_used, n_rows)

    got = run(n_tok)
    assert np.array_equal(run(1), got[:n_used])
    xin = rms_norm(gu[:, :n_k], w, EPS) if mode == "norm" else swiglu(gu[:, :n_k], gu[:, n_k:])
    want = matvec_id_ref(stack, t, n_expert, n_rows, n_k, xin, ids, x_per_slot=mode == "swiglu")
    assert_close(got, want, 1e-4 * np.abs(want).max(), f"matvec_id fused {mode}")


def test_fused_input_refuses_what_it_cannot_do(device, ws):
    buf = device.buffer(1 << 16, "device", "x")
    other = device.buffer(4096, "device", "other")
    rec = device.recorder()
    mv = MatVec(device)
    args = (rec, buf.view(0, 4096), GGMLType.Q8_0, 2, 64, buf.view(8192, 256), buf.view(16384, 8), 1)
    with pytest.raises(ValueError, match="norm weight"):
        mv.record(*args, prep=InputPrep("norm", None, EPS))
    with pytest.raises(ValueError, match="activations' buffer"):
        mv.record(*args, prep=InputPrep("swiglu", None, 0.0, other.view(0, 256), 64))
    with pytest.raises(ValueError, match="head_dim"):
        mv.record(*args, prep=InputPrep("head_norm", buf.view(0, 256), EPS, buf.view(8192, 256), 64, 48))
    with pytest.raises(ValueError, match="not one of"):
        mv.record(*args, prep=InputPrep("gelu"))
    buf.destroy()
    other.destroy()
