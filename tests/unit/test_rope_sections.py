"""IMROPE sections that reduce to plain NEOX RoPE for text tokens (vkmtp.ops.rope.imrope_is_neox)."""

from vkmtp.ops.rope import imrope_is_neox


def test_qwen35_sections_cover_every_rotary_pair():
    assert imrope_is_neox(64, (11, 11, 10, 0))


def test_sections_that_leave_pairs_on_the_fourth_component_are_detected():
    assert not imrope_is_neox(64, (8, 8, 8, 8))   # sectors 24..31 rotate with e = 0 for text
    assert not imrope_is_neox(64, (11, 11, 9, 0))  # sector 29 (s % 3 == 2) lies beyond 3 * 9
