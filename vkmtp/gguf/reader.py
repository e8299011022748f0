"""Read a GGUF file without copying it: metadata as Python values, tensors as memory-mapped byte views.

Dimension order: `TensorInfo.ne` is ggml order (ne[0] fastest); `TensorInfo.shape` is NumPy order (reversed).
This module is the only place that converts between the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType

from vkmtp.gguf.quants import GGMLType, block_size, dequantize


class GGUFError(ValueError):
    """A GGUF file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ne: tuple[int, ...]      # ggml order, ne[0] contiguous
    ggml_type: int
    offset: int              # absolute byte offset of the data in the file
    n_bytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy order (outermost first)."""
        return tuple(reversed(self.ne))

    @property
    def type_name(self) -> str:
        return GGMLType(self.ggml_type).name

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.ne))


def _field_value(field) -> Any:
    types = field.types
    if not types:
        return None
    if types[0] == GGUFValueType.ARRAY:
        sub = types[1] if len(types) > 1 else None
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    value = field.parts[field.data[0]].tolist()[0]
    if types[0] == GGUFValueType.BOOL:
        return bool(value)
    return value


class GGUFFile:
    """A parsed GGUF file. `metadata` maps keys to Python values; `tensors` maps names to `TensorInfo`."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise GGUFError(path, "file not found")
        with open(self.path, "rb") as fh:
            magic = fh.read(4)
        if magic != b"GGUF":
            raise GGUFError(path, f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
        try:
            self._reader = GGUFReader(self.path, "r")
        except Exception as exc:  # the gguf package raises ValueError/IndexError/struct errors on damage
            raise GGUFError(path, f"damaged or truncated GGUF header ({type(exc).__name__}: {exc})") from None
        self.metadata: dict[str, Any] = {}
        for name, field in self._reader.fields.items():
            if name.startswith("GGUF."):
                continue
            self.metadata[name] = _field_value(field)
        self.tensors: dict[str, TensorInfo] = {}
        file_size = os.path.getsize(self.path)
        for t in self._reader.tensors:
            ne = tuple(int(x) for x in t.shape)
            elems, nbytes = block_size(int(t.tensor_type))
            n_bytes = int(np.prod(ne)) // elems * nbytes
            offset = int(t.data_offset)
            if offset + n_bytes > file_size:
                raise GGUFError(path, f"truncated: tensor '{t.name}' ends at byte {offset + n_bytes}, "
                                      f"file has {file_size}")
            self.tensors[t.name] = TensorInfo(t.name, ne, int(t.tensor_type), offset, n_bytes)
        self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def raw(self, name: str) -> np.ndarray:
        """The tensor's packed bytes as a read-only memory-mapped uint8 view (no copy)."""
        info = self.tensors[name]
        return self._mmap[info.offset: info.offset + info.n_bytes]

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 in NumPy order."""
        info = self.tensors[name]
        return dequantize(self.raw(name), info.ggml_type, info.shape)

    def close(self) -> None:
        self._mmap = None
        self._reader = None


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    return GGUFFile(path)
