"""FlashAttn (shaders/flash_attn.comp + flash_attn_reduce.comp) against vkmtp.ref.ops.flash_attn.

K/V caches are filled with random rows for the positions the tokens may see and with NaN bytes elsewhere,
so reading past a token's causal length shows up as NaN.
"""

import dataclasses

import numpy as np
import pytest

from guarded import Packed, assert_close, token_records, upload_parts
from vkmtp.ops.flash_attn import (DEC_LOOPS_PER_TILE, DEC_TILE, LOOP_MARGIN, FlashAttn, budget_splits,
                                  decode_splits)
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.flash_attn import flash_attn
from vkmtp.ref.ops.set_rows import decode_rows, encode_rows

# f32 dot products, online softmax and exp() against float64; outputs are O(1) (unit-normal V)
ATOL = 3e-5
RTOL = 1e-4


class Case:
    """Packed q+gate [n_tok, H, 2, D] and K/V caches with NaN bytes in the rows no token may read."""

    def __init__(self, rng, k_type, v_type, n_head, n_head_kv, head_dim, pos, seq, n_ctx, n_slots=1):
        self.k_layout = KvLayout(k_type, n_head_kv, head_dim, n_ctx, n_slots)
        self.v_layout = KvLayout(v_type, n_head_kv, head_dim, n_ctx, n_slots)
        self.n_head, self.head_dim = n_head, head_dim
        self.records = token_records(pos, seq)
        n_tok = len(self.records)
        self.qg = rng.normal(0, 1, (n_tok, n_head, 2, head_dim)).astype(np.float32)
        self.qg[:, :, 0] *= 4.0  # sharper softmax than unit q
        n_rows, width = self.k_layout.n_rows, n_head_kv * head_dim
        visible = np.zeros(n_rows, bool)
        for p_, s_ in zip(pos, seq):
            visible[s_ * n_ctx: s_ * n_ctx + p_ + 1] = True
        self.k_raw = encode_rows(rng.normal(0, 1, (n_rows, width)).astype(np.float32), k_type)
        self.v_raw = encode_rows(rng.normal(0, 1, (n_rows, width)).astype(np.float32), v_type)
        self.k_raw[~visible] = 0xFF
        self.v_raw[~visible] = 0xFF
        self.k = decode_rows(self.k_raw, k_type, width).reshape(n_rows, n_head_kv, head_dim)
        self.v = decode_rows(self.v_raw, v_type, width).reshape(n_rows, n_head_kv, head_dim)

    def reference(self, gated=True):
        return flash_attn(self.records, self.qg[:, :, 0], self.k, self.v, self.k_layout.n_ctx,
                          gate=self.qg[:, :, 1] if gated else None)

    def run(self, device, sel=slice(None), gated=True, rows_per_part=None, **knobs):
        """The kernel's output; with rows_per_part, K and V are passed as parts of that many rows, each its own
        buffer (vkmtp.ops.kv_parts)."""
        records, qg = self.records[sel], self.qg[sel]
        n_tok = len(records)
        fa = FlashAttn(device, self.n_head, self.k_layout, self.v_layout, **knobs)
        parts = [upload_parts(device, raw, rows_per_part) for raw in (self.k_raw, self.v_raw)] \
            if rows_per_part else []
        d, h = self.head_dim, self.n_head
        bufs = Packed(device, {"tok": records, "qg": qg, "k": self.k_raw, "v": self.v_raw,
                               "out": n_tok * h * d * 4, "scratch": fa.scratch_bytes(n_tok)})
        qv = bufs.view("qg")
        q = Strided(qv, h * 2 * d, 2 * d)
        gate = Strided(qv.sub(d * 4, qv.nbytes - d * 4), h * 2 * d, 2 * d) if gated else None
        rec = device.recorder()
        out = Strided.heads(bufs.view("out"), h, d)
        k_cache, v_cache = ([b.view() for b in p] for p in parts) if parts else (bufs.view("k"), bufs.view("v"))
        fa.record(rec, bufs.view("tok"), q, k_cache, v_cache, out, n_tok, bufs.view("scratch"), gate=gate)
        rec.finish()
        rec.run()
        self.labels = list(rec.labels)   # the variants dispatched
        out = bufs.read("out").reshape(n_tok, h, d)
        bufs.check_guards()
        bufs.destroy()
        for buf in (b for p in parts for b in p):
            buf.destroy()
        return out



