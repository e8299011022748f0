"""Checks and byte ranges for operands passed to kernels as (View, row stride) pairs.

A wrapper receives each tensor as a View whose offset is the first element of row 0, plus a row stride in
words; the kernel gets word offsets. These helpers compute the exact byte range a dispatch touches (for the
Recorder's barrier tracking) and refuse views that are too small or in the wrong buffer, naming the operand.
"""

from __future__ import annotations

from vkmtp.device import WORD, View


def rows_view(view: View, n_rows: int, row_words: int, stride_words: int, name: str) -> View:
    """The part of `view` holding `n_rows` rows of `row_words` words, `stride_words` apart."""
    if n_rows < 1 or row_words < 1:
        raise ValueError(f"{name}: needs at least one row of one word (got {n_rows} x {row_words})")
    if stride_words < row_words and n_rows > 1:
        raise ValueError(f"{name}: row stride {stride_words} words is less than the row width {row_words}")
    words = (n_rows - 1) * stride_words + row_words
    if words * WORD > view.nbytes:
        raise ValueError(f"{name}: {n_rows} rows of {row_words} words (stride {stride_words}) need "
                         f"{words * WORD} B, the view has {view.nbytes} B")
    return view.sub(0, words * WORD)


def words_view(view: View, n_words: int, name: str) -> View:
    """The first `n_words` words of `view`, refusing a view that is smaller."""
    if n_words * WORD > view.nbytes:
        raise ValueError(f"{name}: needs {n_words * WORD} B, the view has {view.nbytes} B")
    return view.sub(0, n_words * WORD)


def same_buffer(name: str, *views: View) -> None:
    """Operands sharing one binding must live in one buffer."""
    first = views[0].buffer
    if any(v.buffer is not first for v in views[1:]):
        names = ", ".join(repr(v.buffer.name) for v in views)
        raise ValueError(f"{name}: these operands share one binding and must be in one buffer (got {names})")


def power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
