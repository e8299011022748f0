"""Token probabilities in a recorded step: the TokenProbs op over the step's logits rows, into the step buffer.

Recorded only into the step variants of requests that asked for probabilities (`probs=True` graphs), so other
steps keep their graph and nothing extra reaches the host. Per logits row the step buffer gets MAX_TOP (logit,
id) pairs, most likely first, and {log-sum-exp, chosen token's logit}: 2 * MAX_TOP + 2 words instead of the row.
"""

from __future__ import annotations

import numpy as np

from vkmtp.device import Recorder, View
from vkmtp.ops.strided import Strided
from vkmtp.ops.token_probs import MAX_TOP

ROW_WORDS = 2 * MAX_TOP + 2   # words the host reads per requested row


def regions(n_rows: int) -> dict[str, int]:
    """The step buffer's regions for up to n_rows logits rows (vkmtp.graph.step_io.StepIO)."""
    return {"prob_values": MAX_TOP * n_rows, "prob_ids": MAX_TOP * n_rows, "prob_lse": 2 * n_rows}


def record_token_probs(ctx, rec: Recorder, logits: View, n_rows: int, scratch: View,
                       chosen: View | None) -> None:
    """Top-MAX_TOP pairs, log-sum-exp and (greedy: the argmax ids in `chosen`) the chosen logit of each of the
    n_rows logits rows of `logits` ([n_rows, n_vocab] f32) into the step buffer."""
    io, v = ctx.io, ctx.cfg.n_vocab
    ctx.fwd.ops.token_probs.record(rec, Strided.rows(logits.sub(0, 4 * n_rows * v), v), n_rows, v,
                                   io.view("prob_lse", 0, 2 * n_rows), scratch,
                                   values=io.view("prob_values", 0, MAX_TOP * n_rows),
                                   ids=io.view("prob_ids", 0, MAX_TOP * n_rows), chosen=chosen)


def read_row(io, row: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(top logits [MAX_TOP], top ids [MAX_TOP], lse, chosen logit) of logits row `row` after the step."""
    values = io.array("prob_values", np.float32)[row * MAX_TOP: (row + 1) * MAX_TOP].copy()
    ids = io.array("prob_ids")[row * MAX_TOP: (row + 1) * MAX_TOP].copy()
    lse, chosen = io.array("prob_lse", np.float32)[2 * row: 2 * row + 2]
    return values, ids, float(lse), float(chosen)
