"""shaders/matvec_id*.comp (MoE expert mat-vec) vs the NumPy reference; expert grouping; batch invariance."""

import numpy as np
import pytest

from quant_testing import assert_close, random_weight, tuning_for
from vkmtp.gguf import GGMLType, dequantize
from vkmtp.ops.matvec_id import MatVecId, group_capacity, routes_words
from vkmtp.ref.ops.matvec_id import expert_groups
from vkmtp.ref.ops.matvec_id import matvec_id as matvec_id_ref
from vkmtp.ref.ops.matvec_id import weighted_sum as weighted_sum_ref

REL = 2e-6  # as matvec: error <= REL * sum |w x|


def random_ids(n_tok: int, n_used: int, n_expert: int, seed: int, overlap: int = 0) -> np.ndarray:
    """[n_tok, n_used] distinct experts per token; the first `overlap` slots of every token share experts."""
    rng = np.random.default_rng(seed)
    shared = rng.permutation(n_expert)[:overlap]
    rows = []
    for _ in range(n_tok):
        rest = rng.permutation(np.setdiff1d(np.arange(n_expert), shared))[:n_used - overlap]
        rows.append(np.concatenate([shared, rest]))
    return np.stack(rows).astype(np.uint32)


def decode_routes(words: np.ndarray, n: int, cap: int) -> list[tuple[int, list[int]]]:
    n_groups = int(words[0])
    experts, counts = words[1:1 + n], words[1 + n:1 + 2 * n]
    entries = words[1 + 2 * n:].reshape(n, cap)
    return [(int(experts[u]), entries[u, :counts[u]].tolist()) for u in range(n_groups)]


def run_routes(ws, ids: np.ndarray) -> list[tuple[int, list[int]]]:
    n_tok, n_used = ids.shape
    iv = ws.input("ids", ids)
    words = routes_words(n_tok, n_used)
    rv = ws.output(words, name="routes")
    ws.run(lambda rec: MatVecId(ws.device).record_routes(rec, iv, rv, n_tok, n_used))
    got = ws.read_output(words, name="routes").view(np.uint32)
    return decode_routes(got, ids.size, group_capacity(n_tok))


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok,n_used,overlap", [(1, 8, 0), (3, 8, 5), (8, 8, 8), (11, 2, 1), (5, 4, 0)])
def test_routes_group_entries_by_expert(ws, n_tok, n_used, overlap):
    ids = random_ids(n_tok, n_used, 16, seed=n_tok, overlap=overlap)
    assert run_routes(ws, ids) == expert_groups(ids, group_capacity(n_tok))


def test_routes_split_an_expert_chosen_twice_by_one_token(ws):
    """Not a valid top-k, but must not overflow a group: the repeat goes to a second group."""
    ids = np.array([[3, 3, 5], [5, 3, 1]], np.uint32)
    assert run_routes(ws, ids) == expert_groups(ids, 2) == [(3, [0, 1]), (5, [2, 3]), (3, [4]), (1, [5])]


def run_matvec_id(ws, tuning, stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot=False, parts=None):
    n_tok, n_used = ids.shape
    weight = ws.weight(stack.reshape(n_expert, -1), t, n_k, parts)
    xv = ws.input("x", x.astype(np.float32))
    iv = ws.input("ids", ids)
    rv = ws.output(routes_words(n_tok, n_used), name="routes")
    yv = ws.output(n_tok * n_used * n_rows)
    mv = MatVecId(ws.device, tuning)

    def record(rec):
        mv.record_routes(rec, iv, rv, n_tok, n_used)
        mv.record(rec, weight, t, n_expert, n_rows, n_k, xv, yv, rv, n_tok, n_used, x_per_slot=x_per_slot)
    ws.run(record)
    return ws.read_output(n_tok * n_used * n_rows).reshape(n_tok * n_used, n_rows)


