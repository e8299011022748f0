"""Dispatches, barriers, queue submissions and recurrent-state bytes of the recorded steps (--json, /metrics).

Counted by the recorder that records the step (vkmtp.device.Recorder), never estimated. State bytes are the f32
words the step's kernels store into the GDN recurrent and conv states and their rollback snapshots: the verify
writes each sequence's live state once and keeps snapshots after its rows 0..K-1; the rollback writes a state
only for a sequence that rejected a draft (the copy kernel reads the accept count on the GPU), so a step's bytes
depend on its accept counts and are counted per step from them.
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

    @staticmethod
    def of(recorders, state_bytes: int = 0, rollback_bytes_per_seq: int = 0) -> "GraphCounts":
        recs = list(recorders)
        return GraphCounts(sum(r.n_dispatches for r in recs), sum(r.n_barriers for r in recs), len(recs),
                           state_bytes, rollback_bytes_per_seq)

    def state_bytes_written(self, n_rejected: int = 0) -> int:
        """State bytes of one replay in which n_rejected sequences rejected a draft."""
        return self.state_bytes + n_rejected * self.rollback_bytes_per_seq

    def to_dict(self) -> dict:
        return asdict(self)


def state_bytes_per_seq(cfg) -> int:
    """Bytes of one sequence's recurrent state over all GDN layers: conv state + GDN state."""
    conv_words = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
    ssm_words = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
    return 4 * len(cfg.recurrent_layers) * (conv_words + ssm_words)


def step_state_bytes(cfg, n_seqs: int, n_snap: int) -> int:
    """Bytes a trunk pass stores into recurrent state: each sequence's live state once (the kernels keep it in
    registers across the step's tokens) and n_snap snapshots per sequence."""
    return n_seqs * (1 + n_snap) * state_bytes_per_seq(cfg)
