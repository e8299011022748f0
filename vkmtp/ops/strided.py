"""Strided f32 operands: a [n_tok, n_head, n] tensor inside a View, addressed with word strides.

Kernels of the attention path read rows that are not contiguous: head h's query sits at [h*2D, h*2D + D) of
attn_q's packed q+gate output, its gate at [h*2D + D, (h+1)*2D). `Strided` names such a layout once so that
wrappers can pass `x_off, x_tok_stride, x_head_stride` push constants without long argument lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from vkmtp.device import WORD, View


@dataclass(frozen=True)
class Strided:
    """Element (t, h, i) of an f32 tensor is word `view.word_offset + t*tok_stride + h*head_stride + i`."""

    view: View
    tok_stride: int       # f32 words between consecutive tokens
    head_stride: int = 0  # f32 words between consecutive heads of one token

    @staticmethod
    def rows(view: View, n: int) -> "Strided":
        """A contiguous [n_tok, n] tensor (one head per token)."""
        return Strided(view, n, 0)

    @staticmethod
    def heads(view: View, n_head: int, head_dim: int) -> "Strided":
        """A contiguous [n_tok, n_head, head_dim] tensor."""
        return Strided(view, n_head * head_dim, head_dim)

    @property
    def buffer(self):
        return self.view.buffer

    @property
    def offset(self) -> int:
        return self.view.word_offset

    def push(self) -> list[int]:
        """(offset, tok_stride, head_stride) push-constant words."""
        return [self.offset, self.tok_stride, self.head_stride]

    def check(self, name: str, n_tok: int, n_head: int, n: int) -> None:
        """Raise ValueError when element (n_tok-1, n_head-1, n-1) lies outside the view."""
        if n_tok < 1 or n_head < 1 or n < 1:
            raise ValueError(f"{name}: empty shape ({n_tok}, {n_head}, {n})")
        last = (n_tok - 1) * self.tok_stride + (n_head - 1) * self.head_stride + n - 1
        if (last + 1) * WORD > self.view.nbytes:
            raise ValueError(f"{name}: [{n_tok}, {n_head}, {n}] with strides ({self.tok_stride}, "
                             f"{self.head_stride}) needs {(last + 1) * WORD} B, view has {self.view.nbytes} B")
