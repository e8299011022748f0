"""Host-side helpers of the quantized-weight ops (no device): type checks, row parts, grid folding, expert
grouping reference, random GGUF rows."""

import numpy as np
import pytest

from vkmtp.gguf import GGMLType, dequantize, row_bytes
from vkmtp.ops.matvec_id import group_capacity, routes_words
from vkmtp.ops.quant_types import SUPPORTED_TYPES, RowPart, fold, row_parts, type_define, weight_row_bytes
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
