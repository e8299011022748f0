"""shaders/common/dequant.glsl through shaders/dequant.comp vs vkmtp.gguf.dequantize, for every type."""

import numpy as np
import pytest

from quant_testing import ALL_TYPES, TYPE_IDS, assert_close, guarded_output, random_weight, read_guarded, \
    upload_rows
from vkmtp.gguf import GGMLType, block_size
from vkmtp.ops.dequant import Dequant
from vkmtp.ops.quant_types import FLOAT_TYPES, RowPart
from vkmtp.ref.ops.dequant import dequant as dequant_ref

# Tolerance: the GPU computes q * scale + min in f32 like the reference; allow 2 ulp of the value.
REL_TOL = 2.5e-7


def odd_k(t) -> int:
    """A row length whose rows start on 2-byte boundaries where the type allows it (odd block count)."""
    if int(t) in FLOAT_TYPES:
        return 1003
    return 3 * block_size(t)[0]


def run_dequant(device, rows: np.ndarray, t, n_rows: int, n_k: int, parts=None, pad: int = 0) -> np.ndarray:
    """parts: [(row_start, n_rows)], each uploaded into a buffer of its own (as a split weight is)."""
    parts = parts or [(0, n_rows)]
    uploads = [upload_rows(device, rows[s:s + n], pad=pad) for s, n in parts]
    weight = [RowPart(view, s, n) for (s, n), (_, view) in zip(parts, uploads)]
    obuf, out = guarded_output(device, n_rows * n_k)
    rec = device.recorder()
    Dequant(device).record(rec, weight if len(parts) > 1 else weight[0].view, t, n_rows, n_k, out)
    rec.finish()
    rec.run()
    got = read_guarded(device, obuf, n_rows * n_k).reshape(n_rows, n_k)
    rec.destroy()
    for buf, _ in uploads:
        buf.destroy()
    obuf.destroy()
    return got


@pytest.mark.lanes
@pytest.mark.parametrize("t", ALL_TYPES, ids=TYPE_IDS)
def test_dequant_matches_reference_odd_row_alignment(device, t):
    n_rows, n_k = 5, odd_k(t)
    rows = random_weight(t, n_rows, n_k, seed=int(t))
    want = dequant_ref(rows, t, n_rows, n_k)
    got = run_dequant(device, rows, t, n_rows, n_k, pad=4)
    assert_close(got, want, REL_TOL * np.abs(want), f"dequant {t.name}")


@pytest.mark.parametrize("t", ALL_TYPES, ids=TYPE_IDS)
def test_dequant_matches_reference_wide_rows(device, t):
    n_rows, n_k = 3, 2048
    rows = random_weight(t, n_rows, n_k, seed=100 + int(t))
    want = dequant_ref(rows, t, n_rows, n_k)
    got = run_dequant(device, rows, t, n_rows, n_k)
    assert_close(got, want, REL_TOL * np.abs(want), f"dequant {t.name}")


@pytest.mark.parametrize("t", [GGMLType.Q6_K, GGMLType.Q8_0], ids=["q6_k", "q8_0"])
def test_dequant_weight_split_in_parts(device, t):
    n_rows, n_k = 9, odd_k(t)
    rows = random_weight(t, n_rows, n_k, seed=7)
    want = dequant_ref(rows, t, n_rows, n_k)
    got = run_dequant(device, rows, t, n_rows, n_k, parts=[(0, 4), (4, 1), (5, 4)])
    np.testing.assert_array_equal(got, run_dequant(device, rows, t, n_rows, n_k))
    assert_close(got, want, REL_TOL * np.abs(want), f"dequant parts {t.name}")


def test_dequant_folds_more_than_65535_rows(device):
    t, n_rows, n_k = GGMLType.F16, 70001, 8
    rows = random_weight(t, n_rows, n_k, seed=3)
    got = run_dequant(device, rows, t, n_rows, n_k)
    np.testing.assert_array_equal(got, dequant_ref(rows, t, n_rows, n_k))


def test_dequant_rejects_unsupported_type_and_bad_length(device):
    rec = device.recorder()
    buf = device.buffer(4096, "device", "x")
    with pytest.raises(ValueError, match="IQ2_XXS is not supported"):
        Dequant(device).record(rec, buf.view(), GGMLType.IQ2_XXS, 1, 256, buf.view())
    with pytest.raises(ValueError, match="multiple of 256"):
        Dequant(device).record(rec, buf.view(), GGMLType.Q4_K, 1, 100, buf.view())
    buf.destroy()
