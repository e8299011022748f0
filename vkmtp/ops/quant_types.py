"""What the quantized-weight ops share: supported GGUF types, the device layout of weights, weights split by
rows, folded grids.

A weight is GGUF rows in a View (row r at byte r * row_bytes from the view start, row_bytes as in GGUF). Rows
keep ggml's block layout except for Q8_0, Q4_0 and IQ4_NL, whose 34- and 18-byte blocks would put every
block's quants on a 2-byte boundary: their rows are repacked at upload (`to_device_layout`, the same bytes per
row) so that the kernels read the quants with aligned loads (shaders/common/dequant.glsl, "DEVICE LAYOUT").
A weight larger than the device's `maxStorageBufferRange` (the 248320 x 5120 LM head is 1.3 GB at Q8_0) lives
in several Views, each holding a run of whole rows: a list of `RowPart`s, one dispatch per part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vkmtp.device import View
from vkmtp.gguf import GGMLType, block_size

# The types dequant.glsl implements, by the name its DATA_A_<NAME> define uses.
SUPPORTED_TYPES: dict[int, str] = {
    int(t): t.name for t in (
        GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1,
        GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
        GGMLType.Q6_K, GGMLType.IQ4_NL, GGMLType.IQ4_XS)
}
FLOAT_TYPES = {int(GGMLType.F32), int(GGMLType.F16), int(GGMLType.BF16)}
GROUP = 8  # elements a shader thread dequantizes at once (dequant.glsl)


# Types whose device rows are split (dequant.glsl A_SPLIT): ggml type id -> quant bytes per 32-element block.
# A device row of nb blocks holds the nb blocks' quants, then their nb f16 scales (2 bytes each).
SPLIT_TYPES: dict[int, int] = {int(GGMLType.Q8_0): 32, int(GGMLType.Q4_0): 16, int(GGMLType.IQ4_NL): 16}
UPLOAD_CHUNK = 64 << 20   # bytes repacked and uploaded at a time (the LM head is over 1 GB)


def _as_bytes(data) -> np.ndarray:
    """Any bytes-like or array data as a flat u8 array (no copy when already contiguous)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.ascontiguousarray(data).reshape(-1).view(np.uint8)


def _split_rows(ggml_type: int, n_k: int, data) -> tuple[np.ndarray, int, int]:
    qs = SPLIT_TYPES[int(ggml_type)]
    nb = n_k // 32
    flat = _as_bytes(data)
    row_bytes = nb * (qs + 2)
    if n_k % 32 or flat.nbytes % row_bytes:
        raise ValueError(f"{type_name(ggml_type)} data of {flat.nbytes} B is not whole rows of {n_k} values")
    return flat.reshape(-1, row_bytes), nb, qs


def to_device_layout(ggml_type: int, n_k: int, data) -> np.ndarray:
    """GGUF rows of n_k values (any whole number of rows, bytes) -> the same rows in the device layout, u8.
    Q8_0 / Q4_0 / IQ4_NL: each row's blocks' quants first, then their f16 scales; other types unchanged."""
    if int(ggml_type) not in SPLIT_TYPES:
        return _as_bytes(data)
    rows, nb, qs = _split_rows(ggml_type, n_k, data)
    blocks = rows.reshape(len(rows), nb, qs + 2)
    out = np.empty_like(rows)
    out[:, : nb * qs] = blocks[:, :, 2:].reshape(len(rows), nb * qs)
    out[:, nb * qs:] = blocks[:, :, :2].reshape(len(rows), nb * 2)
    return out.reshape(-1)


def from_device_layout(ggml_type: int, n_k: int, data) -> np.ndarray:
    """The inverse of to_device_layout: device rows -> GGUF rows, u8."""
    if int(ggml_type) not in SPLIT_TYPES:
        return _as_bytes(data)
    rows, nb, qs = _split_rows(ggml_type, n_k, data)
    out = np.empty_like(rows)
    blocks = out.reshape(len(rows), nb, qs + 2)
    blocks[:, :, 2:] = rows[:, : nb * qs].reshape(len(rows), nb, qs)
    blocks[:, :, :2] = rows[:, nb * qs:].reshape(len(rows), nb, 2)
    return out.reshape(-1)


