"""The recorded steps of the Vulkan engine, each replayed as ONE queue submission.

PrefillGraph(T)     a prompt chunk of T tokens of one sequence (padding tokens go to the sink slot): trunk,
                    logits of the last real token, and with MTP the MTP head's KV for the chunk.
DecodeGraph(S)      one token for each of S sequences: trunk, logits, and the MTP head's input kept for later.
MtpLagGraph(T)      the MTP head's KV over up to T positions of one sequence that lagging decode steps skipped.
SpecGraph(S, K)     a speculative step for S sequences: K chained MTP drafts (LM head over the draft vocabulary), one verify forward of the
                    S*(K+1) tokens, and (greedy or GPU-sampled) the accept decision, state rollback and MTP catch-up on the GPU.
CommitGraph(S, K)   (host sampling) rollback and pending hidden for accept counts decided on the host.

Outputs are token ids in the step buffer: the argmax (plain greedy steps), or with `sample` the sampler chain
of every row on the GPU (shaders/sample.comp, its inputs written by the host into the step buffer:
`record_sample_rows`), so a sampled speculative step also decides, accepts and rolls back in its one
submission. Only a step whose rows need the host (a grammar) takes logits into a host-visible buffer and a
CommitGraph after the host's decision. With `probs` (a request asked for token probabilities) the step also
reduces every logits row to its top-n pairs and log-sum-exp (vkmtp.graph.token_probs): a separate recorded
variant, so steps without probabilities keep their graph.
"""

from __future__ import annotations

from vkmtp.device import Buffer, Device, Recorder, View
from vkmtp.graph.step_io import StepIO
from vkmtp.graph.device_state import DeviceState
from vkmtp.graph.forward import Activations, Forward
from vkmtp.graph.graph_counts import GraphCounts, conv_bytes_per_seq, step_state_bytes
from vkmtp.graph.token_probs import record_token_probs
from vkmtp.ops.gumbel import GumbelNoise
from vkmtp.ops.matvec import MAX_COLS
from vkmtp.ops.sample import PARAM_WORDS, Sample
from vkmtp.ops.spec import SpecOps
from vkmtp.ops.gdn_replay import GdnReplay
from vkmtp.ops.state_select import StateSelect
from vkmtp.ops.strided import Strided
from vkmtp.spec.config import DRAFT_TOP_K, draft_rows


def paired_groups(a, b):
    """The layers of two layer stacks (vkmtp.graph.device_state.LayerStack) in runs that lie in one buffer of
    each: ((a view, a stride), (b view, b stride), n_layers), stride in words (stacks of different block sizes
    split their layers between buffers differently)."""
    if a is None or b is None:
        return
    for ga in a.groups:
        for gb in b.groups:
            first = max(ga.first, gb.first)
            last = min(ga.first + ga.count, gb.first + gb.count)
            if first < last:
                va = ga.view.sub(4 * (first - ga.first) * ga.stride_words, 4 * (last - first) * ga.stride_words)
                vb = gb.view.sub(4 * (first - gb.first) * gb.stride_words, 4 * (last - first) * gb.stride_words)
                yield (va, ga.stride_words), (vb, gb.stride_words), last - first


