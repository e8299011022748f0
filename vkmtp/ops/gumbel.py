"""Gumbel noise on draft logits for sampled MTP drafts (shaders/gumbel.comp): x = x / T + g(key, pos, id)."""

from __future__ import annotations

from vkmtp.device import ShaderKey, View

BLOCK = 64
PARAM_WORDS = 4   # per row: key, position, 1/T (f32 bits), on


class GumbelNoise:
    def __init__(self, device):
        self.device = device

    def record(self, rec, x: View, stride: int, n_cols: int, n_rows: int, params: View, draft_index: int) -> None:
        """In place on x [n_rows, stride] f32 (the first n_cols columns of each row); params [n_rows, 4] uint
        words {key, pos, inv_T bits, on}; the noise is that of position pos + draft_index."""
        if n_cols > stride:
            raise ValueError(f"gumbel: {n_cols} columns in rows of {stride}")
        if x.nbytes < 4 * n_rows * stride or params.nbytes < 4 * PARAM_WORDS * n_rows:
            raise ValueError("gumbel: operand views too small")
        xs = x.sub(0, 4 * n_rows * stride)
        prm = params.sub(0, 4 * PARAM_WORDS * n_rows)
        push = [x.word_offset, stride, n_cols, n_rows, params.word_offset, draft_index]
        rec.dispatch(ShaderKey.make("gumbel.comp"), [x.buffer, params.buffer], (-(-n_cols // BLOCK), n_rows, 1),
                     push=push, spec=[BLOCK], reads=[xs, prm], writes=[xs], label="gumbel_noise")


def shader_variants() -> list[ShaderKey]:
    return [ShaderKey.make("gumbel.comp")]
