"""Rope (shaders/rope.comp): per-head q/k RMSNorm + partial NEOX RoPE, in place and into the KV cache."""

import numpy as np
import pytest

from guarded import Packed, assert_close, token_records, upload_parts
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.rope import Rope
from vkmtp.ops.set_rows import SetRows
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.rope import rope
from vkmtp.ref.ops.set_rows import decode_rows, encode_rows

BASE = 1e7


def rope_atol(max_pos: int, scale: float) -> float:
    """The angle pos * inv_freq is an f32 (as in HF and llama.cpp): ~6e-8 * pos rad of error; measured on
    lavapipe 1.9e-4 at pos 4095 and 2.8e-2 at pos 262143 for values of magnitude ~4."""
    return (2e-6 + 6e-8 * max_pos) * scale


def run_packed_q(device, records, qg, n_head, d, n_rot, w, subgroup=None):
    n_tok = qg.shape[0]
    bufs = Packed(device, {"tok": records, "qg": qg, "w": w if w is not None else 4})
    q = Strided(bufs.view("qg"), n_head * 2 * d, 2 * d)
    rec = device.recorder()
    Rope(device, d, n_rot, BASE, subgroup=subgroup).record(
        rec, bufs.view("tok"), q, q, n_tok, n_head, norm_weight=bufs.view("w") if w is not None else None)
    rec.finish()
    rec.run()
    got = bufs.read("qg").reshape(qg.shape)
    bufs.check_guards()
    bufs.destroy()
    return got


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok", [1, 3, 8])
def test_q_norm_rope_in_place_in_packed_q_gate(device, n_tok):
    """Qwen3.6-27B: 24 query heads of 256, 64 rotated dims; the gate halves are left alone."""
    rng = np.random.default_rng(n_tok)
    n_head, d = 24, 256
    qg = rng.normal(0, 2, (n_tok, n_head, 2, d)).astype(np.float32)
    w = rng.normal(1, 0.3, d).astype(np.float32)
    pos = rng.integers(0, 4096, n_tok)
    records = token_records(pos, np.zeros(n_tok))
    variants = [False, True] if device.info.has_subgroup_arithmetic else [False]
    for subgroup in variants:
        got = run_packed_q(device, records, qg, n_head, d, 64, w, subgroup)
        want = rope(records, qg[:, :, 0], 64, BASE, norm_weight=w)
        assert_close(got[:, :, 0], want, rope_atol(pos.max(), 4.0), 2e-5, f"q subgroup={subgroup}")
        np.testing.assert_array_equal(got[:, :, 1], qg[:, :, 1])
        assert_close(got[:, :, 0, 64:], want[:, :, 64:], 1e-6, 2e-5, "unrotated dims")


def test_rope_without_norm_and_far_positions(device):
    rng = np.random.default_rng(9)
    n_head, d, n_tok = 2, 128, 4
    x = rng.normal(0, 1, (n_tok, n_head, 2, d)).astype(np.float32)
    pos = np.array([0, 1, 100_000, 262_143])
    records = token_records(pos, np.zeros(n_tok))
    got = run_packed_q(device, records, x, n_head, d, 32, None)
    want = rope(records, x[:, :, 0], 32, BASE)
    assert_close(got[:, :, 0], want, rope_atol(262_143, 4.0), 0.0)
    np.testing.assert_array_equal(got[0, :, 0], x[0, :, 0])   # pos 0: identity


def test_rope_n_rot_zero_is_a_copy(device):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (3, 2, 2, 64)).astype(np.float32)
    got = run_packed_q(device, token_records([5, 6, 7], [0, 0, 0]), x, 2, 64, 0, None)
    np.testing.assert_array_equal(got, x)