class GraphContext:
    """What every graph records against: the forward, the step buffer, scratch and output buffers."""

    def __init__(self, device: Device, fwd: Forward, io: StepIO, scratch: Buffer, hidden: Buffer,
                 logits_host: Buffer, max_rows: int):
        self.device = device
        self.fwd = fwd
        self.cfg = fwd.cfg
        self.state: DeviceState = fwd.state
        self.io = io
        self.scratch = scratch
        self.logits_host = logits_host
        self.spec_ops = SpecOps(device)
        self.select = StateSelect(device)
        self.replay = GdnReplay(device, self.cfg.ssm_d_state) if self.cfg.recurrent_layers else None
        self.gumbel = GumbelNoise(device)
        self.sampler = Sample(device)
        e = self.cfg.n_embd
        row = 4 * e
        # hidden rows kept outside the per-pass activations: post-norm trunk hidden, shifted MTP input, MTP out
        self.hn = hidden.view(0, row * max_rows)
        self.h_shift = hidden.view(row * max_rows, row * max_rows)
        self.h_mtp = [hidden.view(2 * row * max_rows, row * max_rows), hidden.view(3 * row * max_rows,
                                                                                   row * max_rows)]

    def act(self, n: int, n_out: int, prefill: bool = False) -> Activations:
        return Activations.carve(self.scratch, self.cfg, n, n_out, self.fwd.ops, prefill)

    def head(self, rec: Recorder, h: View, n_out: int, act: Activations, greedy: bool, ids: View,
             sample: bool = False, probs: bool = False) -> None:
        """LM head on n_out rows of h, then argmax ids (greedy), sampled ids (sample: record_sample_rows) or
        logits into the host-visible buffer; with `probs` the rows' token probabilities too (of the raw rows:
        the chosen token is the argmax when greedy; the host's choice otherwise)."""
        v = self.cfg.n_vocab
        logits = act.logits if greedy or sample else self.logits_host.view(0, 4 * n_out * v)
        self.fwd.record_lm_head(rec, h, n_out, logits)
        if greedy:
            self.fwd.ops.argmax.record(rec, Strided.rows(logits.sub(0, 4 * n_out * v), v), ids, n_out, v,
                                       act.argmax_scratch)
        if probs:   # ---- token probabilities (vkmtp.graph.token_probs) ----
            if sample:
                raise ValueError("token probabilities are of the raw logits rows, which the GPU sampler shapes in "
                                 "place: a step with probabilities samples on the host")
            record_token_probs(self, rec, logits, n_out, act.argmax_scratch, ids if greedy else None)
        if sample:
            self.record_sample_rows(rec, logits, n_out, ids)

    def record_sample_rows(self, rec: Recorder, logits: View, n_out: int, ids: View) -> None:
        """The sampler chain of each of n_out logits rows on the GPU -> ids. Row r's parameters are
        sample_params[r] (vkmtp.ops.sample.row_params: seed key, position, chain settings, its penalty window in
        sample_history and the records' drafts, its bias pairs in sample_bias), written by the host."""
        v = self.cfg.n_vocab
        io = self.io
        self.sampler.record(rec, logits.sub(0, 4 * n_out * v), v, v, n_out,
                            io.view("sample_params", 0, PARAM_WORDS * n_out), ids, io.view("records"))

    def rollback(self, rec: Recorder, select: View, n_seq: int, n_rows: int) -> None:
        """Bring each selected slot's recurrent states to its accepted row ({slot, row m} pairs in `select`)
        after a verify of n_rows rows per sequence: conv states <- the snapshot after row m (none for the last
        row: the live one is right, and the copy kernel skips it on the GPU); GDN states <- the live state (as
        before the verify) brought forward by rows 0..m from the step log, one state write per slot."""
        st = self.state
        for gs, gl, count in paired_groups(st.conv_snap, st.conv):
            self.select.record(rec, select, n_seq, gs[0], gl[0], st.conv_words, st.n_slots_total, n_rows - 1,
                               n_groups=count, snap_group_stride=gs[1], live_group_stride=gl[1])
        for gs, gl, count in paired_groups(st.ssm_log, st.ssm):
            self.replay.record(rec, select, n_seq, gs[0], gl[0], self.cfg.ssm_dt_rank, st.n_slots_total, n_rows,
                               n_groups=count, log_group_stride=gs[1], state_group_stride=gl[1])

    def take_checkpoint(self, rec: Recorder, pair: View) -> None:
        """A prompt-cache checkpoint inside a prompt chunk's submission: pair = {slot, slot * n_ckpt + place},
        read at run time, copies the slot's GDN/conv states of every layer and its pending hidden to that
        storage place (the copies vkmtp.graph.device_state.DeviceState.checkpoint_pairs lists)."""
        st = self.state
        n_places = st.n_slots * st.n_ckpt
        for live, ckpt, words in ((st.conv, st.conv_ckpt, st.conv_words), (st.ssm, st.ssm_ckpt, st.ssm_words)):
            for lv, cv in zip(live.layers if live is not None else [], ckpt.layers if ckpt is not None else []):
                self.spec_ops.record_copy_rows(rec, pair, 1, lv, cv, words, st.n_slots_total, n_places)
        if st.pending_h_ckpt_buffer is not None:
            self.copy_rows(rec, pair, 1, st.pending_h, st.pending_h_ckpt_buffer.view(), st.n_slots_total, n_places)

    def copy_rows(self, rec: Recorder, pairs: View, n: int, src: View, dst: View, src_rows: int,
                  dst_rows: int) -> None:
        self.spec_ops.record_copy_rows(rec, pairs, n, src, dst, self.cfg.n_embd, src_rows, dst_rows)

    def mtp_catch_up(self, rec: Recorder, records: View, n: int, pairs_first: View, n_seq: int, rows_per_seq: int,
                     prefill: bool = False, kv_only: bool = False) -> None:
        """MTP KV entries for n verified/prefilled tokens from the TRUE target hidden states: row r's input
        hidden is hn[r-1] within its sequence, the first row of each sequence takes its slot's pending hidden.
        kv_only: only the KV rows (Forward.record_mtp_kv), not the block's output rows in h_mtp[0]."""
        e4 = 4 * self.cfg.n_embd
        for s in range(n_seq):
            first = s * rows_per_seq
            if rows_per_seq > 1:
                rec.copy(self.hn.sub(first * e4, (rows_per_seq - 1) * e4),
                         self.h_shift.sub((first + 1) * e4, (rows_per_seq - 1) * e4))
        self.copy_rows(rec, pairs_first, n_seq, self.state.pending_h, self.h_shift, self.state.n_slots_total, n)
        act = self.act(n, 0, prefill)
        if kv_only:
            self.fwd.record_mtp_kv(rec, records, self.h_shift.sub(0, n * e4), act, n)
        else:
            self.fwd.record_mtp(rec, records, self.h_shift.sub(0, n * e4), act, n, self.h_mtp[0].sub(0, n * e4))


