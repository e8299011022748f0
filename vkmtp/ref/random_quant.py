"""Random but well-formed GGUF weight rows of every supported type, for op tests and benchmarks.

Quant bytes are uniform random (every bit pattern of every field is exercised); the f16 block scales are then
overwritten with finite values of a chosen magnitude, so the dequantized weights are O(scale), never NaN/Inf.
Small scales are f16 subnormals for the K-quants, as in real Q6_K/Q5_K files, so those get exercised too.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import GGMLType, block_size

# Per type: byte offsets of the f16 scale fields inside one block, (d,) or (d, min/dmin), and the largest
# |code| each multiplies (quant code x sub-block scale), so that d = scale / that keeps |w| about `scale`.
SCALE_FIELDS: dict[int, tuple[tuple[int, float], ...]] = {
    int(GGMLType.Q4_0): ((0, 8),), int(GGMLType.Q4_1): ((0, 15), (2, 15)), int(GGMLType.Q5_0): ((0, 16),),
    int(GGMLType.Q5_1): ((0, 31), (2, 31)), int(GGMLType.Q8_0): ((0, 127),),
    int(GGMLType.Q2_K): ((80, 45), (82, 15)), int(GGMLType.Q3_K): ((108, 128),),
    int(GGMLType.Q4_K): ((0, 945), (2, 63)), int(GGMLType.Q5_K): ((0, 1953), (2, 63)),
    int(GGMLType.Q6_K): ((208, 4064),), int(GGMLType.IQ4_NL): ((0, 127),), int(GGMLType.IQ4_XS): ((0, 4064),),
}


def random_rows(ggml_type: int, n_rows: int, n_k: int, rng: np.random.Generator,
                scale: float = 0.02) -> np.ndarray:
    """[n_rows, row_bytes] u8: rows of n_k values with |w| <= about `scale` (float types: std `scale`)."""
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
    for off, largest_code in SCALE_FIELDS[t]:
        mag = rng.uniform(0.25, 1.0, n_blocks) * scale / largest_code
        blocks[:, off:off + 2] = mag.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(n_rows, -1)
