"""Speculative-step bookkeeping on the GPU (shaders/spec.comp): draft tokens, accept decision, row copies and shifts.

With these three dispatches inside the recorded step, drafting, verification, acceptance and rollback run in
one queue submission; the host reads only `accept` and the accepted token ids. Mirrors vkmtp.ref.ops.spec.
"""

from __future__ import annotations

from vkmtp.device import ShaderKey, View

RECORD_WORDS = 4
BLOCK = 64


def _words(view: View, n: int, what: str) -> View:
    if view.nbytes < 4 * n:
        raise ValueError(f"spec {what}: view of {view.nbytes} B holds fewer than {n} words")
    return view.sub(0, 4 * n)


class SpecOps:
    """Records the four spec.comp modes. `K` = draft depth (n_max), `V = K + 1` verify rows per sequence."""

    def __init__(self, device):
        self.device = device

    def record_draft_token(self, rec, ids: View, valid: View, verify_records: View, next_draft_records: View,
                           n_seq: int, K: int, i: int, top_values: View | None = None, n_top: int = 0,
                           p_min: float = 0.0) -> None:
        """After draft step i: ids [n_seq] (uint argmax of the MTP logits) -> verify record row i+1 of each
        sequence and draft records (i+1) [n_seq]; valid [n_seq, K] flags (p_min cut on top_values
        [n_seq, n_top] f32, sorted descending)."""
        if not 0 <= i < K:
            raise ValueError(f"draft step {i} outside 0..{K - 1}")
        V = K + 1
        data = top_values if top_values is not None else ids
        writes = [_words(valid, n_seq * K, "valid"), _words(verify_records, n_seq * V * RECORD_WORDS, "verify")]
        if i + 1 < K:
            writes.append(_words(next_draft_records, n_seq * RECORD_WORDS, "draft records"))
        reads = [_words(ids, n_seq, "ids")] + ([_words(top_values, n_seq * n_top, "top values")]
                                                if top_values is not None and n_top else [])
        step = ids.buffer
        for v in (valid, verify_records, next_draft_records):
            if v.buffer is not step:
                raise ValueError("spec: ids, valid and records must live in the one step buffer")
        push = [ids.word_offset, data.word_offset, valid.word_offset, verify_records.word_offset,
                next_draft_records.word_offset, n_seq, K, i, n_top if top_values is not None else 0,
                float(p_min)]
        rec.dispatch(ShaderKey.make("spec.comp", MODE_DRAFT_TOKEN=1), [step, data.buffer, step],
                     (-(-n_seq // BLOCK), 1, 1), push=push, spec=[BLOCK], reads=reads, writes=writes,
                     label=f"spec_draft_token{i}")

    def record_accept(self, rec, verify_ids: View, valid: View, verify_records: View, out_ids: View,
                      accept: View, n_valid: View, select: View, hidden_select: View, n_seq: int, K: int,
                      uniforms: View | None = None, synthetic_rate: float = 0.0, n_min: int = 0) -> None:
        """Greedy acceptance (or synthetic, with uniforms [n_seq, K] f32 in the step buffer):
        accept [n_seq] = m, out_ids [n_seq, V] = accepted drafts + the target's token at m,
        select [n_seq] = {seq slot, m} pairs for the state rollback (vkmtp.ops.state_select),
        hidden_select [n_seq] = {s*V + m, seq slot} pairs for record_copy_rows. Drafts shorter than n_min are
        dropped (llama-server's --spec-draft-n-min)."""
        V = K + 1
        u = uniforms if uniforms is not None else verify_ids
        step = verify_ids.buffer
        for v in (valid, verify_records, out_ids, accept, n_valid, select, hidden_select, u):
            if v.buffer is not step:
                raise ValueError("spec: accept operands must live in the one step buffer")
        if synthetic_rate > 0 and uniforms is None:
            raise ValueError("spec: synthetic acceptance needs uniforms")
        reads = [_words(verify_ids, n_seq * V, "verify ids"), _words(valid, n_seq * K, "valid"),
                 _words(verify_records, n_seq * V * RECORD_WORDS, "verify records")]
        if uniforms is not None:
            reads.append(_words(uniforms, n_seq * K, "uniforms"))
        writes = [_words(out_ids, n_seq * V, "out ids"), _words(accept, n_seq, "accept"),
                  _words(n_valid, n_seq, "n_valid"), _words(select, 2 * n_seq, "select"),
                  _words(hidden_select, 2 * n_seq, "hidden select")]
        push = [verify_ids.word_offset, valid.word_offset, verify_records.word_offset, out_ids.word_offset,
                accept.word_offset, n_valid.word_offset, u.word_offset, n_seq, K, float(synthetic_rate),
                select.word_offset, hidden_select.word_offset, n_min]
        rec.dispatch(ShaderKey.make("spec.comp", MODE_ACCEPT=1), [step, step, step], (-(-n_seq // BLOCK), 1, 1),
                     push=push, spec=[BLOCK], reads=reads, writes=writes, label="spec_accept")

    def record_copy_rows(self, rec, pairs: View, n_rows: int, src: View, dst: View, width: int,
                         src_rows: int, dst_rows: int) -> None:
        """dst[pairs[r][1]] = src[pairs[r][0]] for r < n_rows (rows of `width` words; pairs are uint
        {src row, dst row} read at run time; src holds src_rows rows, dst dst_rows rows)."""
        reads = [_words(pairs, 2 * n_rows, "pairs"), _words(src, src_rows * width, "src")]
        writes = [_words(dst, dst_rows * width, "dst")]
        push = [pairs.word_offset, src.word_offset, dst.word_offset, n_rows, width]
        rec.dispatch(ShaderKey.make("spec.comp", MODE_COPY_ROWS=1), [pairs.buffer, src.buffer, dst.buffer],
                     (-(-width // BLOCK), n_rows, 1), push=push, spec=[BLOCK], reads=reads, writes=writes,
                     label="spec_copy_rows")


    def record_shift_rows(self, rec, pairs: View, ring_pairs: View, n_rows: int, src: View, cur: View, ring: View,
                          width: int, src_rows: int, cur_rows: int, ring_rows: int) -> None:
        """For r < n_rows, slot = pairs[r][1]: ring[ring_pairs[r][1]] = cur[slot], then cur[slot] =
        src[pairs[r][0]] (rows of `width` words; pairs {src row, slot} and ring_pairs {slot, ring row} are uint
        pairs read at run time; the rows' slots must be distinct). One dispatch instead of two copies with a
        barrier between them (the second overwrites what the first reads)."""
        for v in (pairs, ring_pairs):
            if v.buffer is not pairs.buffer:
                raise ValueError("spec shift_rows: pairs and ring pairs must live in the one step buffer")
        reads = [_words(pairs, 2 * n_rows, "pairs"), _words(ring_pairs, 2 * n_rows, "ring pairs"),
                 _words(src, src_rows * width, "src"), _words(cur, cur_rows * width, "cur")]
        writes = [_words(cur, cur_rows * width, "cur"), _words(ring, ring_rows * width, "ring")]
        push = [pairs.word_offset, ring_pairs.word_offset, src.word_offset, cur.word_offset, ring.word_offset,
                n_rows, width]
        rec.dispatch(ShaderKey.make("spec.comp", MODE_SHIFT_ROWS=1),
                     [pairs.buffer, src.buffer, cur.buffer, ring.buffer], (-(-width // BLOCK), n_rows, 1),
                     push=push, spec=[BLOCK], reads=reads, writes=writes, label="spec_shift_rows")


def shader_variants() -> list[ShaderKey]:
    return [ShaderKey.make("spec.comp", **{m: 1})
            for m in ("MODE_DRAFT_TOKEN", "MODE_ACCEPT", "MODE_COPY_ROWS", "MODE_SHIFT_ROWS")]