@pytest.mark.lanes
@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_k_norm_rope_written_into_cache_rows(device, kv_type):
    """Qwen3.6-35B-A3B K: 2 KV heads of 256, into rows seq * n_ctx + pos of a 2-slot cache."""
    rng = np.random.default_rng(11)
    n_head_kv, d, n_tok = 2, 256, 5
    layout = KvLayout(kv_type, n_head_kv, d, n_ctx=32, n_slots=2)
    k = rng.normal(0, 3, (n_tok, n_head_kv * d)).astype(np.float32)
    w = rng.normal(1, 0.3, d).astype(np.float32)
    pos, seq = np.array([3, 4, 5, 30, 0]), np.array([1, 1, 1, 0, 0])
    records = token_records(pos, seq)
    cache0 = rng.integers(0, 256, (layout.n_rows, layout.row_bytes), dtype=np.uint8)
    bufs = Packed(device, {"tok": records, "k": k, "w": w, "cache": cache0})
    rec = device.recorder()
    k_heads = Strided.heads(bufs.view("k"), n_head_kv, d)
    Rope(device, d, 64, BASE).record_to_cache(rec, bufs.view("tok"), k_heads, bufs.view("cache"), layout,
                                              n_tok, norm_weight=bufs.view("w"))
    rec.finish()
    rec.run()
    got = bufs.read("cache", np.uint8).reshape(layout.n_rows, layout.row_bytes)
    bufs.check_guards()
    bufs.destroy()
    rows = seq * layout.n_ctx + pos
    untouched = np.setdiff1d(np.arange(layout.n_rows), rows)
    np.testing.assert_array_equal(got[untouched], cache0[untouched])
    want = rope(records, k.reshape(n_tok, n_head_kv, d), 64, BASE, norm_weight=w).reshape(n_tok, -1)
    got_vals = decode_rows(got[rows], kv_type, n_head_kv * d)
    want_vals = decode_rows(encode_rows(want, kv_type), kv_type, n_head_kv * d)
    # one f16 ULP, or one Q8_0 step (amax / 127) where the f32 rounding difference crosses a boundary
    quantum = np.abs(want).max() / 127 if kv_type == "q8_0" else np.abs(want) * 2 ** -10
    err = np.abs(got_vals - want_vals)
    assert (err <= quantum * 1.01 + 1e-6).all(), f"max error {err.max()} beyond one quantization step"


@pytest.mark.lanes
@pytest.mark.parametrize("kv_type,rows_per_part", [("f16", 9), ("q8_0", 20)])
def test_k_into_a_cache_in_parts_gives_the_one_buffer_bytes(device, kv_type, rows_per_part):
    rng = np.random.default_rng(12)
    n_head_kv, d, n_tok = 2, 256, 6
    layout = KvLayout(kv_type, n_head_kv, d, n_ctx=32, n_slots=2)
    k = rng.normal(0, 3, (n_tok, n_head_kv * d)).astype(np.float32)
    w = rng.normal(1, 0.3, d).astype(np.float32)
    records = token_records([8, 9, 10, 11, 31, 0], [0, 0, 0, 0, 1, 1])
    cache0 = rng.integers(0, 256, (layout.n_rows, layout.row_bytes), dtype=np.uint8)

    def run(parts):
        bufs = Packed(device, {"tok": records, "k": k, "w": w, "cache": cache0})
        part_bufs = upload_parts(device, cache0, rows_per_part) if parts else []
        rec = device.recorder()
        Rope(device, d, 64, BASE).record_to_cache(rec, bufs.view("tok"), Strided.heads(bufs.view("k"), n_head_kv, d),
                                                  [b.view() for b in part_bufs] or bufs.view("cache"), layout,
                                                  n_tok, norm_weight=bufs.view("w"))
        rec.finish()
        rec.run()
        if parts:
            out = np.concatenate([device.read(b.view(), np.uint8) for b in part_bufs])
        else:
            out = bufs.read("cache", np.uint8)
        bufs.check_guards()
        bufs.destroy()
        for b in part_bufs:
            b.destroy()
        return out.reshape(layout.n_rows, layout.row_bytes)

    np.testing.assert_array_equal(run(True), run(False))


def test_rope_then_set_rows_is_batch_invariant(device):
    """A token's cache row is the same bytes whether it is written alone or with 7 others."""
    rng = np.random.default_rng(5)
    n_head_kv, d, n_tok = 4, 256, 8
    layout = KvLayout("q8_0", n_head_kv, d, n_ctx=16)
    k = rng.normal(0, 1, (n_tok, n_head_kv * d)).astype(np.float32)
    w = rng.normal(1, 0.3, d).astype(np.float32)
    records = token_records(np.arange(n_tok) + 4, np.zeros(n_tok))

    def run(sel):
        bufs = Packed(device, {"tok": records[sel], "k": k[sel], "w": w, "cache": layout.nbytes}, fill=0)
        rec = device.recorder()
        k_heads = Strided.heads(bufs.view("k"), n_head_kv, d)
        Rope(device, d, 64, BASE).record_to_cache(rec, bufs.view("tok"), k_heads, bufs.view("cache"), layout,
                                                  len(records[sel]), norm_weight=bufs.view("w"))
        SetRows(device, layout)  # constructing the V writer alongside must not matter
        rec.finish()
        rec.run()
        out = bufs.read("cache", np.uint8).reshape(layout.n_rows, layout.row_bytes)
        bufs.destroy()
        return out

    together = run(slice(0, n_tok))
    for t in range(n_tok):
        alone = run(slice(t, t + 1))
        assert np.array_equal(alone[t + 4], together[t + 4]), f"token {t} row differs"


