"""SetRows (shaders/set_rows.comp): KV-cache rows as f16 / Q8_0, bit-exact against NumPy and gguf-py."""

import numpy as np
import pytest

from guarded import Packed, token_records, upload_parts
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.set_rows import SetRows
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.set_rows import decode_rows, encode_rows, set_rows


def write_rows(device, layout, records, x, cache0, rows_per_part=None):
    """The cache after the kernel wrote x's rows; with rows_per_part, the cache is passed as parts of that many
    rows, each its own buffer (vkmtp.ops.kv_parts), and read back joined."""
    bufs = Packed(device, {"tok": records, "x": x, "cache": cache0})
    parts = upload_parts(device, cache0, rows_per_part) if rows_per_part else []
    rec = device.recorder()
    SetRows(device, layout).record(rec, bufs.view("tok"), Strided.heads(bufs.view("x"), layout.n_head_kv,
                                                                         layout.head_dim),
                                   [b.view() for b in parts] or bufs.view("cache"), len(records))
    rec.finish()
    rec.run()
    if parts:
        got = np.concatenate([device.read(b.view(), np.uint8) for b in parts]).reshape(layout.n_rows, -1)
    else:
        got = bufs.read("cache", np.uint8).reshape(layout.n_rows, layout.row_bytes)
    bufs.check_guards()
    bufs.destroy()
    for b in parts:
        b.destroy()
    return got


@pytest.mark.lanes
@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("n_head_kv,head_dim,n_tok", [(4, 256, 1), (2, 256, 8), (3, 128, 5), (1, 64, 2)])
def test_set_rows_matches_reference_bit_for_bit(device, kv_type, n_head_kv, head_dim, n_tok):
    rng = np.random.default_rng(head_dim + n_tok)
    layout = KvLayout(kv_type, n_head_kv, head_dim, n_ctx=16, n_slots=3)
    cells = rng.choice(layout.n_rows, n_tok, replace=False)
    records = token_records(cells % 16, cells // 16)
    scales = rng.choice([1e-3, 1, 40], (n_tok, 1))
    x = (rng.normal(0, 1, (n_tok, n_head_kv * head_dim)) * scales).astype(np.float32)
    cache0 = rng.integers(0, 256, (layout.n_rows, layout.row_bytes), dtype=np.uint8)
    got = write_rows(device, layout, records, x, cache0)
    want = set_rows(records, x, cache0, layout.n_ctx, kv_type)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} bytes differ, first at (row, byte) {bad[0].tolist()}"


@pytest.mark.lanes
@pytest.mark.parametrize("kv_type,rows_per_part", [("f16", 7), ("q8_0", 10)])
def test_set_rows_into_a_cache_in_parts(device, kv_type, rows_per_part):
    rng = np.random.default_rng(9)
    layout = KvLayout(kv_type, 2, 128, n_ctx=16, n_slots=3)
    cells = rng.choice(layout.n_rows, 12, replace=False)
    records = token_records(cells % 16, cells // 16)
    x = rng.normal(0, 1, (12, 2 * 128)).astype(np.float32)
    cache0 = rng.integers(0, 256, (layout.n_rows, layout.row_bytes), dtype=np.uint8)
    got = write_rows(device, layout, records, x, cache0, rows_per_part)
    np.testing.assert_array_equal(got, set_rows(records, x, cache0, layout.n_ctx, kv_type))


def test_f16_rounding_edges_match_numpy(device):
    """Ties to even, the f16 range edges, subnormals, Inf and NaN."""
    specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 65519.0, 65520.0, -1e6, 6.1035156e-05, 6.0e-05, 5.96e-08,
                2.98e-08, 2.99e-08, 1e-9, np.inf, -np.inf, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2049.0, 2051.0]
    rng = np.random.default_rng(1)
    x = np.concatenate([np.array(specials, np.float32),
                        rng.normal(0, 1, 64) * 2.0 ** rng.integers(-30, 17, 64),
                        np.full(256 - 84, 0.5, np.float32)]).astype(np.float32).reshape(1, 256)
    layout = KvLayout("f16", 1, 256, n_ctx=1)
    got = write_rows(device, layout, token_records([0], [0]), x, np.zeros((1, layout.row_bytes), np.uint8))
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    nan_row = np.full((1, 256), np.nan, np.float32)
    zeros = np.zeros((1, layout.row_bytes), np.uint8)
    got = write_rows(device, layout, token_records([0], [0]), nan_row, zeros)
    assert np.isnan(got.view(np.float16)).all()


def test_q8_0_ties_zero_blocks_and_scales_match_gguf(device):
    """amax 127 gives d = 1: halves round away from zero; an all-zero block has d = 0 and q = 0."""
    block_tie = np.array([127.0, -127.0, 2.5, -2.5, 0.5, -0.5, 1.5, 126.5] + [0.25] * 24, np.float32)
    block_zero = np.zeros(32, np.float32)
    rng = np.random.default_rng(4)
    blocks = [block_tie, block_zero]
    for scale in (1e-20, 1e-4, 1.0, 3e4):
        blocks.append((rng.normal(0, 1, 32) * scale).astype(np.float32))
    blocks.append(np.float32(0.1) * np.arange(-16, 16, dtype=np.float32))
    blocks.append(np.full(32, -7.0, np.float32))
    x = np.concatenate(blocks).reshape(1, 256)
    layout = KvLayout("q8_0", 1, 256, n_ctx=1)
    got = write_rows(device, layout, token_records([0], [0]), x, np.zeros((1, layout.row_bytes), np.uint8))
    np.testing.assert_array_equal(got, encode_rows(x, "q8_0"))
    decoded = decode_rows(got, "q8_0", 256)[0]
    assert decoded[2] == 3.0 and decoded[3] == -3.0 and decoded[4] == 1.0 and decoded[5] == -1.0


def test_layout_refuses_q8_0_heads_that_split_words():
    with pytest.raises(ValueError, match="head_dim % 64"):
        KvLayout("q8_0", 2, 96, n_ctx=8)
    with pytest.raises(ValueError, match="not one of"):
        KvLayout("q4_0", 2, 128, n_ctx=8)
