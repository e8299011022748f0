"""Read a GGUF file without copying it: metadata as Python values, tensors as memory-mapped byte views.

Dimension order: `TensorInfo.ne` is ggml order (ne[0] fastest); `TensorInfo.shape` is NumPy order (reversed).
This package is the only place that converts between the two. The header is parsed by `header.py`, which
turns every kind of damage into one `GGUFError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf import GGUFValueType

from vkmtp.gguf.header import GGUFError, TensorInfo, parse_header
from vkmtp.gguf.quants import DEQUANTIZE_TYPES, GGMLType, dequantize

__all__ = ["GGUFError", "GGUFFile", "TensorInfo", "open_gguf"]


def _map_file(path: str) -> np.memmap:
    """The whole file as a read-only u8 memmap, with OS errors turned into GGUFError."""
    if not os.path.exists(path):
        raise GGUFError(path, "file not found")
    if os.path.isdir(path):
        raise GGUFError(path, "is a directory, not a GGUF file")
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise GGUFError(path, "file is empty")
        return np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as exc:
        raise GGUFError(path, f"cannot read file: {exc.strerror or exc}") from None


class GGUFFile:
    """A parsed GGUF file. `metadata` maps keys to Python values; `tensors` maps names to `TensorInfo`.

    The file stays memory-mapped; `raw` returns views into the mapping and `dequantize` decodes to float32.
    Usable as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._mmap: np.memmap | None = _map_file(self.path)
        header = parse_header(memoryview(self._mmap), self.path)
        self.version: int = header.version
        self.metadata: dict[str, Any] = header.metadata
        self.metadata_types: dict[str, tuple[GGUFValueType, ...]] = header.metadata_types
        self.tensors: dict[str, TensorInfo] = header.tensors
        self.alignment: int = header.alignment
        self.data_offset: int = header.data_offset

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def file_size(self) -> int:
        return int(self._mapping().size)

    def _mapping(self) -> np.memmap:
        if self._mmap is None:
            raise GGUFError(self.path, "file is closed")
        return self._mmap

    def tensor(self, name: str) -> TensorInfo:
        """The info of tensor `name`; GGUFError if the file has none of that name."""
        info = self.tensors.get(name)
        if info is None:
            raise GGUFError(self.path, f"no tensor named {name!r} (the file has {len(self.tensors)} tensors)")
        return info

    def raw(self, name: str) -> np.ndarray:
        """The tensor's packed bytes as a read-only memory-mapped u8 view (no copy). [n_bytes] u8."""
        info = self.tensor(name)
        return self._mapping()[info.offset: info.offset + info.n_bytes]

    def _check_decodable(self, info: TensorInfo) -> None:
        if GGMLType(info.ggml_type) not in DEQUANTIZE_TYPES:
            raise GGUFError(self.path, f"tensor {info.name!r} has type {info.type_name} "
                                       f"(id {info.ggml_type}), which vkmtp cannot dequantize")

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 in NumPy order (a new array of `info.shape`)."""
        info = self.tensor(name)
        self._check_decodable(info)
        return dequantize(self.raw(name), info.ggml_type, info.shape)

    def dequantize_rows(self, name: str, rows: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """Selected rows of the tensor seen as [n_rows, ne[0]] (all outer dims flattened), as float32.

        Decodes only those rows, e.g. token-embedding lookups or one expert's slice of a stacked tensor.
        Returns [len(rows), ne[0]] f32.
        """
        info = self.tensor(name)
        self._check_decodable(info)
        n_rows = info.n_elements // info.ne[0] if info.ne[0] else 0
        table = self.raw(name).reshape(n_rows, info.row_bytes)
        index = np.arange(n_rows)[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        if index.ndim != 1:
            raise GGUFError(self.path, f"rows of {name!r} must be a 1-D list of indices")
        if index.size and (index.min() < -n_rows or index.max() >= n_rows):
            raise GGUFError(self.path, f"row index out of range for {name!r} with {n_rows} rows")
        picked = table[index]                                          # [len(rows), row_bytes] u8 copy
        return dequantize(picked, info.ggml_type, (index.size, info.ne[0]))

    def close(self) -> None:
        """Drop this object's mapping (views handed out by `raw` stay valid until they are released)."""
        self._mmap = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, arch={self.arch!r}, {len(self.tensors)} tensors)"


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open and validate a GGUF file; raises GGUFError naming the file and the problem."""
    return GGUFFile(path)