@pytest.mark.lanes
@pytest.mark.parametrize("kv_type,parts,with_v", [("f16", False, False), ("q8_0", False, False), ("f16", True, False),
                                                  ("f16", False, True), ("q8_0", False, True), ("q8_0", True, True)])
def test_q_and_k_in_one_dispatch_give_the_bits_of_two(device, kv_type, parts, with_v):
    """record_qk (q in place in the packed [q+gate | k | v] row, k into the cache; with_v: v into the V cache too)
    == record + record_to_cache (+ SetRows)."""
    rng = np.random.default_rng(21)
    n_head, n_head_kv, d, n_tok = 4, 2, 256, 5
    width = 2 * n_head * d + 2 * n_head_kv * d
    mix = rng.normal(0, 2, (n_tok, width)).astype(np.float32)
    wq = rng.normal(1, 0.3, d).astype(np.float32)
    wk = rng.normal(1, 0.3, d).astype(np.float32)
    layout = KvLayout(kv_type, n_head_kv, d, n_ctx=16, n_slots=2)
    records = token_records([3, 4, 5, 15, 0], [0, 0, 0, 1, 1])
    cache0 = rng.integers(0, 256, (layout.n_rows, layout.row_bytes), dtype=np.uint8)
    vcache0 = rng.integers(0, 256, (layout.n_rows, layout.row_bytes), dtype=np.uint8)

    def run(fused):
        bufs = Packed(device, {"tok": records, "mix": mix, "wq": wq, "wk": wk, "cache": cache0, "vcache": vcache0})
        part_bufs = upload_parts(device, cache0, 9) if parts else []
        cache = [b.view() for b in part_bufs] or bufs.view("cache")
        m = bufs.view("mix")
        q = Strided(m, width, 2 * d)
        k = Strided(m.sub(4 * 2 * n_head * d, m.nbytes - 4 * 2 * n_head * d), width, d)
        v_off = 2 * n_head * d + n_head_kv * d
        v = Strided(m.sub(4 * v_off, m.nbytes - 4 * v_off), width, d)
        rope = Rope(device, d, 64, BASE)
        rec = device.recorder()
        if fused:
            kw = dict(v=v, v_cache=bufs.view("vcache"), v_layout=layout) if with_v else {}
            rope.record_qk(rec, bufs.view("tok"), q, bufs.view("wq"), k, bufs.view("wk"), cache, layout, n_tok,
                           n_head, **kw)
        else:
            rope.record(rec, bufs.view("tok"), q, q, n_tok, n_head, norm_weight=bufs.view("wq"))
            rope.record_to_cache(rec, bufs.view("tok"), k, cache, layout, n_tok, norm_weight=bufs.view("wk"))
            if with_v:
                SetRows(device, layout).record(rec, bufs.view("tok"), v, bufs.view("vcache"), n_tok)
        assert rec.n_dispatches == (1 if fused else 2 + with_v)
        rec.finish()
        rec.run()
        out = np.concatenate([device.read(b.view(), np.uint8) for b in part_bufs]) if parts \
            else bufs.read("cache", np.uint8)
        got_mix = bufs.read("mix")
        vout = bufs.read("vcache", np.uint8)
        bufs.check_guards()
        bufs.destroy()
        for b in part_bufs:
            b.destroy()
        return got_mix, out.reshape(-1)[:layout.n_rows * layout.row_bytes], vout

    fused_mix, fused_cache, fused_v = run(True)
    mix2, cache2, v2 = run(False)
    np.testing.assert_array_equal(fused_mix.view(np.uint32), mix2.view(np.uint32))
    np.testing.assert_array_equal(fused_cache, cache2)
    np.testing.assert_array_equal(fused_v, v2)
    assert not np.array_equal(fused_mix, mix.reshape(-1))
    assert with_v != np.array_equal(fused_v.reshape(-1), vcache0.reshape(-1))
