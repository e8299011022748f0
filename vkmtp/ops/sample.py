"""The sampler chain on the GPU (shaders/sample.comp): bias, grammar mask, penalties, top-k/p, min-p, temperature, Gumbel-max.

One workgroup per logits row; the token id goes to the step buffer, so a sampled decode or speculative step
reads back ids only (one submission). The arithmetic is vkmtp/sampling.py's, so the GPU and the host sampler
pick the same token from the same logits. Mirrors vkmtp.ref.ops.sample.sample_rows.
"""

from __future__ import annotations

import numpy as np

from vkmtp.device import ShaderKey, View

PARAM_WORDS = 19     # per row, see shaders/sample.comp
MAX_WINDOW = 1024    # penalty window tokens (history + drafts) the shader holds per row
BLOCK = 256


def row_params(key: int, pos: int, inv_t: float, top_k: int, top_p: float, min_p: float, repeat_penalty: float,
               frequency_penalty: float, presence_penalty: float, hist: tuple[int, int] = (0, 0),
               drafts: tuple[int, int] = (0, 0), bias: tuple[int, int] = (0, 0),
               mask: int | None = None) -> np.ndarray:
    """One row's PARAM_WORDS words. inv_t 0: greedy (argmax after bias and penalties); top_k 0 or >= n_vocab:
    off; top_p >= 1: off; min_p 0: off. hist = (word offset, length) of the window's first tokens in the step
    buffer, drafts = (first token record, count) of its last ones, bias = (word offset, pairs), mask = the word
    offset of the row's allowed-token bitmask (None: no grammar)."""
    if hist[1] + drafts[1] > MAX_WINDOW:
        raise ValueError(f"sample: a penalty window of {hist[1] + drafts[1]} tokens (at most {MAX_WINDOW})")
    f = np.float32
    words = np.zeros(PARAM_WORDS, np.uint32)
    floats = words.view(f)
    words[0], words[1] = key & 0xFFFFFFFF, pos & 0xFFFFFFFF
    floats[2] = f(inv_t)
    words[3] = max(int(top_k), 0)
    floats[4] = f(top_p)
    floats[5] = f(np.log(min_p)) if min_p > 0 else f(0.0)
    words[6] = int(min_p > 0)
    floats[7], floats[8] = f(1.0 / repeat_penalty), f(repeat_penalty)
    floats[9], floats[10] = f(frequency_penalty), f(presence_penalty)
    words[11], words[12] = hist
    words[13], words[14] = drafts
    words[15], words[16] = bias
    words[17], words[18] = (0, 0) if mask is None else (mask, 1)
    return words


class Sample:
    def __init__(self, device, block_size: int = BLOCK):
        if block_size & (block_size - 1):
            raise ValueError(f"sample: workgroup size {block_size} is not a power of two")
        self.device = device
        self.block_size = block_size

    def record(self, rec, x: View, stride: int, n_vocab: int, n_rows: int, params: View, ids: View,
               records: View) -> None:
        """x [n_rows, stride] f32 logits (first n_vocab columns; shaped in place). params [n_rows, PARAM_WORDS],
        ids [n_rows] and records (the token records drafts are read from) are views of one step buffer, which
        also holds the rows' history tokens and bias pairs (word offsets from the buffer's start)."""
        if n_vocab > stride:
            raise ValueError(f"sample: {n_vocab} columns in rows of {stride}")
        if x.nbytes < 4 * n_rows * stride:
            raise ValueError("sample: logits view too small")
        if params.nbytes < 4 * PARAM_WORDS * n_rows or ids.nbytes < 4 * n_rows:
            raise ValueError("sample: params or ids view too small")
        step = params.buffer
        if ids.buffer is not step or records.buffer is not step:
            raise ValueError("sample: params, ids and records must live in one step buffer")
        if n_rows > self.device.info.max_workgroup_count[0]:
            raise ValueError(f"sample: {n_rows} rows exceed one dispatch row")
        xs = x.sub(0, 4 * n_rows * stride)
        push = [x.word_offset, stride, n_vocab, n_rows, params.word_offset, ids.word_offset, records.word_offset]
        rec.dispatch(ShaderKey.make("sample.comp"), [x.buffer, step], (n_rows, 1, 1), push=push,
                     spec=[self.block_size], reads=[xs, step.view()], writes=[xs, ids.sub(0, 4 * n_rows)],
                     label="sample")


def shader_variants() -> list[ShaderKey]:
    return [ShaderKey.make("sample.comp")]