class Submissions:
    """Recorded sequences replayed one after another (a prompt chunk split to bound each submission's time)."""

    def __init__(self, recs: list[Recorder]):
        self.recs = recs

    def run(self) -> None:
        for r in self.recs:
            r.run()

    def destroy(self) -> None:
        for r in self.recs:
            r.destroy()

    def __len__(self) -> int:
        return len(self.recs)


def record_trunk(ctx, records, act, n: int, layers_per_submit: int | None, n_snap: int = 0):
    """The input rows (embedding, or a layer split's boundary) and this device's blocks over n rows, cut into
    queue submissions of `layers_per_submit` blocks (None: one). Returns the finished recordings and the open
    last one, which the caller continues (heads, boundary copy, checkpoint) and finishes."""
    fwd = ctx.fwd
    blocks = list(fwd.blocks)   # this device's blocks (all of them but on a stage of a layer split)
    step = layers_per_submit or max(len(blocks), 1)
    recs = []
    rec = ctx.device.recorder()
    fwd.record_input(rec, records, n, act.x)
    for first in range(0, len(blocks), step):
        if first:
            recs.append(rec.finish())
            rec = ctx.device.recorder()
        for blk in blocks[first: first + step]:
            fwd.record_block(rec, blk, records, act, n, n_snap=n_snap)
    return recs, rec


