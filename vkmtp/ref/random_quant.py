"""Random but well-formed GGUF weight rows of every supported type, for op tests and benchmarks.

Quant bytes are uniform random (every bit pattern of every field is exercised); the f16 block scales are then
overwritten with finite values of a chosen magnitude, so the dequantized weights are O(scale) and never NaN/Inf.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import GGMLType, block_size

# Byte offsets of the f16 scale fields inside one block: (d,) or (d, min/dmin).
SCALE_FIELDS: dict[int, tuple[int, ...]] = {
    int(GGMLType.Q4_0): (0,), int(GGMLType.Q4_1): (0, 2), int(GGMLType.Q5_0): (0,), int(GGMLType.Q5_1): (0, 2),
    int(GGMLType.Q8_0): (0,), int(GGMLType.Q2_K): (80, 82), int(GGMLType.Q3_K): (108,),
    int(GGMLType.Q4_K): (0, 2), int(GGMLType.Q5_K): (0, 2), int(GGMLType.Q6_K): (208,),
    int(GGMLType.IQ4_NL): (0,), int(GGMLType.IQ4_XS): (0,),
}


def random_rows(ggml_type: int, n_rows: int, n_k: int, rng: np.random.Generator,
                scale: float = 0.02) -> np.ndarray:
    """[n_rows, row_bytes] u8: rows of n_k values whose magnitudes are about `scale` (times 1..127 for
    the quant codes, divided back by the types' usual code ranges)."""
    t = int(ggml_type)
    if t in (int(GGMLType.F32), int(GGMLType.F16), int(GGMLType.BF16)):
        values = rng.standard_normal((n_rows, n_k), dtype=np.float32) * np.float32(scale)
        if t == int(GGMLType.F32):
            return values.view(np.uint8).reshape(n_rows, -1)
        if t == int(GGMLType.F16):
            return values.astype(np.float16).view(np.uint8).reshape(n_rows, -1)
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n_rows, -1)
    if t not in SCALE_FIELDS:
        raise ValueError(f"no random generator for ggml type {t}")
    elems, nbytes = block_size(t)
    n_blocks = n_rows * (n_k // elems)
    blocks = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    for k, off in enumerate(SCALE_FIELDS[t]):
        # d in [0.25, 1] * scale / 8 (codes reach ~8..127); dmin / m smaller and positive
        mag = rng.uniform(0.25, 1.0, n_blocks) * scale / (8.0 if k == 0 else 32.0)
        blocks[:, off:off + 2] = mag.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(n_rows, -1)
