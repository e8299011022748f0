"""The recorded steps of a layer split's earlier devices: their trunk blocks, and the rollback of their states.

A model split by layers over several devices (vkmtp.graph.layer_split) runs each step as one recorded graph per
device ("stage"). The last stage holds the heads and records the steps of vkmtp.graph.steps over its own blocks,
taking the residual stream from its boundary buffer (Forward.x_in). Every earlier stage records what is here:

StageTrunkGraph(n)   its blocks over the step's n rows (a prompt chunk, a decode step, a verify batch with conv
                     snapshots and the GDN step log), from the embedding (first stage) or its boundary input,
                     ending with a copy of the residual stream into its host-visible boundary output; with a
                     prompt-cache checkpoint, the copy of its own GDN/conv states.
StageCommitGraph(S)  the rollback of its GDN/conv states to the rows the last stage accepted (the `select`
                     pairs the host copies over from the last stage's step buffer).

The host writes the same token records into every stage's step buffer (kp buffers belong to one device).
"""

from __future__ import annotations

from vkmtp.device import Buffer, Device
from vkmtp.graph.forward import Forward
from vkmtp.graph.graph_counts import GraphCounts
from vkmtp.graph.step_io import StepIO
from vkmtp.graph.steps import GraphContext, Submissions, record_trunk
from vkmtp.ops.gdn_replay import GdnReplay
from vkmtp.ops.spec import SpecOps
from vkmtp.ops.state_select import StateSelect


class StageContext(GraphContext):
    """What an earlier stage's graphs record against: its forward (its blocks), step buffer, scratch and
    boundary output. No hidden rows, logits or sampler: those are the last stage's."""

    def __init__(self, device: Device, fwd: Forward, io: StepIO, scratch: Buffer, boundary_out: Buffer):
        self.device = device
        self.fwd = fwd
        self.cfg = fwd.cfg
        self.state = fwd.state
        self.io = io
        self.scratch = scratch
        self.boundary_out = boundary_out.view()
        self.spec_ops = SpecOps(device)
        self.select = StateSelect(device)
        self.replay = GdnReplay(device, self.cfg.ssm_d_state) if self.state.gdn_index else None

    @property
    def has_states(self) -> bool:
        """Whether this stage holds GDN layers (recurrent states to roll back and checkpoint)."""
        return bool(self.state.gdn_index)


class StageTrunkGraph:
    """An earlier stage's part of a step of n rows: input, its blocks, the residual stream to the boundary.

    prefill: a prompt chunk (tiled kernels); n_snap: a verify of n_snap drafts per sequence (conv snapshots and
    the GDN step log); checkpoint: take the chunk's prompt-cache checkpoint of this stage's states (pairs_ckpt);
    layers_per_submit: blocks per queue submission (--max-submit-ms), as PrefillGraph splits a chunk."""

    def __init__(self, ctx: StageContext, n: int, prefill: bool = False, n_snap: int = 0, checkpoint: bool = False,
                 layers_per_submit: int | None = None):
        self.n = n
        io = ctx.io
        records = io.record_view("records", 0, n)
        act = ctx.act(n, 1, prefill)
        recs, rec = record_trunk(ctx, records, act, n, layers_per_submit, n_snap=n_snap)
        nbytes = 4 * n * ctx.cfg.n_embd
        rec.copy(act.x.sub(0, nbytes), ctx.boundary_out.sub(0, nbytes))
        if checkpoint:
            ctx.take_checkpoint(rec, io.view("pairs_ckpt", 0, 2))
        recs.append(rec.finish())
        self.rec = Submissions(recs)
        self.counts = GraphCounts.of(recs)


class StageCommitGraph:
    """An earlier stage's rollback after a verify of n_rows rows per sequence: its conv states to the accepted
    row's snapshot, its GDN states replayed from the step log (GraphContext.rollback), from the `select` pairs."""

    def __init__(self, ctx: StageContext, S: int, n_rows: int):
        rec = ctx.device.recorder()
        ctx.rollback(rec, ctx.io.view("select", 0, 2 * S), S, n_rows)
        self.rec = rec.finish()
        self.counts = GraphCounts.of([rec])
