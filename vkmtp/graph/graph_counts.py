"""Dispatches, barriers, queue submissions and recurrent-state bytes of the recorded steps (--json, /metrics).

Counted by the recorder that records the step (vkmtp.device.Recorder), never estimated. State bytes are what the
step's kernels store into the GDN and conv states, their rollback snapshots and the GDN step log
(vkmtp.graph.device_state): fixed per recorded step, plus a conv-state copy for each sequence that rejected a
draft (the copy kernel reads the accept count on the GPU), so a step's bytes are counted from its accept counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GraphCounts:
    """One recorded step: what a replay submits."""

    dispatches: int
    barriers: int
    submissions: int
    state_bytes: int = 0            # state bytes the step always writes (live states, snapshots)
    rollback_bytes_per_seq: int = 0   # plus this per sequence that rejected a draft (speculative steps)
    host_barriers: int = 0          # barriers that also wait for the host stage (one per submission with a kp
                                    # that has OpShaderBarrier; else every barrier)

    @staticmethod
    def of(recorders, state_bytes: int = 0, rollback_bytes_per_seq: int = 0) -> "GraphCounts":
        recs = list(recorders)
        return GraphCounts(sum(r.n_dispatches for r in recs), sum(r.n_barriers for r in recs), len(recs),
                           state_bytes, rollback_bytes_per_seq, sum(r.n_host_barriers for r in recs))

    def state_bytes_written(self, n_rejected: int = 0) -> int:
        """State bytes of one replay in which n_rejected sequences rejected a draft."""
        return self.state_bytes + n_rejected * self.rollback_bytes_per_seq

    def to_dict(self) -> dict:
        return asdict(self)


def _words(cfg) -> tuple[int, int, int]:
    """f32 words per sequence and GDN layer: conv state, GDN state, one row of the GDN step log."""
    conv = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
    ssm = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
    return conv, ssm, cfg.ssm_dt_rank * (1 + 2 * cfg.ssm_d_state)


def state_bytes_per_seq(cfg) -> int:
    """Bytes of one sequence's recurrent state over all GDN layers: conv state + GDN state."""
    conv, ssm, _ = _words(cfg)
    return 4 * len(cfg.recurrent_layers) * (conv + ssm)


def conv_bytes_per_seq(cfg) -> int:
    """Bytes of one sequence's conv states over all GDN layers (what a rejected draft's rollback copies)."""
    return 4 * len(cfg.recurrent_layers) * _words(cfg)[0]


def step_state_bytes(cfg, n_seqs: int, n_drafts: int) -> int:
    """State bytes a step's kernels always write. A plain step (n_drafts 0): each sequence's live conv and GDN
    states once. A speculative step of n_drafts drafts: per sequence the live conv state, conv snapshots after
    rows 0..n_drafts-1 and the GDN step log of its n_drafts + 1 rows in the verify, then the GDN state once in
    the replay (the conv rollback copy, only for a sequence that rejected a draft, is counted apart)."""
    conv, ssm, log_row = _words(cfg)
    per_layer = conv + ssm if n_drafts == 0 else conv * (1 + n_drafts) + log_row * (n_drafts + 1) + ssm
    return 4 * n_seqs * len(cfg.recurrent_layers) * per_layer


def step_state_bytes_before(cfg, n_seqs: int, n_drafts: int) -> int:
    """What a speculative step wrote before the step log (for the comparison in tests and docs/PERFORMANCE.md):
    the live states, a snapshot of both states after every verify row, and a rollback copy of both always."""
    return n_seqs * (1 + (n_drafts + 1) + 1) * state_bytes_per_seq(cfg)