def upload_weight(device, view: View, ggml_type: int, n_k: int, data) -> None:
    """Upload GGUF rows (bytes, whole rows of n_k values) into `view` in the device layout, a chunk of rows at
    a time (no copy of a whole large tensor)."""
    flat = _as_bytes(data)
    if int(ggml_type) not in SPLIT_TYPES:
        device.upload(view, flat)
        return
    rb = weight_row_bytes(ggml_type, n_k)
    step = max(1, UPLOAD_CHUNK // rb) * rb
    for start in range(0, flat.nbytes, step):
        chunk = flat[start: start + step]
        device.upload(view.sub(start, chunk.nbytes), to_device_layout(ggml_type, n_k, chunk))


# Types whose quants are read with 8-byte loads when every row starts on 8 bytes (dequant.glsl A_ALIGN8): the
# split types, and Q4_K / Q5_K / IQ4_XS (blocks of 144 / 176 / 136 bytes: an aligned row's blocks stay aligned).
ALIGN8_TYPES = set(SPLIT_TYPES) | {int(GGMLType.Q4_K), int(GGMLType.Q5_K), int(GGMLType.IQ4_XS)}


def aligned8(ggml_type: int, byte_offset: int, row_bytes: int) -> bool:
    """A weight whose quants take the 8-byte loads (A_ALIGN8): a type of ALIGN8_TYPES, every row on 8 bytes."""
    return int(ggml_type) in ALIGN8_TYPES and byte_offset % 8 == 0 and row_bytes % 8 == 0


def type_name(ggml_type: int) -> str:
    """GGUF spelling of a supported type ('Q4_K'); ValueError naming the type otherwise."""
    name = SUPPORTED_TYPES.get(int(ggml_type))
    if name is None:
        try:
            name = GGMLType(int(ggml_type)).name
        except ValueError:
            name = f"id {int(ggml_type)}"
        raise ValueError(f"ggml type {name} is not supported by the vkmtp dequant kernels "
                         f"(supported: {', '.join(SUPPORTED_TYPES.values())})")
    return name


def type_define(ggml_type: int) -> dict[str, int]:
    """The shader define selecting the type in dequant.glsl: {'DATA_A_Q4_K': 1}."""
    return {f"DATA_A_{type_name(ggml_type)}": 1}


def weight_row_bytes(ggml_type: int, n_k: int) -> int:
    """Bytes of one row of n_k values; ValueError if n_k is not a whole number of blocks."""
    name = type_name(ggml_type)
    elems, nbytes = block_size(ggml_type)
    if n_k <= 0 or n_k % elems:
        raise ValueError(f"a {name} row needs a positive multiple of {elems} values, got n_k={n_k}")
    if n_k % GROUP and int(ggml_type) not in FLOAT_TYPES:
        raise ValueError(f"a {name} row of {n_k} values is not a multiple of {GROUP}")
    return n_k // elems * nbytes


@dataclass(frozen=True)
class RowPart:
    """Rows [row_start, row_start + n_rows) of a weight, stored from the start of `view`."""

    view: View
    row_start: int
    n_rows: int


def row_parts(weight: View | Sequence[RowPart], n_rows: int, row_bytes: int, what: str) -> list[RowPart]:
    """A weight (one View, or RowParts covering rows 0..n_rows-1 in order) as RowParts; checks each fits."""
    parts = [RowPart(weight, 0, n_rows)] if isinstance(weight, View) else list(weight)
    if not parts:
        raise ValueError(f"{what}: no weight parts given")
    start = 0
    for part in parts:
        if part.row_start != start or part.n_rows <= 0:
            raise ValueError(f"{what}: parts must cover rows 0..{n_rows - 1} in order; a part starts at row "
                             f"{part.row_start} with {part.n_rows} rows where row {start} was expected")
        if part.view.nbytes < part.n_rows * row_bytes:
            raise ValueError(f"{what}: part at row {part.row_start} holds {part.view.nbytes} B, its "
                             f"{part.n_rows} rows need {part.n_rows * row_bytes} B")
        start += part.n_rows
    if start != n_rows:
        raise ValueError(f"{what}: parts cover {start} rows, the weight has {n_rows}")
    return parts


def fold(n: int, limit: int = 65535) -> tuple[int, int]:
    """(x, y) with x <= limit and x * y >= n, y as small as possible: a 1-D grid over two dimensions."""
    if n <= limit:
        return max(n, 1), 1
    y = -(-n // limit)
    return -(-n // y), y


def check_view(view: View, nbytes: int, what: str) -> None:
    if view.nbytes < nbytes:
        raise ValueError(f"{what}: view of {view.nbytes} B is too small, {nbytes} B needed")


@dataclass(frozen=True)
class LinearOperands:
    """A weight-times-activations product's checked operands (shared by MatVec and MatMul)."""

    parts: list[RowPart]
    row_bytes: int
    x_stride: int
    y_stride: int


def linear_operands(op: str, weight: View | Sequence[RowPart], ggml_type: int, n_rows: int, n_k: int, x: View,
                    y: View, n_tok: int, x_stride: int | None, y_stride: int | None) -> LinearOperands:
    """Check y[n_tok, y_stride] (+)= x[n_tok, x_stride] W^T for W [n_rows, n_k] of `ggml_type`; strides
    default to n_k and n_rows. Errors start with `op`."""
    x_stride = n_k if x_stride is None else x_stride
    y_stride = n_rows if y_stride is None else y_stride
    row_bytes = weight_row_bytes(ggml_type, n_k)
    parts = row_parts(weight, n_rows, row_bytes, f"{op} weight")
    if n_tok < 1 or x_stride < n_k or y_stride < n_rows:
        raise ValueError(f"{op}: need n_tok >= 1 (got {n_tok}), x_stride >= n_k ({x_stride} < {n_k}?) "
                         f"and y_stride >= n_rows ({y_stride} < {n_rows}?)")
    check_view(x, ((n_tok - 1) * x_stride + n_k) * 4, f"{op} activations x [{n_tok}, {n_k}] f32")
    check_view(y, ((n_tok - 1) * y_stride + n_rows) * 4, f"{op} output y [{n_tok}, {n_rows}] f32")
    return LinearOperands(parts, row_bytes, x_stride, y_stride)