@pytest.mark.lanes
@pytest.mark.parametrize("k_type,v_type,n_head,n_head_kv,head_dim,pos", [
    ("f16", "f16", 24, 4, 256, [299]),                 # Qwen3.6-27B decode
    ("q8_0", "q8_0", 16, 2, 256, [197, 198, 199, 200]),  # Qwen3.6-35B-A3B verify of 4
    ("f16", "q8_0", 8, 8, 64, [0, 1, 130]),            # MHA, a token at position 0
    ("q8_0", "f16", 12, 4, 128, [60, 61, 62, 63, 64, 65, 66, 67]),
])
def test_decode_matches_reference(device, k_type, v_type, n_head, n_head_kv, head_dim, pos):
    rng = np.random.default_rng(len(pos) * head_dim)
    case = Case(rng, k_type, v_type, n_head, n_head_kv, head_dim, pos, [0] * len(pos), n_ctx=320)
    assert_close(case.run(device, n_splits=3), case.reference(), ATOL, RTOL)


@pytest.mark.lanes
def test_tokens_of_two_sequences_in_one_batch(device):
    rng = np.random.default_rng(1)
    case = Case(rng, "f16", "f16", 6, 2, 128, pos=[40, 41, 7, 8, 9], seq=[1, 1, 0, 0, 0], n_ctx=64, n_slots=2)
    assert_close(case.run(device, n_splits=2, chunk=64), case.reference(), ATOL, RTOL)


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_verify_batch_is_bit_identical_to_single_tokens(device, kv_type):
    """MTP verify runs 1 + n_draft tokens; each must equal plain decode of that token alone."""
    rng = np.random.default_rng(2)
    pos = list(range(700, 708))
    case = Case(rng, kv_type, kv_type, 24, 4, 256, pos, [0] * 8, n_ctx=720)
    together = case.run(device, n_splits=4, chunk=128)
    for t in range(8):
        alone = case.run(device, sel=slice(t, t + 1), n_splits=4, chunk=128)
        assert np.array_equal(alone[0], together[t]), f"token {t} differs alone vs in the verify batch"
    assert_close(together, case.reference(), ATOL, RTOL)


@pytest.mark.lanes
@pytest.mark.parametrize("n_head,n_head_kv", [(8, 2), (16, 4), (24, 4)], ids=["0.8b", "9b", "27b"])
def test_prefill_f16_loads_give_the_word_paths_bits(device, n_head, n_head_kv):
    """Prefill over f16 caches at the real attention shapes (head_dim 256, the engine's q_tile): read through
    16-bit storage (F16_LOADS, where the device enabled it) or as 32-bit words, the same bits."""
    rng = np.random.default_rng(n_head)
    pos = list(range(120, 133))                      # a 13-token prompt chunk after 120 cached positions
    case = Case(rng, "f16", "f16", n_head, n_head_kv, 256, pos, [0] * len(pos), n_ctx=160)
    q_tile = min(4, FlashAttn.max_q_tile(device, n_head, n_head_kv, 256))
    words = case.run(device, q_tile=q_tile, f16_loads=False)
    assert_close(words, case.reference(), ATOL, RTOL)
    if not device.caps.f16_storage:
        return                                       # VKMTP_FEATURES=none: only the word path exists
    assert FlashAttn(device, n_head, case.k_layout, q_tile=q_tile).f16_loads == device.caps.attn_f16_loads
    np.testing.assert_array_equal(case.run(device, q_tile=q_tile, f16_loads=True), words)
    assert "flash_attn_f16_loads" in case.labels   # that variant ran


@pytest.mark.parametrize("n_head,n_head_kv,k_type", [
    (8, 2, "f16"),      # Qwen3.5-0.8B
    (16, 4, "q8_0"),    # Qwen3.5-9B
    (24, 4, "f16"),     # Qwen3.6-27B
    (16, 2, "q8_0"),    # Qwen3.6-35B-A3B
])
def test_prefill_q_tile_agrees_with_decode_and_reference(device, n_head, n_head_kv, k_type):
    """Prefill (flash_attn.comp, q_tile tokens per workgroup, as the engine builds it) and decode
    (flash_attn_dec.comp with the device's split count) are different kernels: the same results to rounding,
    at the attention shapes of the real models (head_dim 256), over several chunks of the context."""
    rng = np.random.default_rng(3)
    pos = list(range(290, 300))
    case = Case(rng, k_type, "f16", n_head, n_head_kv, 256, pos, [0] * len(pos), n_ctx=320)
    q_tile = min(4, FlashAttn.max_q_tile(device, n_head, n_head_kv, 256))
    assert q_tile >= 2
    tiled = case.run(device, q_tile=q_tile)
    single = case.run(device, q_tile=1)
    want = case.reference()
    assert_close(tiled, want, ATOL, RTOL)
    assert_close(single, want, ATOL, RTOL)
    assert_close(tiled, single, ATOL, RTOL)


