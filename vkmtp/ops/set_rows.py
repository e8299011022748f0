"""KV-cache write: token rows -> cache rows seq * n_ctx + pos as f16 or Q8_0 (shaders/set_rows.comp).

Used for V (K goes through Rope.record_to_cache, fused with its norm and rotation). A cache is one View or
its parts (vkmtp.ops.kv_parts). Mirrors vkmtp.ref.ops.set_rows.set_rows.
"""

from __future__ import annotations

from vkmtp.device import ShaderKey, View
from vkmtp.ops._select import check_block_size
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.kv_parts import KvOperand
from vkmtp.ops.strided import Strided

RECORD_BYTES = 16  # {token_id, pos, seq, flags}


def check_tokens(tokens: View, n_tok: int) -> View:
    """The records of n_tok tokens at the start of `tokens` (raises when the view is shorter)."""
    if n_tok < 1 or tokens.nbytes < n_tok * RECORD_BYTES:
        raise ValueError(f"token records view of {tokens.nbytes} B cannot hold {n_tok} records")
    return tokens.sub(0, n_tok * RECORD_BYTES)


class SetRows:
    """Write x [n_tok, n_head_kv, head_dim] f32 into the rows named by the tokens' (seq, pos)."""

    def __init__(self, device, layout: KvLayout, block_size: int = 64):
        self.device = device
        self.layout = layout
        self.block_size = check_block_size(block_size, device)

    def record(self, rec, tokens: View, x: Strided, cache, n_tok: int) -> None:
        """cache: a View, or a list of Views (the cache's parts)."""
        lay = self.layout
        x.check("set_rows x", n_tok, lay.n_head_kv, lay.head_dim)
        kv = KvOperand.of(cache, lay, "set_rows cache")
        records = check_tokens(tokens, n_tok)
        push = [tokens.word_offset, *x.push(), kv.word_offset, lay.row_words, lay.head_words, lay.n_ctx,
                kv.rows_per_part]
        rec.dispatch(ShaderKey.make("set_rows.comp", **{lay.store_define: 1}, **kv.defines),
                     [tokens.buffer, x.buffer, *kv.buffers], (lay.n_head_kv, n_tok, 1),
                     push=push, spec=[self.block_size, lay.head_dim],
                     reads=[records, x.view], writes=list(kv.views))


def shader_variants() -> list[ShaderKey]:
    return [ShaderKey.make("set_rows.comp", OUT_F16=1), ShaderKey.make("set_rows.comp", OUT_Q8_0=1)]