def check(got, stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot=False):
    want = matvec_id_ref(stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot)
    n_used = ids.shape[1]
    xs = np.abs(np.asarray(x, np.float64))
    per_expert = stack.reshape(n_expert, -1)
    tol = np.empty_like(want)  # REL * sum |w x| per entry, with the entry's expert
    for i, e in enumerate(np.asarray(ids).reshape(-1)):
        absw = np.abs(dequantize(np.ascontiguousarray(per_expert[e]), t, (n_rows, n_k)).astype(np.float64))
        tol[i] = REL * (absw @ xs[i if x_per_slot else i // n_used])
    assert_close(got, want, tol + 1e-30, f"matvec_id {GGMLType(t).name}")


SMALL = dict(n_expert=16, n_rows=40, n_k=256)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["shared", "subgroup"])
@pytest.mark.parametrize("t", [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0, GGMLType.F16],
                         ids=["q4_k", "q6_k", "q8_0", "f16"])
def test_matvec_id_gate_up_matches_reference(device, ws, t, variant):
    n_expert, n_rows, n_k = SMALL.values()
    stack = random_weight(t, n_expert * n_rows, n_k, seed=int(t))
    ids = random_ids(3, 4, n_expert, seed=1, overlap=2)
    x = np.random.default_rng(2).standard_normal((3, n_k)).astype(np.float32)
    got = run_matvec_id(ws, tuning_for(device, variant, rows=2), stack, t, n_expert, n_rows, n_k, x, ids)
    check(got, stack, t, n_expert, n_rows, n_k, x, ids)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["shared", "subgroup"])
def test_matvec_id_is_batch_invariant(device, ws, variant):
    """Each token's expert outputs are bit-identical alone and in a batch of 8 that shares experts."""
    t, (n_expert, n_rows, n_k) = GGMLType.Q4_K, SMALL.values()
    stack = random_weight(t, n_expert * n_rows, n_k, seed=3)
    ids = random_ids(8, 4, n_expert, seed=4, overlap=3)
    x = np.random.default_rng(5).standard_normal((8, n_k)).astype(np.float32)
    tuning = tuning_for(device, variant, rows=2)
    batch = run_matvec_id(ws, tuning, stack, t, n_expert, n_rows, n_k, x, ids)
    for tok in range(8):
        alone = run_matvec_id(ws, tuning, stack, t, n_expert, n_rows, n_k, x[tok:tok + 1], ids[tok:tok + 1])
        assert np.array_equal(alone, batch[tok * 4:(tok + 1) * 4]), f"token {tok} differs alone vs in batch"
    check(batch, stack, t, n_expert, n_rows, n_k, x, ids)


@pytest.mark.parametrize("accumulate", [False, True])
def test_matvec_id_down_and_weighted_sum(device, ws, accumulate):
    """Down projection (one input per slot), then sum_j w_j y_j per token (into the residual)."""
    t, n_expert, n_rows, n_k, n_tok, n_used = GGMLType.Q6_K, 12, 64, 256, 3, 4
    stack = random_weight(t, n_expert * n_rows, n_k, seed=6)
    ids = random_ids(n_tok, n_used, n_expert, seed=7, overlap=1)
    x = np.random.default_rng(8).standard_normal((n_tok * n_used, n_k)).astype(np.float32)
    weights = np.random.default_rng(9).uniform(0, 1, (n_tok, n_used)).astype(np.float32)
    y0 = np.random.default_rng(10).standard_normal((n_tok, n_rows)).astype(np.float32)
    tuning = tuning_for(device, "shared", rows=2)
    slots = run_matvec_id(ws, tuning, stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot=True)
    check(slots, stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot=True)

    sv = ws.input("slots", slots)
    wv = ws.input("weights", weights)
    yv = ws.output(n_tok * n_rows, fill=y0 if accumulate else None)
    ws.run(lambda rec: MatVecId(ws.device, tuning).record_weighted_sum(rec, sv, wv, yv, n_tok, n_used, n_rows,
                                                                       accumulate=accumulate))
    got = ws.read_output(n_tok * n_rows).reshape(n_tok, n_rows)
    want = weighted_sum_ref(slots, weights, n_rows, y0 if accumulate else None)
    scale = weighted_sum_ref(np.abs(slots), weights, n_rows, np.abs(y0) if accumulate else None)
    assert_close(got, want, 1e-6 * scale, "matvec_id weighted sum")


