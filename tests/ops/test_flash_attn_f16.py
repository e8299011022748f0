"""Prefill flash attention with float16 math (flash_attn.comp's F16_MATH) against its rounding model
(vkmtp.ref.ops.flash_attn.flash_attn_f16) and the float64 reference, at the attention shapes of Qwen3.5/3.6
0.8B / 9B / 27B / 35B-A3B (head_dim 256), on the feature path and (VKMTP_FEATURES=none) without it.

Measured on lavapipe (Mesa 22.3; 4, 8 and 16 lanes alike) with these cases (outputs O(1), max |out| 2.4-2.8): the
f32 kernel is 4.5-7.3e-6 from float64, the f16 kernel 3.3-5.8e-3, and the f16 kernel 3.1-5.3e-4 from the rounding
model (it takes its probabilities against the running max of its tiles, and the device may fuse the dot's
multiply-adds). The bounds below are about 2x those measurements.
"""

import dataclasses

import numpy as np
import pytest

from test_flash_attn import ATOL, RTOL, Case
from guarded import assert_close
from vkmtp.ops.flash_attn import FlashAttn
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ref.ops.flash_attn import flash_attn_f16

F16_VS_F64 = 1e-2     # max |f16 kernel - float64 reference|
F16_VS_MODEL = 1e-3   # max |f16 kernel - flash_attn_f16|

SHAPES = [(8, 2, "f16", "f16"), (16, 4, "f16", "f16"), (24, 4, "f16", "f16"), (16, 2, "q8_0", "q8_0"),
          (24, 4, "q8_0", "f16")]
SHAPE_IDS = ["0.8b", "9b", "27b", "35b-a3b-q8_0", "27b-q8_0-k"]


def model(case: Case) -> np.ndarray:
    return flash_attn_f16(case.records, case.qg[:, :, 0], case.k, case.v, case.k_layout.n_ctx,
                          gate=case.qg[:, :, 1]).astype(np.float64)


def engine_q_tile(device, n_head: int, n_head_kv: int) -> int:
    return min(4, FlashAttn.max_q_tile(device, n_head, n_head_kv, 256))   # as vkmtp.graph.forward


@pytest.mark.lanes
@pytest.mark.parametrize("n_head,n_head_kv,k_type,v_type", SHAPES, ids=SHAPE_IDS)
def test_f16_math_is_bounded_and_follows_its_rounding_model(device, n_head, n_head_kv, k_type, v_type):
    """A 13-token prompt chunk after 120 cached positions (the engine's q_tile): the f32 kernel matches float64
    to f32 rounding; the f16 kernel stays within F16_VS_F64 of it and much closer to the f16 rounding model."""
    rng = np.random.default_rng(n_head * 10 + n_head_kv)
    pos = list(range(120, 133))
    case = Case(rng, k_type, v_type, n_head, n_head_kv, 256, pos, [0] * len(pos), n_ctx=160)
    q_tile = engine_q_tile(device, n_head, n_head_kv)
    want = case.reference().astype(np.float64)
    f32 = case.run(device, q_tile=q_tile, f16_math=False)
    assert not any("f16_math" in label for label in case.labels)
    assert_close(f32, want, ATOL, RTOL)
    if not device.caps.f16_math:
        with pytest.raises(ValueError, match="shader_float16"):
            FlashAttn(device, n_head, case.k_layout, case.v_layout, q_tile=q_tile, f16_math=True)
        return                                       # VKMTP_FEATURES=none: only the f32 path exists
    f16 = case.run(device, q_tile=q_tile, f16_math=True)
    assert any("f16_math" in label for label in case.labels)   # the F16_MATH variant ran
    to_ref = float(np.abs(f16 - want).max())
    to_model = float(np.abs(f16 - model(case)).max())
    print(f"{n_head}/{n_head_kv} {k_type}/{v_type}: f32 {np.abs(f32 - want).max():.1e}, f16 {to_ref:.1e} "
          f"from float64; f16 {to_model:.1e} from its model")
    assert to_ref < F16_VS_F64
    assert to_model < F16_VS_MODEL
    assert to_model < 0.25 * to_ref                  # the model explains the error: the roundings are those
    assert to_ref > 10 * float(np.abs(f32 - want).max())   # products did run in f16


@pytest.mark.lanes
def test_f16_math_gives_the_same_bits_through_16bit_loads_words_and_cache_parts(device):
    """The F16_MATH kernel reads f16 caches through 16-bit storage (F16_LOADS), as 32-bit words, or from a cache
    cut into parts (KV_PARTS): the same f16 values, so the same bits. Two sequences in one chunk."""
    if not device.caps.f16_math:
        pytest.skip("the device enabled no shaderFloat16 (VKMTP_FEATURES): no F16_MATH variant")
    rng = np.random.default_rng(7)
    pos, seq = [60, 61, 62, 63, 64, 30, 31], [0, 0, 0, 0, 0, 1, 1]
    case = Case(rng, "f16", "f16", 8, 2, 256, pos, seq, n_ctx=96, n_slots=2)
    q_tile = engine_q_tile(device, 8, 2)
    words = case.run(device, q_tile=q_tile, f16_math=True, f16_loads=False)
    assert_close(words, case.reference(), F16_VS_F64, 0.0)
    parts = case.run(device, q_tile=q_tile, f16_math=True, rows_per_part=50)
    np.testing.assert_array_equal(parts, words)
    if device.caps.f16_storage:
        loads = case.run(device, q_tile=q_tile, f16_math=True, f16_loads=True)
        assert "flash_attn_f16_loads_f16_math" in case.labels
        np.testing.assert_array_equal(loads, words)


def test_f16_math_comes_from_the_caps_and_stays_out_of_decode(device):
    layout = KvLayout("f16", 2, 256, n_ctx=64)
    caps = device.caps
    assert caps.attn_f16_math <= caps.f16_math       # never chosen without shaderFloat16
    assert FlashAttn(device, 8, layout, q_tile=2).f16_math == caps.attn_f16_math
    on = dataclasses.replace(caps, attn_f16_math=True)
    off = dataclasses.replace(caps, attn_f16_math=False)
    assert FlashAttn(device, 8, layout, q_tile=2, caps=off).f16_math is False
    assert FlashAttn(device, 8, layout, q_tile=2, caps=on, f16_math=False).f16_math is False
    assert FlashAttn(device, 8, layout, caps=on).f16_math is False        # decode / verify: always f32
    with pytest.raises(ValueError, match="prefill"):
        FlashAttn(device, 8, layout, f16_math=True)
    # a tuning profile picks it only where the device enabled shaderFloat16
    assert caps.tuned_with(attn_f16_math=True).attn_f16_math == caps.f16_math
    assert caps.tuned_with(attn_f16_math=False).attn_f16_math is False
    assert caps.tuned_with().attn_f16_math == caps.attn_f16_math
