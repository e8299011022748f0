"""Prefill attention (flash_attn.comp) past a driver's loop budget: windows of the context, one dispatch each.

lavapipe (Mesa's gallivm) ends every loop of an invocation once 65535 loop iterations have run in all. Before
the windows, a prefill workgroup of the 27B attention shape stopped after ~9.2k KV positions at the engine's
q_tile 4, so prompt tokens further into the context got wrong attention. Here the kernel runs at most
`window_chunks` chunks per dispatch and resumes from the (O, M, L) partials the previous window left.
"""

import dataclasses

import numpy as np
import pytest

from guarded import assert_close
from test_flash_attn import ATOL, RTOL, Case
from vkmtp.ops.flash_attn import (LOOP_MARGIN, FlashAttn, prefill_loops_per_tile, prefill_window_chunks)


def engine_q_tile(device, n_head: int, n_head_kv: int) -> int:
    return min(4, FlashAttn.max_q_tile(device, n_head, n_head_kv, 256))   # as vkmtp.graph.forward


def prefill_dispatches(labels) -> int:
    return sum(1 for label in labels if label.startswith("flash_attn") and "reduce" not in label
               and "dec" not in label)


def test_windows_follow_the_loop_budget():
    assert prefill_window_chunks(None, 128, 64, 4, 256, 1) is None
    w = prefill_window_chunks(65535, 128, 64, 4, 256, 1)
    assert w * 2 * LOOP_MARGIN * prefill_loops_per_tile(4, 64, 256) <= 65535          # tiles per split in budget
    assert (w + 1) * 2 * LOOP_MARGIN * prefill_loops_per_tile(4, 64, 256) > 65535
    assert prefill_window_chunks(65535, 128, 64, 4, 256, 3) == 3 * w               # whole rounds of the splits
    with pytest.raises(ValueError, match="loop budget"):
        prefill_window_chunks(100, 128, 64, 4, 256, 1)


@pytest.mark.lanes
@pytest.mark.parametrize("f16_math", [False, True], ids=["f32", "f16_math"])
@pytest.mark.parametrize("n_splits", [1, 2])
def test_windows_give_the_bits_of_one_pass(device, f16_math, n_splits):
    """A prompt chunk of two sequences (one short, one long: most windows are empty for one of its workgroups)
    over many small windows gives exactly the bits of one pass over the context (a GPU's path), never reads
    past a token's causal range (NaN rows there) and matches the reference."""
    if f16_math and not device.caps.f16_math:
        pytest.skip("the device did not enable shaderFloat16")
    rng = np.random.default_rng(11 + n_splits)
    pos = list(range(700, 713)) + [5, 6, 7]
    seq = [0] * 13 + [1] * 3
    case = Case(rng, "f16", "f16", 24, 4, 256, pos, seq, n_ctx=1024, n_slots=2)
    q_tile = engine_q_tile(device, 24, 4)
    budget = 2 * LOOP_MARGIN * prefill_loops_per_tile(q_tile, 64, 256)         # 1 chunk of 128 per split and window
    windowed_caps = dataclasses.replace(device.caps, loop_iterations=budget)
    one_pass_caps = dataclasses.replace(device.caps, loop_iterations=None)
    fa = FlashAttn(device, 24, case.k_layout, q_tile=q_tile, n_splits=n_splits, caps=windowed_caps)
    assert fa.window_chunks == n_splits
    knobs = dict(q_tile=q_tile, n_splits=n_splits, f16_math=f16_math)
    windowed = case.run(device, caps=windowed_caps, **knobs)
    assert prefill_dispatches(case.labels) == 1024 // (128 * n_splits)
    one_pass = case.run(device, caps=one_pass_caps, **knobs)
    assert prefill_dispatches(case.labels) == 1
    assert np.array_equal(windowed, one_pass)
    if not f16_math:
        assert_close(windowed, case.reference(), ATOL, RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("rows_per_part", [None, 6000])
def test_a_prefill_chunk_past_16k_positions_matches_the_reference(device, rows_per_part):
    """24 prompt tokens at positions 20000..20023 on Qwen3.6-27B's attention (24 / 4 heads of 256, f16 KV,
    the engine's q_tile), the cache whole or in parts of 6000 rows: with the device's own loop budget (on
    lavapipe windows of 4608 positions) and with a budget 4x smaller (windows of 1152). The one-pass kernel
    stops after ~9k positions per workgroup on lavapipe: without windows 92160 of these outputs were NaN/Inf."""
    rng = np.random.default_rng(20000)
    pos = list(range(20000, 20024))
    case = Case(rng, "f16", "f16", 24, 4, 256, pos, [0] * len(pos), n_ctx=20480)
    q_tile = engine_q_tile(device, 24, 4)
    want = case.reference()
    got = case.run(device, q_tile=q_tile, rows_per_part=rows_per_part)
    assert_close(got, want, ATOL, RTOL)
    small = dataclasses.replace(device.caps, loop_iterations=65535 // 4)
    windowed = case.run(device, q_tile=q_tile, rows_per_part=rows_per_part, caps=small)
    assert prefill_dispatches(case.labels) >= 3
    assert_close(windowed, want, ATOL, RTOL)
    assert np.array_equal(windowed, got)   # windows keep the one-pass bits