def test_matvec_id_bad_expert_id_gives_nan_rows(device, ws):
    t, (n_expert, n_rows, n_k) = GGMLType.Q8_0, SMALL.values()
    stack = random_weight(t, n_expert * n_rows, n_k, seed=11)
    ids = np.array([[2, 99], [99, 5]], np.uint32)
    x = np.random.default_rng(12).standard_normal((2, n_k)).astype(np.float32)
    got = run_matvec_id(ws, tuning_for(device, "shared", rows=2), stack, t, n_expert, n_rows, n_k, x, ids)
    assert np.isnan(got[[1, 2]]).all() and np.isfinite(got[[0, 3]]).all()


def test_matvec_id_qwen35b_a3b_gate_shape_split_stack(device, ws):
    """256 experts x 512 x 2048 at Q4_K (151 MB, over lavapipe's 128 MiB buffer range): two parts; top-8."""
    t, n_expert, n_rows, n_k = GGMLType.Q4_K, 256, 512, 2048
    stack = random_weight(t, n_expert * n_rows, n_k, seed=13)
    ids = random_ids(2, 8, n_expert, seed=14, overlap=3)
    assert (ids >= 128).any() and (ids < 128).any()  # both parts are used
    x = np.random.default_rng(15).standard_normal((2, n_k)).astype(np.float32)
    got = run_matvec_id(ws, MatVecId(device).tuning, stack, t, n_expert, n_rows, n_k, x, ids,
                        parts=[(0, 128), (128, 128)])
    want = matvec_id_ref(stack, t, n_expert, n_rows, n_k, x, ids)
    assert_close(got, want, 1e-5 * np.abs(want).max(), "matvec_id 35B-A3B gate")


def test_matvec_id_more_than_8_tokens_share_an_expert(device, ws):
    """11 tokens all choosing one expert: its entries are split over groups of 8 and 3."""
    t, (n_expert, n_rows, n_k) = GGMLType.Q5_K, SMALL.values()
    stack = random_weight(t, n_expert * n_rows, n_k, seed=16)
    ids = random_ids(11, 2, n_expert, seed=17, overlap=1)
    x = np.random.default_rng(18).standard_normal((11, n_k)).astype(np.float32)
    got = run_matvec_id(ws, tuning_for(device, "shared", rows=2), stack, t, n_expert, n_rows, n_k, x, ids)
    check(got, stack, t, n_expert, n_rows, n_k, x, ids)


@pytest.mark.slow
def test_matvec_id_qwen35b_a3b_down_shape_split_stack(device, ws):
    """256 experts x 2048 x 512 at Q6_K (220 MB) in three parts, one input per slot; 4 tokens, top-8."""
    t, n_expert, n_rows, n_k, n_tok = GGMLType.Q6_K, 256, 2048, 512, 4
    stack = random_weight(t, n_expert * n_rows, n_k, seed=19)
    ids = random_ids(n_tok, 8, n_expert, seed=20, overlap=4)
    x = np.random.default_rng(21).standard_normal((n_tok * 8, n_k)).astype(np.float32)
    got = run_matvec_id(ws, MatVecId(device).tuning, stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot=True,
                        parts=[(0, 100), (100, 100), (200, 56)])
    want = matvec_id_ref(stack, t, n_expert, n_rows, n_k, x, ids, x_per_slot=True)
    assert_close(got, want, 1e-5 * np.abs(want).max(), "matvec_id 35B-A3B down")