class PrefillGraph:
    """One prompt chunk of `T` token slots (the real ones first, then sink padding).

    `layers_per_submit`: trunk blocks per queue submission (None: the whole chunk in one); the dispatches are
    the same either way, so the tokens are too. The activations live in the scratch buffer between submissions.
    With MTP the chunk also writes the MTP head's KV rows of its tokens, and only those (`mtp_kv_only`): no draft
    starts from a prompt position (the next speculative step runs the head over its own position), so the
    block's query, attention over the prompt, FFN and output rows would be computed for nothing. The KV rows
    are the bits the whole block writes (the same kernels on the same inputs; tests/engine)."""

    def __init__(self, ctx: GraphContext, T: int, greedy: bool, mtp: bool, layers_per_submit: int | None = None,
                 sample: bool = False, probs: bool = False, checkpoint: bool = False, mtp_kv_only: bool = True):
        self.T = T
        io, fwd = ctx.io, ctx.fwd
        e4 = 4 * ctx.cfg.n_embd
        records = io.record_view("records", 0, T)
        act = ctx.act(T, 1, prefill=True)
        recs, rec = record_trunk(ctx, records, act, T, layers_per_submit)
        fwd.record_output_norm(rec, act, T, ctx.hn.sub(0, T * e4))
        # pairs_out[0] = {last real row, 0}: the last real token's hidden -> head input
        ctx.copy_rows(rec, io.view("pairs_out", 0, 2), 1, ctx.hn.sub(0, T * e4), act.head_h, T, 1)
        ctx.head(rec, act.head_h, 1, act, greedy, io.view("ids", 0, 1), sample, probs)
        if mtp:
            # pairs_shift[0] = {slot, 0}; the chunk's rows 1.. take hn[0..T-2]
            ctx.mtp_catch_up(rec, records, T, io.view("pairs_shift", 0, 2), 1, T, prefill=True, kv_only=mtp_kv_only)
            # pairs_in[0] = {last real row, slot}: the slot's pending hidden for its next MTP step
            ctx.copy_rows(rec, io.view("pairs_in", 0, 2), 1, ctx.hn.sub(0, T * e4), ctx.state.pending_h, T,
                          ctx.state.n_slots_total)
        if checkpoint:
            ctx.take_checkpoint(rec, io.view("pairs_ckpt", 0, 2))
        recs.append(rec.finish())
        self.rec = Submissions(recs)
        self.counts = GraphCounts.of(recs, step_state_bytes(ctx.cfg, 1, 0))


class DecodeGraph:
    """One token for each of S sequences (plain decoding). With MTP loaded, the head's input for this position --
    the slot's pending hidden -- moves into the slot's lag ring (pairs_lag[s] = {slot, ring row}) and the step's
    hidden becomes pending (pairs_in[s] = {s, slot}); the head runs later, in a MtpLagGraph, only when it drafts
    again (the adaptive policy chose depth 0 because drafting does not pay). Both moves are one dispatch
    (SpecOps.record_shift_rows) recorded beside the LM head, which reads the same rows: it adds no barrier, so
    a plain step costs one small dispatch more than without MTP."""

    def __init__(self, ctx: GraphContext, S: int, greedy: bool, mtp: bool, sample: bool = False,
                 probs: bool = False):
        io, fwd = ctx.io, ctx.fwd
        e4 = 4 * ctx.cfg.n_embd
        rec = ctx.device.recorder()
        records = io.record_view("records", 0, S)
        act = ctx.act(S, S)
        fwd.record_trunk(rec, records, act, S)
        fwd.record_output_norm(rec, act, S, ctx.hn.sub(0, S * e4))
        if mtp:
            st = ctx.state
            ctx.spec_ops.record_shift_rows(rec, io.view("pairs_in", 0, 2 * S), io.view("pairs_lag", 0, 2 * S), S,
                                           ctx.hn.sub(0, S * e4), st.pending_h, st.mtp_lag, ctx.cfg.n_embd, S,
                                           st.n_slots_total, st.n_slots * st.lag_rows)
        ctx.head(rec, ctx.hn.sub(0, S * e4), S, act, greedy, io.view("ids", 0, S), sample, probs)
        self.rec = rec.finish()
        self.counts = GraphCounts.of([rec], step_state_bytes(ctx.cfg, S, 0))


EXACT_CATCH_UP_ROWS = MAX_COLS   # one mat-vec dispatch's columns: up to here a catch-up is the decode path


