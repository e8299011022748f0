"""Synthetic packed weights of any GGUF type, for kernel tests and benchmarks (no model file needed).

Every bit pattern of a quant field is a valid quant, so random bytes exercise every code path of a block
decoder; only the f16 scale fields are set, to small finite values, so outputs stay of order one.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import GGMLType, block_size

# f16 fields (byte offsets within a block) that scale a block: d, and dmin / m where the type has one.
SCALE_FIELDS = {
    GGMLType.Q4_0: (0,), GGMLType.Q4_1: (0, 2), GGMLType.Q5_0: (0,), GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,), GGMLType.Q2_K: (80, 82), GGMLType.Q3_K: (108,), GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2), GGMLType.Q6_K: (208,), GGMLType.IQ4_NL: (0,), GGMLType.IQ4_XS: (0,),
}


def random_weight(rng: np.random.Generator, ggml_type: int, n_rows: int, k: int) -> np.ndarray:
    """Packed bytes of an [n_rows, k] weight of `ggml_type` (GGUF row layout) -> uint8 [n_rows * row_bytes].

    Float types hold standard-normal values; quantized types random quants with scales of 0.002..0.02
    (random sign), which dequantize to values of order 0.01..1.
    """
    t = GGMLType(ggml_type)
    if t == GGMLType.F32:
        return rng.standard_normal((n_rows, k)).astype(np.float32).view(np.uint8).reshape(-1)
    if t == GGMLType.F16:
        return rng.standard_normal((n_rows, k)).astype(np.float16).view(np.uint8).reshape(-1)
    if t == GGMLType.BF16:
        bits = rng.standard_normal((n_rows, k)).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16).view(np.uint8).reshape(-1)
    if t not in SCALE_FIELDS:
        raise ValueError(f"no synthetic weights for {t.name}")
    elems, nbytes = block_size(t)
    if k % elems:
        raise ValueError(f"k={k} is not a whole number of {t.name} blocks of {elems}")
    blocks = rng.integers(0, 256, (n_rows * k // elems, nbytes), dtype=np.uint8)
    for off in SCALE_FIELDS[t]:
        sign = rng.choice(np.array([-1.0, 1.0]), len(blocks))
        scale = (rng.uniform(0.002, 0.02, len(blocks)) * sign).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(-1)
