"""shaders/matvec.comp vs the NumPy reference, every type, both reduction variants; batch invariance."""

import numpy as np
import pytest

from quant_testing import ALL_TYPES, assert_close, random_weight, tuning_for
from vkmtp.gguf import GGMLType, block_size
from vkmtp.ops.matvec import MatVec, MatVecTuning
from vkmtp.ops.quant_types import FLOAT_TYPES
from vkmtp.ref.ops.matvec import matvec as matvec_ref, matvec_error_bound

# f32 accumulation of a K-term dot product in partial sums of 8 then a tree: error <= REL * sum |w x|
REL = 2e-6


def variants():
    return ["shared", "subgroup"]


def row_length(t, wide: bool = False) -> int:
    if int(t) in FLOAT_TYPES:
        return 1003 if not wide else 2048
    return block_size(t)[0] * (3 if not wide else 8)  # odd block count: rows start on 2-byte boundaries


def run_matvec(ws, rows, t, n_rows, n_k, x, tuning, y0=None, parts=None, x_pad=0, y_stride=None):
    """x: [n_tok, n_k] f32; returns y [n_tok, y_stride or n_rows] as computed by the GPU."""
    n_tok = x.shape[0]
    y_stride = y_stride or n_rows
    weight = ws.weight(rows, t, n_k, parts)
    xv = ws.input("x", x.astype(np.float32), pad_words=x_pad)
    yv = ws.output(n_tok * y_stride, fill=y0)
    ws.run(lambda rec: MatVec(ws.device, tuning).record(rec, weight, t, n_rows, n_k, xv, yv, n_tok,
                                                        accumulate=y0 is not None, y_stride=y_stride))
    return ws.read_output(n_tok * y_stride).reshape(n_tok, y_stride)


def check_against_ref(got, rows, t, n_rows, n_k, x, y0=None):
    want = matvec_ref(rows, t, n_rows, n_k, x, y0)
    tol = matvec_error_bound(rows, t, n_rows, n_k, x, REL) + 1e-30
    if y0 is not None:
        tol += 1e-7 * np.abs(y0)
    assert_close(got, want, tol, f"matvec {GGMLType(t).name}")


LANES_TYPES = {GGMLType.F16, GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q6_K,
               GGMLType.IQ4_XS}
TYPE_PARAMS = [pytest.param(t, id=t.name.lower(), marks=[pytest.mark.lanes] if t in LANES_TYPES else [])
               for t in ALL_TYPES]


@pytest.mark.parametrize("variant", variants())
@pytest.mark.parametrize("t", TYPE_PARAMS)
def test_matvec_matches_reference(device, ws, t, variant):
    n_rows, n_k, n_tok = 37, row_length(t), 3  # 37 rows: the last workgroup is partly empty
    rows = random_weight(t, n_rows, n_k, seed=int(t))
    x = np.random.default_rng(1).standard_normal((n_tok, n_k)).astype(np.float32)
    got = run_matvec(ws, rows, t, n_rows, n_k, x, tuning_for(device, variant))
    check_against_ref(got, rows, t, n_rows, n_k, x)


INVARIANCE_CASES = [(GGMLType.Q4_K, "shared"), (GGMLType.Q4_K, "subgroup"), (GGMLType.Q6_K, "subgroup"),
                    (GGMLType.Q8_0, "shared"), (GGMLType.Q5_0, "subgroup"), (GGMLType.F16, "shared"),
                    (GGMLType.IQ4_XS, "subgroup"), (GGMLType.Q4_K, "default"), (GGMLType.Q8_0, "default"),
                    (GGMLType.Q6_K, "default"), (GGMLType.IQ4_XS, "default"), (GGMLType.Q4_0, "default"),
                    (GGMLType.IQ4_NL, "subgroup")]


@pytest.mark.lanes
@pytest.mark.parametrize("t,variant", INVARIANCE_CASES,
                         ids=[f"{t.name.lower()}-{v}" for t, v in INVARIANCE_CASES])
def test_matvec_columns_are_batch_invariant(device, ws, t, variant):
    """Column c computed in a batch of n (3 and 8) is bit-identical to column c computed alone."""
    n_rows, n_k = 21, row_length(t, wide=True)
    rows = random_weight(t, n_rows, n_k, seed=5)
    x = np.random.default_rng(2).standard_normal((8, n_k)).astype(np.float32)
    tuning = tuning_for(device, variant)
    alone = np.stack([run_matvec(ws, rows, t, n_rows, n_k, x[c:c + 1], tuning)[0] for c in range(8)])
    for n in (3, 8):
        batch = run_matvec(ws, rows, t, n_rows, n_k, x[:n], tuning)
        assert np.array_equal(batch, alone[:n]), f"{n} columns differ from 1 column: " \
            f"max diff {np.abs(batch - alone[:n]).max()}"
    check_against_ref(alone, rows, t, n_rows, n_k, x)


def test_matvec_rows_per_group_does_not_change_results(device, ws):
    t, n_rows, n_k = GGMLType.Q4_K, 19, 512
    rows = random_weight(t, n_rows, n_k, seed=8)
    x = np.random.default_rng(3).standard_normal((3, n_k)).astype(np.float32)
    base = run_matvec(ws, rows, t, n_rows, n_k, x, MatVecTuning(32, 3, False))
    for r in (1, 4, 16):
        got = run_matvec(ws, rows, t, n_rows, n_k, x, MatVecTuning(32, r, False))
        np.testing.assert_array_equal(got, base)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", variants())
