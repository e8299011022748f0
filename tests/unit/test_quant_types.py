"""Host-side helpers of the quantized-weight ops (no device): type checks, row parts, grid folding, expert
grouping reference, random GGUF rows."""

import numpy as np
import pytest

from vkmtp.gguf import GGMLType, dequantize, row_bytes
from vkmtp.ops.matvec_id import group_capacity, routes_words
from vkmtp.ops.quant_types import (SPLIT_TYPES, SUPPORTED_TYPES, RowPart, aligned8, fold, from_device_layout,
                                    row_parts, to_device_layout, type_define, upload_weight, weight_row_bytes)
from vkmtp.ref.ops.matvec_id import expert_groups
from vkmtp.ref.random_quant import random_rows


class FakeView:
    """Stands in for vkmtp.device.View where only nbytes matters."""

    def __init__(self, nbytes):
        self.nbytes = nbytes


def test_type_define_and_unsupported_type():
    assert type_define(GGMLType.Q4_K) == {"DATA_A_Q4_K": 1}
    assert len(SUPPORTED_TYPES) == 15
    with pytest.raises(ValueError, match="IQ3_XXS is not supported"):
        type_define(GGMLType.IQ3_XXS)


def test_weight_row_bytes_checks_block_multiples():
    assert weight_row_bytes(GGMLType.Q6_K, 1280) == 5 * 210
    assert weight_row_bytes(GGMLType.F16, 1003) == 2006
    with pytest.raises(ValueError, match="multiple of 32"):
        weight_row_bytes(GGMLType.Q8_0, 48)


def test_row_parts_must_cover_rows_in_order():
    parts = [RowPart(FakeView(400), 0, 4), RowPart(FakeView(600), 4, 6)]
    assert row_parts(parts, 10, 100, "w") == parts
    with pytest.raises(ValueError, match="expected"):
        row_parts([parts[1], parts[0]], 10, 100, "w")
    with pytest.raises(ValueError, match="cover 4 rows"):
        row_parts(parts[:1], 10, 100, "w")
    with pytest.raises(ValueError, match="need 800 B"):
        row_parts([RowPart(FakeView(400), 0, 8)], 8, 100, "w")


@pytest.mark.parametrize("n", [1, 65535, 65536, 124160, 4_000_000])
def test_fold_covers_n_within_limits(n):
    x, y = fold(n)
    assert x <= 65535 and y <= 65535 and x * y >= n and (y == 1 or x * (y - 1) < n)


def test_expert_groups_reference():
    ids = np.array([[1, 2], [2, 3], [2, 1]])
    assert expert_groups(ids, 3) == [(1, [0, 5]), (2, [1, 2, 4]), (3, [3])]
    assert expert_groups(ids, 2) == [(1, [0, 5]), (2, [1, 2]), (3, [3]), (2, [4])]
    assert routes_words(3, 2) == 1 + 12 + 6 * group_capacity(3)


@pytest.mark.parametrize("t", [GGMLType(k) for k in SUPPORTED_TYPES], ids=lambda t: t.name.lower())
def test_random_rows_are_finite_and_bounded(t):
    rows = random_rows(t, 3, 256, np.random.default_rng(0), scale=0.02)
    assert rows.shape == (3, row_bytes(t, 256)) and rows.dtype == np.uint8
    w = dequantize(rows.reshape(-1), t, (3, 256))
    assert np.all(np.isfinite(w)) and 0 < np.abs(w).max() < 1.0