class MtpLagGraph:
    """The MTP head's KV rows (only those: no draft starts from these positions, so no query, attention or FFN)
    over T rows: the positions a sequence's lagging decode steps skipped (records rows 0.. = {token, pos, slot},
    pairs_lag[r] = {ring row, r}), padded to T with sink tokens. Up to 8 rows it runs the decode step's kernels
    (batch-invariant mat-vec), so the MTP KV rows it writes are the bits the per-step catch-up would have written,
    and drafts after it are the same; more rows (a long stretch of plain steps) run as a prompt chunk, at prompt
    speed, with the prompt kernels' rounding."""

    def __init__(self, ctx: GraphContext, T: int):
        io, st = ctx.io, ctx.state
        e4 = 4 * ctx.cfg.n_embd
        rec = ctx.device.recorder()
        records = io.record_view("records", 0, T)
        ctx.copy_rows(rec, io.view("pairs_lag", 0, 2 * T), T, st.mtp_lag, ctx.h_shift, st.n_slots * st.lag_rows, T)
        act = ctx.act(T, 0, prefill=T > EXACT_CATCH_UP_ROWS)
        ctx.fwd.record_mtp_kv(rec, records, ctx.h_shift.sub(0, T * e4), act, T)
        self.rec = rec.finish()
        self.counts = GraphCounts.of([rec])


class SpecGraph:
    """A speculative step: K drafts per sequence, one verify of S*(K+1) tokens, accept + rollback on the GPU.

    `split` (a sequence behind a grammar): two submissions, drafts then the rest, so the host can cut the drafts
    at the first token the grammar forbids and write each verified row's mask in between (no logits cross).

    Step buffer (host writes): draft_records[i][s] = {id_last (i=0), n_past+i, slot}; records[s*V+j] =
    {id_last (j=0), n_past+j, slot}; pairs_in[s] = {slot, s} (pending hidden -> first draft input);
    pairs_shift[s] = {slot, s*V} (pending hidden -> catch-up row 0). GPU writes: draft tokens into both record
    sets, ids (verify argmax), accept, out_ids, select, hidden_select (then pending hidden per slot).

    The MTP catch-up over the verified rows writes only the head's KV rows (`mtp_kv_only`,
    Forward.record_mtp_kv): the next step's first draft starts from the accepted row's trunk hidden, so the
    block's query, attention, FFN and output rows over the catch-up rows would be computed for nothing. The KV
    rows are the bits the whole block writes (the same kernels on the same inputs; tests/engine).
    """

    def __init__(self, ctx: GraphContext, S: int, K: int, greedy: bool, p_min: float, synthetic_rate: float,
                 n_min: int = 0, draft_vocab: int = 0, sample: bool = False, split: bool = False,
                 probs: bool = False, mtp_kv_only: bool = True):
        io, fwd, ops = ctx.io, ctx.fwd, ctx.fwd.ops
        cfg = ctx.cfg
        e4 = 4 * cfg.n_embd
        v = draft_rows(draft_vocab, cfg.n_vocab)   # the draft's LM head rows (verification uses all of them)
        V = K + 1
        R = S * V
        rec = ctx.device.recorder()
        # --- draft: K chained MTP steps, all S sequences batched --------------------------------------------
        act_d = ctx.act(S, S)
        ctx.copy_rows(rec, io.view("pairs_in", 0, 2 * S), S, ctx.state.pending_h, ctx.h_mtp[1],
                      ctx.state.n_slots_total, S)
        h_in = ctx.h_mtp[1]
        for i in range(K):
            h_out = ctx.h_mtp[i % 2]
            drec = io.record_view("draft_records", i * S, S)
            fwd.record_mtp(rec, drec, h_in.sub(0, S * e4), act_d, S, h_out.sub(0, S * e4))
            fwd.record_lm_head(rec, h_out.sub(0, S * e4), S, act_d.logits.sub(0, 4 * S * v),
                               head=fwd.table.mtp.head.name, n_rows=v)
            logits = Strided.rows(act_d.logits.sub(0, 4 * S * v), v)
            if p_min > 0:   # the cut looks at the raw draft logits
                ops.topk.record(rec, logits, io.view("top_values", 0, DRAFT_TOP_K * S), io.view("top_ids", 0, DRAFT_TOP_K * S),
                                S, v, act_d.argmax_scratch)
            if not greedy:  # sampled rows draft argmax(l / T + g) with their target's noise (vkmtp/sampling.py)
                ctx.gumbel.record(rec, act_d.logits, v, v, S, io.view("draft_noise", 0, 4 * S), i)
            ops.argmax.record(rec, logits, io.view("draft_ids", 0, S), S, v, act_d.argmax_scratch)
            nxt = io.record_view("draft_records", ((i + 1) % K) * S, S)
            ctx.spec_ops.record_draft_token(rec, io.view("draft_ids", 0, S), io.view("valid"),
                                            io.record_view("records", 0, R), nxt, S, K, i,
                                            top_values=io.view("top_values") if p_min > 0 else None,
                                            n_top=DRAFT_TOP_K if p_min > 0 else 0, p_min=p_min)
            h_in = h_out
        parts = []
        if split:   # a grammar: the host reads the drafts, cuts them and writes the rows' masks in between
            parts.append(rec.finish())
            rec = ctx.device.recorder()
        # --- verify: the target over last token + drafts; conv snapshots after rows 0..K-1, the GDN step log of
        # every row (GraphContext.rollback) ----------------------------------------------------------------
        records = io.record_view("records", 0, R)
        act = ctx.act(R, R)
        fwd.record_trunk(rec, records, act, R, n_snap=K)
        fwd.record_output_norm(rec, act, R, ctx.hn.sub(0, R * e4))
        ctx.head(rec, ctx.hn.sub(0, R * e4), R, act, greedy, io.view("ids", 0, R), sample, probs)
        # --- MTP catch-up with the true hidden states (independent of the accept count) -------------------------
        ctx.mtp_catch_up(rec, records, R, io.view("pairs_shift", 0, 2 * S), S, V, kv_only=mtp_kv_only)
        on_gpu = greedy or sample   # the accept decision, rollback and pending hidden in this submission
        if on_gpu:
            ctx.spec_ops.record_accept(rec, io.view("ids", 0, R), io.view("valid"), records, io.view("out_ids"),
                                       io.view("accept"), io.view("n_valid"), io.view("select"),
                                       io.view("hidden_select"), S, K,
                                       uniforms=io.view("uniforms") if synthetic_rate > 0 else None,
                                       synthetic_rate=synthetic_rate, n_min=n_min)
            record_commit(ctx, rec, S, V)
        parts.append(rec.finish())
        self.rec = Submissions(parts) if split else parts[0]
        self.counts = GraphCounts.of(parts, step_state_bytes(cfg, S, K) - (0 if on_gpu else replay_bytes(cfg, S)),
                                     conv_bytes_per_seq(cfg) if on_gpu else 0)


