"""shaders/moe_router.comp and moe_experts_used.comp against vkmtp.ref.ops.moe_router."""

from __future__ import annotations

import numpy as np
import pytest
from guarded_workspace import Workspace, assert_close

from vkmtp.ops.moe_router import MoeRouter, used_list_words
from vkmtp.ref.ops.moe_router import NO_EXPERT, experts_used, moe_router

# f32 softmax (GPU exp) vs float64: weights are in [0, 1]
ATOL, RTOL = 2e-7, 2e-6


def variants(device):
    return ["subgroup", "shared"] if device.info.has_subgroup_arithmetic else ["shared"]


def separated_logits(rng, n_tok, n_expert, pad=0):
    """Random logits whose ranks are unambiguous in f32 (no two within 1e-4), plus padding columns."""
    base = rng.permutation(n_expert)[None, :] * 0.01 + rng.permutation(n_tok)[:, None] * 0.001
    noise = rng.permutation(n_tok * n_expert).reshape(n_tok, n_expert) * 1e-6
    logits = (rng.standard_normal((n_tok, 1)) + base * 4 - 2 + noise).astype(np.float32)
    return np.concatenate([logits, np.full((n_tok, pad), 50.0, np.float32)], axis=1)


def run_router(device, router: MoeRouter, logits, n_expert, used=True):
    n_tok, stride = logits.shape
    k = router.n_used
    ids0 = np.full((n_tok, k), 0xABCD, np.uint32)
    w0 = np.full((n_tok, k), -1.0, np.float32)
    used0 = np.full(used_list_words(n_expert, n_tok, k), 0xABCD, np.uint32)
    ws = Workspace(device, Workspace.size_for(logits, ids0, w0, used0))
    lv, iv = ws.put("logits", logits), ws.put("ids", ids0)
    wv, uv = ws.put("weights", w0), ws.put("used", used0)
    rec = device.recorder()
    router.record(rec, lv, stride, n_tok, iv, wv, used=uv if used else None)
    rec.finish()
    rec.run()
    rec.destroy()
    got = (ws.read("ids", ids0.shape, np.uint32), ws.read("weights", w0.shape),
           ws.read("used", used0.shape, np.uint32))
    ws.check_guards()
    ws.destroy()
    return got


def check(device, router, logits, n_expert):
    ids, weights, used = run_router(device, router, logits, n_expert)
    want_ids, want_w = moe_router(logits[:, :n_expert], router.n_used)
    np.testing.assert_array_equal(ids, want_ids)
    assert_close("weights", weights, want_w, ATOL, RTOL)
    np.testing.assert_array_equal(used, experts_used(ids, n_expert))
    return ids, weights, used


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok", [1, 3, 8])
@pytest.mark.parametrize("variant", ["subgroup", "shared"])
def test_moe_router_qwen_shape(device, variant, n_tok):
    """256 experts, top-8 (Qwen3.5/3.6 MoE), decode and verify steps; logits with padding columns."""
    if variant not in variants(device):
        pytest.skip("no subgroup arithmetic")
    logits = separated_logits(np.random.default_rng(n_tok), n_tok, 256, pad=5)
    check(device, MoeRouter(device, 256, 8, variant), logits, 256)


@pytest.mark.parametrize("variant", ["subgroup", "shared"])
@pytest.mark.parametrize("n_expert,n_used,block_size",
                         [(60, 4, 64), (512, 10, 128), (128, 1, 32), (256, 8, 256), (7, 7, 64)])
def test_moe_router_other_shapes(device, variant, n_expert, n_used, block_size):
    if variant not in variants(device):
        pytest.skip("no subgroup arithmetic")
    logits = separated_logits(np.random.default_rng(n_expert), 5, n_expert)
    check(device, MoeRouter(device, n_expert, n_used, variant, block_size), logits, n_expert)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["subgroup", "shared"])
def test_moe_router_ties_go_to_the_lower_expert(device, variant):
    if variant not in variants(device):
        pytest.skip("no subgroup arithmetic")
    logits = np.zeros((3, 256), np.float32)
    logits[1, [200, 7, 100, 3]] = 2.0            # four equal winners, the rest tied at 0
    logits[2] = np.repeat(np.arange(32, dtype=np.float32), 8)[::-1]   # pairs..octets of equal values
    ids, weights, _ = check(device, MoeRouter(device, 256, 8, variant), logits, 256)
    np.testing.assert_array_equal(ids[0], np.arange(8))
    np.testing.assert_array_equal(ids[1], [3, 7, 100, 200, 0, 1, 2, 4])
    np.testing.assert_array_equal(ids[2], np.arange(8))
    np.testing.assert_allclose(weights[0], 1 / 8, rtol=1e-6)


def test_moe_router_prefill_chunk(device):
    logits = separated_logits(np.random.default_rng(1), 300, 256)
    check(device, MoeRouter(device, 256, 8), logits, 256)


def test_experts_used_list_format(device):
    """Ids as another producer might write them, including ids out of range (ignored)."""
    ids = np.array([[3, 1, 9], [1, 7, 3]], np.uint32)   # 9 >= n_expert
    ws = Workspace(device, 1 << 12)
    iv = ws.put("ids", ids)
    uv = ws.put("used", np.zeros(used_list_words(8, 2, 3), np.uint32))
    rec = device.recorder()
    MoeRouter(device, n_expert=8, n_used=3).record_used(rec, iv, 2, uv)
    rec.finish()
    rec.run()
    got = ws.read("used", (7,), np.uint32)
    ws.check_guards()
    ws.destroy()
    np.testing.assert_array_equal(got, [3, 1, 3, 7, NO_EXPERT, NO_EXPERT, NO_EXPERT])
    np.testing.assert_array_equal(got, experts_used(ids, 8))


def test_moe_router_refuses_bad_configuration(device):
    with pytest.raises(ValueError, match="n_used"):
        MoeRouter(device, 256, 40)
    with pytest.raises(ValueError, match="block_size"):
        MoeRouter(device, 256, 8, block_size=96)
    with pytest.raises(ValueError, match="variant"):
        MoeRouter(device, 256, 8, variant="warp")