@pytest.mark.parametrize("t", [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.IQ4_NL])
@pytest.mark.parametrize("n_k", [32, 96, 256, 5120])
def test_device_layout_splits_each_row_into_quants_then_scales(t, n_k):
    """Row r of the device layout: every block's quants, then every block's f16 scale; same bytes per row;
    from_device_layout inverts it exactly."""
    rows = random_rows(t, 7, n_k, np.random.default_rng(n_k))
    rb = weight_row_bytes(t, n_k)
    nb, qs = n_k // 32, SPLIT_TYPES[int(t)]
    dev = to_device_layout(t, n_k, rows)
    assert dev.nbytes == rows.nbytes == 7 * rb
    dev_rows = dev.reshape(7, rb)
    blocks = rows.reshape(7, nb, qs + 2)
    for b in (0, nb - 1):
        np.testing.assert_array_equal(dev_rows[:, qs * b: qs * (b + 1)], blocks[:, b, 2:])
        np.testing.assert_array_equal(dev_rows[:, qs * nb + 2 * b: qs * nb + 2 * b + 2], blocks[:, b, :2])
    np.testing.assert_array_equal(from_device_layout(t, n_k, dev).reshape(rows.shape), rows)
    # any whole number of rows is repacked alike (the upload goes a chunk of rows at a time)
    np.testing.assert_array_equal(to_device_layout(t, n_k, rows[3:5]), dev_rows[3:5].reshape(-1))


def test_device_layout_keeps_other_types_and_refuses_partial_rows():
    rows = random_rows(GGMLType.Q4_K, 3, 256, np.random.default_rng(0))
    np.testing.assert_array_equal(to_device_layout(GGMLType.Q4_K, 256, rows), rows.reshape(-1))
    with pytest.raises(ValueError, match="not whole rows of 64 values"):
        to_device_layout(GGMLType.Q8_0, 64, np.zeros(34 * 3, np.uint8))


def test_upload_weight_repacks_chunk_by_chunk(monkeypatch):
    """A weight larger than UPLOAD_CHUNK goes up in several uploads of whole rows, each in the device layout."""
    import vkmtp.ops.quant_types as qt

    class FakeDevice:
        def __init__(self, nbytes):
            self.memory = np.zeros(nbytes, np.uint8)
            self.uploads = 0

        def upload(self, view, data):
            self.memory[view.offset: view.offset + data.nbytes] = data
            self.uploads += 1

    class View:
        def __init__(self, offset, nbytes):
            self.offset, self.nbytes = offset, nbytes

        def sub(self, offset, nbytes):
            return View(self.offset + offset, nbytes)

    t, n_k = GGMLType.Q8_0, 96
    rows = random_rows(t, 10, n_k, np.random.default_rng(1))
    monkeypatch.setattr(qt, "UPLOAD_CHUNK", 3 * 102 + 50)     # 3 rows per upload
    dev = FakeDevice(rows.nbytes)
    upload_weight(dev, View(0, rows.nbytes), t, n_k, rows)
    assert dev.uploads == 4
    np.testing.assert_array_equal(dev.memory, to_device_layout(t, n_k, rows))
    assert aligned8(t, 256, 272) and not aligned8(t, 256, 102) and not aligned8(t, 260, 272)
    assert aligned8(GGMLType.Q4_K, 0, 144) and not aligned8(GGMLType.Q4_K, 4, 144)
    assert not aligned8(GGMLType.Q6_K, 0, 420) and not aligned8(GGMLType.Q4_1, 0, 40)


def test_iq4_code_book_is_the_rounded_quartic_of_types_glsl():
    """shaders/common/types.glsl decodes IQ4_NL / IQ4_XS nibbles as roundEven of a quartic: with its f32
    constants, evaluated in f32 with or without fused multiply-adds, it must give the 16 levels exactly."""
    import re

    from vkmtp.device.compiler import SHADER_DIR
    from vkmtp.gguf.dequant_iq import IQ4_LEVELS

    text = (SHADER_DIR / "common" / "types.glsl").read_text()
    c4, c3, c2, c1 = (np.float32(v) for v in
                      re.search(r"IQ4_POLY = vec4\(([^)]*)\)", text).group(1).split(","))
    c0 = np.float32(re.search(r"IQ4_POLY0 = ([-0-9.e]+);", text).group(1))
    n = np.arange(16, dtype=np.float32)
    fused = ((((c4.astype(np.float64) * n + c3) * n + c2) * n + c1) * n + c0)   # exact products, one rounding
    p = c4
    for c in (c3, c2, c1, c0):
        p = (p * n).astype(np.float32) + c                                        # f32 rounding at every step
    for value in (fused, p.astype(np.float64)):
        assert np.abs(value - IQ4_LEVELS).max() < 0.45
        np.testing.assert_array_equal(np.round(value), IQ4_LEVELS)
