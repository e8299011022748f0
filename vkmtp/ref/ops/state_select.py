"""NumPy oracle of shaders/state_select.comp: roll live recurrent states back to a chosen snapshot."""

from __future__ import annotations

import numpy as np

NO_ROLLBACK = 0xFFFFFFFF   # snapshot index meaning "keep the live state" (every draft token accepted)


def state_select(select: np.ndarray, snapshots: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Copy snapshot r of slot s into the live state for every entry (s, r).

    Args:
        select: [n_sel, 2] uint32 entries {seq slot, snapshot index}; r >= n_snap or s >= n_slots is a no-op.
        snapshots: [n_groups, n_slots, n_snap, n_words] f32 (n_groups: layers copied by one dispatch).
        live: [n_groups, n_slots, n_words] f32.
    Returns:
        the new live states (copy).
    """
    live = live.copy()
    n_slots, n_snap = snapshots.shape[1], snapshots.shape[2]
    for seq, r in np.asarray(select, np.uint64).reshape(-1, 2).tolist():
        if seq < n_slots and r < n_snap:
            live[:, seq] = snapshots[:, seq, r]
    return live