@pytest.mark.lanes
@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_decode_lanes_per_row_agree_and_stay_batch_invariant(device, kv_type, lanes):
    """1 lane per KV row (no subgroup operations: the path of devices without shuffles) and several lanes
    summed by subgroup shuffles give the reference; each setting is batch invariant on its own."""
    rng = np.random.default_rng(8)
    pos = [300, 301, 302, 303]
    case = Case(rng, kv_type, kv_type, 16, 2, 256, pos, [0] * 4, n_ctx=320)
    together = case.run(device, n_splits=3, chunk=64, lanes=lanes)
    assert_close(together, case.reference(), ATOL, RTOL)
    alone = case.run(device, sel=slice(2, 3), n_splits=3, chunk=64, lanes=lanes)
    assert np.array_equal(alone[0], together[2])


def test_decode_splits_follow_compute_units_and_context():
    """Splits fill the device for one token (2 workgroups per compute unit over the KV heads) but never
    exceed the context's chunks or the reduce's 64."""
    assert decode_splits(compute_units=2, n_head_kv=2, n_ctx=131072, chunk=128) == 2
    assert decode_splits(compute_units=132, n_head_kv=4, n_ctx=131072, chunk=128) == 64
    assert decode_splits(compute_units=60, n_head_kv=4, n_ctx=32768, chunk=128) == 30
    assert decode_splits(compute_units=60, n_head_kv=4, n_ctx=1024, chunk=128) == 8
    assert decode_splits(compute_units=60, n_head_kv=4, n_ctx=64, chunk=128) == 1


def test_decode_split_count_comes_from_the_device(device):
    layout = KvLayout("f16", 2, 256, n_ctx=65536)
    fa = FlashAttn(device, 8, layout)
    caps = device.caps
    least = budget_splits(caps.loop_iterations, 65536, fa.chunk)
    want = max(least, caps.attn_n_splits or decode_splits(caps.compute_units, 2, 65536, fa.chunk))
    assert fa.n_splits == want
    assert FlashAttn(device, 8, layout, caps=dataclasses.replace(caps, attn_n_splits=5)).n_splits == max(5, least)
    assert FlashAttn(device, 8, layout, caps=dataclasses.replace(caps, attn_n_splits=None,
                                                                 compute_units=64)).n_splits == 64


