"""Add tensors of any ggml type to a `gguf.GGUFWriter`, in llama.cpp's on-disk layout.

`gguf.GGUFWriter` takes quantized data as a u8 array whose last axis is the row's byte length and derives
ggml's `ne` from it; these helpers build that array from floats (`add_quantized_tensor`), accept bytes that
are already packed (`add_packed_tensor`), or stream packed bytes chunk by chunk while the file is written
(`add_streamed_tensor`), so multi-GB synthetic models never hold a float copy, or even a whole packed
tensor, in memory. Shapes are NumPy order (outermost first); the last axis is ggml's ne[0].

Typical use:
    writer = gguf.GGUFWriter(path, "qwen35")
    add_quantized_tensor(writer, "blk.0.ffn_up.weight", w, "q4_k")          # w: [n_ff, n_embd] f32
    add_streamed_tensor(writer, "token_embd.weight", (n_vocab, n_embd), "q8_0", chunk_generator())
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file()
    writer.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import IO

import numpy as np
from gguf import GGUFEndian, GGUFWriter

from vkmtp.gguf.quants import GGMLType, ggml_type, quantize, row_bytes, tensor_bytes


def _byte_shape(shape: Sequence[int], t: GGMLType) -> tuple[int, ...]:
    """NumPy-order element shape -> the u8 shape GGUFWriter expects: [..., row_bytes]."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("a tensor needs at least one dimension")
    if len(shape) > 4:
        raise ValueError(f"ggml tensors have at most 4 dimensions, got shape {shape}")
    return (*shape[:-1], row_bytes(t, shape[-1]))


def _check_writer(writer: GGUFWriter) -> None:
    if writer.endianess != GGUFEndian.LITTLE:
        raise ValueError("vkmtp writes little-endian GGUF files only")


def add_packed_tensor(writer: GGUFWriter, name: str, packed: np.ndarray | bytes,
                      ggml_type_id: int | str | GGMLType, shape: Sequence[int]) -> None:
    """Add already-packed blocks (any ggml type with a known block size, e.g. random IQ2_XXS bytes).

    Args:
        packed: the tensor's bytes in llama.cpp's layout, any shape; its size must match `shape`.
        shape: element shape in NumPy order, e.g. (n_out, n_in) for a weight with ne = (n_in, n_out).
    """
    _check_writer(writer)
    t = ggml_type(ggml_type_id)
    byte_shape = _byte_shape(shape, t)
    data = np.frombuffer(packed, dtype=np.uint8) if isinstance(packed, (bytes, bytearray, memoryview)) \
        else np.asarray(packed)
    if data.dtype != np.uint8:
        raise ValueError(f"packed data for {name!r} must be u8 bytes, got {data.dtype}")
    expected = tensor_bytes(t, tuple(shape))
    if data.size != expected:
        raise ValueError(f"{name!r}: {t.name} shape {tuple(shape)} needs {expected} bytes, got {data.size}")
    writer.add_tensor(name, np.ascontiguousarray(data).reshape(byte_shape), raw_dtype=t)


def add_quantized_tensor(writer: GGUFWriter, name: str, values: np.ndarray,
                         ggml_type_id: int | str | GGMLType) -> np.ndarray:
    """Quantize `values` ([..., K] f32, NumPy order) to `ggml_type` and add it; returns the packed bytes."""
    t = ggml_type(ggml_type_id)
    packed = quantize(values, t)
    add_packed_tensor(writer, name, packed, t, np.shape(values))
    return packed


class StreamedTensor:
    """Stands in for an ndarray inside GGUFWriter: same `shape`/`dtype`/`nbytes`, and `tofile` writes the
    chunks as they are produced, checking that they add up to exactly `nbytes`."""

    dtype = np.dtype(np.uint8)

    def __init__(self, name: str, byte_shape: tuple[int, ...], chunks: Iterable[np.ndarray | bytes]):
        self.name = name
        self.shape = byte_shape
        self.nbytes = int(np.prod(byte_shape, dtype=np.int64))
        self._chunks = chunks
        self._written = False

    def tofile(self, fout: IO[bytes]) -> None:
        if self._written:
            raise ValueError(f"streamed tensor {self.name!r} was already written (its chunks are consumed)")
        self._written = True
        total = 0
        for chunk in self._chunks:
            if isinstance(chunk, np.ndarray):
                if chunk.dtype != np.uint8:
                    raise ValueError(f"streamed tensor {self.name!r}: chunks must be u8, got {chunk.dtype}")
                chunk = np.ascontiguousarray(chunk)
            data = memoryview(chunk).cast("B")
            total += data.nbytes
            if total > self.nbytes:
                raise ValueError(f"streamed tensor {self.name!r}: chunks exceed its {self.nbytes} bytes")
            fout.write(data)
        if total != self.nbytes:
            raise ValueError(f"streamed tensor {self.name!r}: chunks gave {total} bytes, "
                             f"expected {self.nbytes}")


def add_streamed_tensor(writer: GGUFWriter, name: str, shape: Sequence[int],
                        ggml_type_id: int | str | GGMLType, chunks: Iterable[np.ndarray | bytes]) -> None:
    """Add a tensor whose packed bytes come from `chunks` (u8 arrays or bytes, in file order) when the
    writer writes tensor data. The chunks must total `tensor_bytes(type, shape)`; a mismatch raises
    ValueError during `write_tensors_to_file`. `chunks` is iterated once (a generator is fine).
    """
    _check_writer(writer)
    t = ggml_type(ggml_type_id)
    stream = StreamedTensor(name, _byte_shape(shape, t), chunks)
    writer.add_tensor(name, stream, raw_dtype=t, tensor_endianess=writer.endianess)  # type: ignore[arg-type]