def test_matvec_accumulates_into_output(device, ws, variant):
    t, n_rows, n_k, n_tok = GGMLType.Q4_K, 33, 768, 3
    rows = random_weight(t, n_rows, n_k, seed=9)
    x = np.random.default_rng(4).standard_normal((n_tok, n_k)).astype(np.float32)
    y0 = np.random.default_rng(5).standard_normal((n_tok, n_rows)).astype(np.float32)
    got = run_matvec(ws, rows, t, n_rows, n_k, x, tuning_for(device, variant), y0=y0)
    check_against_ref(got, rows, t, n_rows, n_k, x, y0)


def test_matvec_more_than_8_columns_and_unaligned_activations(device, ws):
    """11 columns = one 8-column and one 3-column dispatch; x at an odd word offset (scalar loads)."""
    t, n_rows, n_k, n_tok = GGMLType.Q8_0, 10, 96, 11
    rows = random_weight(t, n_rows, n_k, seed=10)
    x = np.random.default_rng(6).standard_normal((n_tok, n_k)).astype(np.float32)
    tuning = tuning_for(device, "shared")
    got = run_matvec(ws, rows, t, n_rows, n_k, x, tuning, x_pad=1)
    check_against_ref(got, rows, t, n_rows, n_k, x)
    np.testing.assert_array_equal(got, run_matvec(ws, rows, t, n_rows, n_k, x, tuning))


def test_matvec_writes_into_a_strided_slice(device, ws):
    t, n_rows, n_k, n_tok, y_stride = GGMLType.Q6_K, 7, 256, 3, 16
    rows = random_weight(t, n_rows, n_k, seed=11)
    x = np.random.default_rng(7).standard_normal((n_tok, n_k)).astype(np.float32)
    got = run_matvec(ws, rows, t, n_rows, n_k, x, tuning_for(device, "shared"), y_stride=y_stride)
    check_against_ref(got[:, :n_rows], rows, t, n_rows, n_k, x)
    assert np.all(got[:, n_rows:] == 0.0), "wrote outside its rows of the strided output"


@pytest.mark.parametrize("t", [GGMLType.Q8_0, GGMLType.Q6_K], ids=["q8_0", "q6_k"])
def test_matvec_weight_split_in_row_parts(device, ws, t):
    """A weight larger than maxStorageBufferRange is split by rows: here into small parts on purpose."""
    n_rows, n_k, n_tok = 23, row_length(t), 3
    rows = random_weight(t, n_rows, n_k, seed=12)
    x = np.random.default_rng(8).standard_normal((n_tok, n_k)).astype(np.float32)
    tuning = tuning_for(device, "shared")
    whole = run_matvec(ws, rows, t, n_rows, n_k, x, tuning)
    split = run_matvec(ws, rows, t, n_rows, n_k, x, tuning, parts=[(0, 10), (10, 1), (11, 12)])
    np.testing.assert_array_equal(split, whole)
    check_against_ref(split, rows, t, n_rows, n_k, x)


def test_matvec_folds_grids_beyond_65535_workgroups(device, ws):
    t, n_rows, n_k = GGMLType.F16, 70_001, 8  # 70001 workgroups of 1 row
    rows = random_weight(t, n_rows, n_k, seed=13)
    x = np.random.default_rng(9).standard_normal((1, n_k)).astype(np.float32)
    got = run_matvec(ws, rows, t, n_rows, n_k, x, MatVecTuning(32, 1, False))
    check_against_ref(got, rows, t, n_rows, n_k, x)


@pytest.mark.parametrize("t", [GGMLType.Q4_K, GGMLType.Q8_0], ids=["q4_k", "q8_0"])
def test_matvec_moe_expert_shape(device, ws, t):
    """Qwen3.6-35B-A3B expert shapes: 512 x 2048 (gate/up) at 4 columns."""
    n_rows, n_k, n_tok = 512, 2048, 4
    rows = random_weight(t, n_rows, n_k, seed=14)
    x = np.random.default_rng(10).standard_normal((n_tok, n_k)).astype(np.float32)
    got = run_matvec(ws, rows, t, n_rows, n_k, x, MatVec(device).tuning)
    check_against_ref(got, rows, t, n_rows, n_k, x)


@pytest.mark.slow
def test_matvec_qwen27b_ffn_down_shape(device, ws):
    t, n_rows, n_k, n_tok = GGMLType.Q4_K, 5120, 17408, 3
    rows = random_weight(t, n_rows, n_k, seed=15)
    x = np.random.default_rng(11).standard_normal((n_tok, n_k)).astype(np.float32)
    got = run_matvec(ws, rows, t, n_rows, n_k, x, MatVec(device).tuning)
    check_against_ref(got, rows, t, n_rows, n_k, x)


def test_matvec_rejects_bad_shapes(device, ws):
    buf = device.buffer(1 << 16, "device", "x")
    rec = device.recorder()
    mv = MatVec(device)
    with pytest.raises(ValueError, match="matvec activations x"):
        mv.record(rec, buf.view(0, 4096), GGMLType.Q8_0, 2, 64, buf.view(0, 100), buf.view(8192, 4096), 1)
    with pytest.raises(ValueError, match="need 144 B"):
        mv.record(rec, buf.view(0, 100), GGMLType.Q4_K, 1, 256, buf.view(0, 1024), buf.view(8192, 4096), 1)
    if device.info.has_subgroup_arithmetic and device.info.subgroup_size > 1:
        with pytest.raises(ValueError, match="subgroup size"):
            MatVec(device, MatVecTuning(device.info.subgroup_size // 2, 1, True))
    with pytest.raises(ValueError, match="power of 2"):
        MatVec(device, MatVecTuning(48, 1, False))
    buf.destroy()
