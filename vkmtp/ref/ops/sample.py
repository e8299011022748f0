"""NumPy reference of shaders/sample.comp (vkmtp.ops.sample.Sample): the host sampler's chain per row."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np

from vkmtp.ops.sample import PARAM_WORDS
from vkmtp.sampling import filter_candidates, gumbel_draw

RECORD_WORDS = 4


def sample_rows(x: np.ndarray, params: np.ndarray, step_words: np.ndarray, rec_off: int) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """x [n_rows, n_vocab] f32; params [n_rows, PARAM_WORDS] uint32; step_words: the step buffer (history tokens,
    bias pairs, token records at word rec_off). Returns (token ids [n_rows], the shaped logits)."""
    out = np.array(x, dtype=np.float32)
    ids = np.zeros(len(out), np.uint32)
    for r, words in enumerate(np.asarray(params, np.uint32).reshape(-1, PARAM_WORDS)):
        f = words.view(np.float32)
        row = out[r]
        bias_off, n_bias = int(words[15]), int(words[16])
        pairs = step_words[bias_off: bias_off + 2 * n_bias].reshape(-1, 2)
        row[pairs[:, 0].astype(np.int64)] += pairs[:, 1].view(np.float32)
        if words[18]:   # the grammar's bitmask: bit i % 32 of word i / 32
            bits = step_words[words[17]: words[17] + (len(row) + 31) // 32]
            allowed = np.unpackbits(bits.view(np.uint8), bitorder="little")[: len(row)].astype(bool)
            row[~allowed] = -np.inf
        hist = step_words[words[11]: words[11] + words[12]].tolist()
        first, n_draft = int(words[13]), int(words[14])
        drafts = [int(step_words[rec_off + RECORD_WORDS * (first + j)]) for j in range(n_draft)]
        for token, count in Counter(hist + drafts).items():   # vkmtp.sampling.apply_penalties, from the words
            value = row[token]
            value = value * f[7] if value > 0 else value * f[8]
            row[token] = (value - np.float32(count) * f[9]) - f[10]
        if f[2] == 0:
            ids[r] = int(np.argmax(np.where(np.isnan(row), -np.inf, row)))
            continue
        cand_ids, cand = filter_candidates(row, SimpleNamespace(top_k=int(words[3]), top_p=float(f[4]), min_p=0.0))
        if words[6]:   # min-p with the word's f32 log(min_p)
            keep = cand >= cand[0] + f[5]
            cand_ids, cand = cand_ids[keep], cand[keep]
        ids[r] = gumbel_draw(cand_ids, cand, float(f[2]), int(words[0]), int(words[1]))
    return ids, out