@pytest.mark.parametrize("chunk", [64, 128, 1024])
def test_budget_splits_keep_every_workgroup_within_the_loop_budget(chunk):
    """A split takes every n_splits-th chunk: the fewest splits whose busiest workgroup stays within the
    budget (with the margin), and one split fewer would not."""
    budget = 65535

    def loops(n_ctx, n_splits):
        chunks = -(-n_ctx // chunk)
        return LOOP_MARGIN * DEC_LOOPS_PER_TILE * (chunk // DEC_TILE) * -(-chunks // n_splits)

    assert budget_splits(None, 262144, chunk) == 1        # GPUs: no budget
    for n_ctx in (64, 4096, 31744, 32768, 131072, 262144):
        s = budget_splits(budget, n_ctx, chunk)
        assert loops(n_ctx, s) <= budget
        assert s == 1 or loops(n_ctx, s - 1) > budget
    assert budget_splits(budget, 262144, 128) > 1


def test_too_few_splits_for_the_loop_budget_are_refused(device):
    caps = dataclasses.replace(device.caps, loop_iterations=65535, attn_n_splits=None, compute_units=1)
    layout = KvLayout("f16", 2, 256, n_ctx=131072)
    least = budget_splits(65535, 131072, 128)
    assert FlashAttn(device, 8, layout, chunk=128, caps=caps).n_splits == least
    # a tuned split count below what the budget needs is raised, an explicit one is refused
    assert FlashAttn(device, 8, layout, chunk=128, caps=dataclasses.replace(caps, attn_n_splits=1)).n_splits \
        == least
    with pytest.raises(ValueError, match="loops after 65535 iterations"):
        FlashAttn(device, 8, layout, n_splits=least - 1, chunk=128, caps=caps)
    with pytest.raises(ValueError, match="more than the reduce's 64"):
        FlashAttn(device, 8, KvLayout("f16", 2, 256, n_ctx=1 << 22), chunk=128, caps=caps)


@pytest.mark.slow
def test_one_workgroup_takes_the_longest_context_its_loop_budget_allows(device):
    """Qwen3.5-0.8B's attention (8 / 2 heads of 256) over the longest cache one split may take under a budget of
    65535 loop iterations. lavapipe ends an invocation's loops after exactly that many: a kernel that looped
    more per tile than DEC_LOOPS_PER_TILE * LOOP_MARGIN would stop early here and miss the reference (the
    kernel before this test stopped after 5312 positions per workgroup)."""
    rng = np.random.default_rng(8)
    caps = dataclasses.replace(device.caps, loop_iterations=65535, attn_n_splits=None, compute_units=1)
    chunk = 128
    n_ctx = chunk * (65535 // (LOOP_MARGIN * DEC_LOOPS_PER_TILE) // (chunk // DEC_TILE))
    assert budget_splits(65535, n_ctx, chunk) == 1 and budget_splits(65535, n_ctx + 1, chunk) == 2
    case = Case(rng, "f16", "f16", 8, 2, 256, [n_ctx - 2, n_ctx - 1], [0, 0], n_ctx=n_ctx)
    got = case.run(device, chunk=chunk, caps=caps)
    assert "flash_attn_dec" in case.labels[0]
    assert_close(got, case.reference(), ATOL, RTOL)


@pytest.mark.parametrize("n_splits,chunk", [(1, 64), (7, 64), (2, 192)])
def test_split_settings_agree_with_reference(device, n_splits, chunk):
    rng = np.random.default_rng(4)
    case = Case(rng, "f16", "f16", 16, 2, 256, [450, 451], [0, 0], n_ctx=512)
    assert_close(case.run(device, n_splits=n_splits, chunk=chunk, gated=False), case.reference(gated=False),
                 ATOL, RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_long_context_27b_decode(device, kv_type):
    rng = np.random.default_rng(5)
    case = Case(rng, kv_type, kv_type, 24, 4, 256, [4094, 4095], [0, 0], n_ctx=4096)
    assert_close(case.run(device), case.reference(), ATOL, RTOL)


@pytest.mark.lanes
@pytest.mark.parametrize("k_type,v_type,rows_per_part", [("f16", "f16", 50), ("q8_0", "f16", 64),
                                                         ("q8_0", "q8_0", 38)])
def test_a_cache_in_parts_gives_the_bits_of_one_buffer(device, k_type, v_type, rows_per_part):
    """Caches cut into buffers of rows_per_part rows (a layer's cache larger than maxStorageBufferRange): decode
    and verify tokens of two sequences whose rows cross part boundaries give exactly the one-buffer bits."""
    rng = np.random.default_rng(6)
    pos, seq = [95, 96, 97, 30, 70], [0, 0, 0, 1, 2]
    case = Case(rng, k_type, v_type, 8, 2, 128, pos, seq, n_ctx=100, n_slots=3)
    whole = case.run(device, n_splits=3, chunk=64)
    parted = case.run(device, n_splits=3, chunk=64, rows_per_part=rows_per_part)
    assert np.array_equal(parted, whole)
    assert_close(whole, case.reference(), ATOL, RTOL)


def test_bad_configurations_are_refused(device):
    layout = KvLayout("f16", 2, 256, n_ctx=64)
    with pytest.raises(ValueError, match="multiple of n_head_kv"):
        FlashAttn(device, 5, layout)
    with pytest.raises(ValueError, match="chunk"):
        FlashAttn(device, 4, layout, chunk=100)
    with pytest.raises(ValueError, match="shared memory|exceed block_size"):
        FlashAttn(device, 16, layout, q_tile=16)
    if not device.caps.f16_storage:
        with pytest.raises(ValueError, match="storage_buffer_16bit"):
            FlashAttn(device, 4, layout, q_tile=2, f16_loads=True)
    with pytest.raises(ValueError, match="lanes 3 must be a power of 2"):
        FlashAttn(device, 4, layout, lanes=3)
    with pytest.raises(ValueError, match="differ in shape"):
        FlashAttn(device, 4, layout, KvLayout("f16", 2, 128, n_ctx=64))
