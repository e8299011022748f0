"""shaders/get_rows.comp (embedding lookup) vs the NumPy reference, every type; token records, plain ids."""

import numpy as np
import pytest

from quant_testing import ALL_TYPES, assert_close, random_weight
from vkmtp.gguf import GGMLType, block_size
from vkmtp.ops.get_rows import PLAIN_IDS, TOKEN_RECORD_WORDS, GetRows
from vkmtp.ops.quant_types import FLOAT_TYPES
from vkmtp.ref.ops.get_rows import get_rows as get_rows_ref

REL_TOL = 2.5e-7  # dequantization is one fma per value, as in the reference
LANES_TYPES = {GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_1, GGMLType.Q6_K, GGMLType.IQ4_NL}
TYPE_PARAMS = [pytest.param(t, id=t.name.lower(), marks=[pytest.mark.lanes] if t in LANES_TYPES else [])
               for t in ALL_TYPES]


def token_records(ids: np.ndarray) -> np.ndarray:
    """[n_tok, 4] u32 step records {token_id, pos, seq, flags} (tokens.glsl)."""
    rec = np.zeros((ids.size, TOKEN_RECORD_WORDS), np.uint32)
    rec[:, 0] = ids
    rec[:, 1] = np.arange(ids.size) + 100
    rec[:, 2] = 1
    return rec


def run_get_rows(ws, table, t, n_vocab, n_embd, ids, records=True, parts=None):
    n_tok = ids.size
    tv = ws.weight(table, t, n_embd, parts)
    iv = ws.input("ids", token_records(ids) if records else ids.astype(np.uint32))
    out = ws.output(n_tok * n_embd)
    ws.run(lambda rec: GetRows(ws.device).record(rec, tv, t, n_vocab, n_embd, iv, out, n_tok,
                                                ids_stride=TOKEN_RECORD_WORDS if records else PLAIN_IDS))
    return ws.read_output(n_tok * n_embd).reshape(n_tok, n_embd)


def embd_length(t) -> int:
    return 1003 if int(t) in FLOAT_TYPES else 3 * block_size(t)[0]


@pytest.mark.parametrize("t", TYPE_PARAMS)
def test_get_rows_matches_reference(ws, t):
    n_vocab, n_embd = 50, embd_length(t)
    table = random_weight(t, n_vocab, n_embd, seed=int(t))
    ids = np.array([7, 0, 49, 7, 13], np.uint32)  # repeats, first and last rows
    got = run_get_rows(ws, table, t, n_vocab, n_embd, ids)
    want = get_rows_ref(table, t, n_vocab, n_embd, ids)
    assert_close(got, want, REL_TOL * np.abs(want), f"get_rows {t.name}")


@pytest.mark.lanes
def test_get_rows_plain_ids_and_bad_id(ws):
    t, n_vocab, n_embd = GGMLType.Q4_K, 20, 512
    table = random_weight(t, n_vocab, n_embd, seed=3)
    ids = np.array([19, 3, 20, 4000000000], np.uint32)  # the last two are out of range: NaN rows
    got = run_get_rows(ws, table, t, n_vocab, n_embd, ids, records=False)
    want = get_rows_ref(table, t, n_vocab, n_embd, ids)
    assert np.isnan(got[2:]).all()
    assert_close(got[:2], want[:2], REL_TOL * np.abs(want[:2]), "get_rows plain ids")


@pytest.mark.parametrize("t", [GGMLType.Q6_K, GGMLType.Q8_0], ids=["q6_k", "q8_0"])
def test_get_rows_table_split_in_parts(ws, t):
    n_vocab, n_embd = 31, embd_length(t)
    table = random_weight(t, n_vocab, n_embd, seed=4)
    ids = np.array([30, 0, 11, 12, 10, 29, 5, 11], np.uint32)
    got = run_get_rows(ws, table, t, n_vocab, n_embd, ids, parts=[(0, 11), (11, 1), (12, 19)])
    np.testing.assert_array_equal(got, run_get_rows(ws, table, t, n_vocab, n_embd, ids))
    want = get_rows_ref(table, t, n_vocab, n_embd, ids)
    assert_close(got, want, REL_TOL * np.abs(want), f"get_rows parts {t.name}")


def test_get_rows_qwen27b_embedding_width(ws):
    t, n_vocab, n_embd = GGMLType.Q6_K, 64, 5120
    table = random_weight(t, n_vocab, n_embd, seed=5)
    ids = np.arange(70, dtype=np.uint32) % n_vocab
    got = run_get_rows(ws, table, t, n_vocab, n_embd, ids)
    want = get_rows_ref(table, t, n_vocab, n_embd, ids)
    assert_close(got, want, REL_TOL * np.abs(want), "get_rows 5120")


def test_get_rows_rejects_short_id_buffer(ws):
    buf = ws.device.buffer(1 << 14, "device", "g")
    with pytest.raises(ValueError, match="get_rows token ids"):
        GetRows(ws.device).record(ws.device.recorder(), buf.view(0, 4096), GGMLType.Q8_0, 4, 32,
                                  buf.view(4096, 8), buf.view(8192, 4096), 3)
    buf.destroy()