def record_commit(ctx: GraphContext, rec: Recorder, S: int, V: int) -> None:
    """Bring states to the accepted row and set each slot's pending hidden to its accepted row.

    The verify kept conv snapshots after rows 0..V-2 only: a slot that accepted every draft selects row V-1,
    which state_select treats as "keep the live state", so the copy kernel reads the accept count on the GPU and
    writes nothing for it (the host does not know the count when the step is recorded). The GDN states are
    replayed from the verify's step log up to the accepted row (GraphContext.rollback)."""
    io = ctx.io
    R = S * V
    ctx.rollback(rec, io.view("select", 0, 2 * S), S, V)
    ctx.copy_rows(rec, io.view("hidden_select", 0, 2 * S), S, ctx.hn.sub(0, R * 4 * ctx.cfg.n_embd),
                  ctx.state.pending_h, R, ctx.state.n_slots_total)


def replay_bytes(cfg, S: int) -> int:
    """The GDN states the commit's replay writes: one per sequence and GDN layer."""
    return 4 * S * len(cfg.recurrent_layers) * cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state


class CommitGraph:
    """Sampling mode: the host decided the accept counts and wrote select / hidden_select."""

    def __init__(self, ctx: GraphContext, S: int, K: int):
        rec = ctx.device.recorder()
        record_commit(ctx, rec, S, K + 1)
        self.rec = rec.finish()
        self.counts = GraphCounts.of([rec], replay_bytes(ctx.cfg, S), conv_bytes_per_seq(ctx.cfg))
