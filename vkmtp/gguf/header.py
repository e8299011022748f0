"""Parse the front of a GGUF file (header, metadata, tensor infos) from an in-memory or mapped buffer.

GGUF v2/v3, little-endian (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64 | n_kv x (key string, value type u32, value)
    | n_tensors x (name string, n_dims u32, ne u64[n_dims], ggml type u32, offset u64)
    | padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
A string is a u64 byte length then UTF-8 bytes; an array is an element type u32, a count u64, then elements.

Every inconsistency raises `GGUFError(path, problem)` naming the section and, where known, the key or the
tensor; bounds are checked before every read, so no struct/NumPy error escapes.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFValueType

from vkmtp.gguf.quants import GGMLType

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<B", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


_U64 = struct.Struct("<Q")


class GGUFError(ValueError):
    """A GGUF file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's description. `ne` is ggml order (ne[0] contiguous); `shape` is NumPy order."""

    name: str
    ne: tuple[int, ...]
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
        return int(np.prod(self.ne, dtype=np.int64))

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (ne[0] values)."""
        elems, nbytes = GGML_QUANT_SIZES[GGMLType(self.ggml_type)]
        return self.ne[0] // elems * nbytes


@dataclass
class Header:
    """Everything before the tensor data. Tensor offsets in `tensors` are absolute file offsets."""

    version: int
    metadata: dict[str, Any]
    metadata_types: dict[str, tuple[GGUFValueType, ...]]   # (type,) or (ARRAY, element type, ...)
    tensors: dict[str, TensorInfo]
    alignment: int
    data_offset: int


class _Cursor:
    """Bounds-checked little-endian reads from `buf`; `section` names what is being read for errors."""

    def __init__(self, buf: memoryview, path: str):
        self.buf = buf
        self.path = path
        self.pos = 0
        self.section = "header"

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(self.path, problem)

    def need(self, n_bytes: int) -> None:
        if n_bytes < 0 or self.pos + n_bytes > len(self.buf):
            raise self.fail(f"truncated {self.section}: needs {n_bytes} bytes at offset {self.pos}, "
                            f"file has {len(self.buf)} bytes")

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self) -> int:
        return self.scalar("<I")

    def u64(self) -> int:
        return self.scalar("<Q")

    def raw_string(self) -> bytes:
        n = self.u64()
        self.need(n)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def string(self) -> str:
        return self.raw_string().decode("utf-8", errors="replace")

    def string_list(self, count: int) -> list[str]:
        """`count` strings; a tight loop, since vocabularies hold ~250k of them."""
        buf, pos, size = self.buf, self.pos, len(self.buf)
        unpack_u64 = _U64.unpack_from
        out = []
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8)
            n = unpack_u64(buf, pos)[0]
            pos += 8
            if pos + n > size:
                self.pos = pos
                self.need(n)
            out.append(str(buf[pos:pos + n], "utf-8", "replace"))
            pos += n
        self.pos = pos
        return out

    def name(self, what: str) -> str:
        """A key or tensor name: must be valid UTF-8."""
        raw = self.raw_string()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8: {raw[:40]!r}") from None

    def value_type(self, what: str) -> GGUFValueType:
        type_id = self.u32()
        try:
            return GGUFValueType(type_id)
        except ValueError:
            raise self.fail(f"{what} has unknown value type {type_id}") from None

    def value(self, vtype: GGUFValueType, what: str) -> tuple[Any, tuple[GGUFValueType, ...]]:
        """One metadata value of type `vtype` -> (Python value, full type)."""
        if vtype == GGUFValueType.STRING:
            return self.string(), (vtype,)
        if vtype == GGUFValueType.ARRAY:
            return self.array(what)
        value = self.scalar(_SCALAR_FORMATS[vtype])
        return (bool(value) if vtype == GGUFValueType.BOOL else value), (vtype,)

    def array(self, what: str) -> tuple[list[Any], tuple[GGUFValueType, ...]]:
        etype = self.value_type(f"array {what}")
        count = self.u64()
        if etype == GGUFValueType.STRING:
            self.need(8 * count)                     # each string has at least its length field
            return self.string_list(count), (GGUFValueType.ARRAY, etype)
        if etype == GGUFValueType.ARRAY:
            self.need(12 * count)
            items = [self.array(f"{what}[{i}]") for i in range(count)]
            sub = items[0][1] if items else (GGUFValueType.ARRAY,)
            return [v for v, _ in items], (GGUFValueType.ARRAY, *sub)
        fmt = _SCALAR_FORMATS[etype]
        size = struct.calcsize(fmt)
        self.need(size * count)
        values = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=count, offset=self.pos)
        self.pos += size * count
        items = values.astype(bool).tolist() if etype == GGUFValueType.BOOL else values.tolist()
        return items, (GGUFValueType.ARRAY, etype)


def _parse_preamble(cur: _Cursor) -> tuple[int, int, int]:
    """magic, version, counts -> (version, n_tensors, n_kv)."""
    if len(cur.buf) < 4:
        raise cur.fail(f"not a GGUF file: only {len(cur.buf)} bytes, no magic")
    magic = bytes(cur.buf[0:4])
    if magic != MAGIC:
        raise cur.fail(f"not a GGUF file (magic {magic!r}, expected {MAGIC!r})")
    cur.pos = 4
    version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        if int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
            raise cur.fail("big-endian GGUF files are not supported")
        raise cur.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
    return version, cur.u64(), cur.u64()


def _parse_metadata(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, tuple[GGUFValueType, ...]]]:
    metadata: dict[str, Any] = {}
    types: dict[str, tuple[GGUFValueType, ...]] = {}
    for i in range(n_kv):
        cur.section = f"metadata (key #{i} of {n_kv})"
        key = cur.name(f"metadata key #{i}")
        cur.section = f"metadata (value of {key!r})"
        if key in metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        metadata[key], types[key] = cur.value(cur.value_type(f"metadata key {key!r}"), repr(key))
    return metadata, types


def _parse_tensor_info(cur: _Cursor, index: int, n_tensors: int) -> tuple[str, tuple[int, ...], int, int]:
    """One tensor info -> (name, ne, ggml type id, relative offset)."""
    cur.section = f"tensor info (#{index} of {n_tensors})"
    name = cur.name(f"tensor name #{index}")
    cur.section = f"tensor info ({name!r})"
    n_dims = cur.u32()
    if n_dims > MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
    ne = tuple(cur.u64() for _ in range(n_dims)) or (1,)     # ggml reads a 0-dim tensor as ne = [1]
    if math.prod(ne) >= 1 << 62:
        raise cur.fail(f"tensor {name!r} has impossible dimensions {ne}")
    type_id = cur.u32()
    try:
        ggml_type = GGMLType(type_id)
    except ValueError:
        raise cur.fail(f"tensor {name!r} has unknown ggml type id {type_id}") from None
    if ggml_type not in GGML_QUANT_SIZES:
        raise cur.fail(f"tensor {name!r} has ggml type {ggml_type.name} (id {type_id}) of unknown size")
    return name, ne, type_id, cur.u64()


def _alignment(cur: _Cursor, metadata: dict[str, Any], types: dict[str, tuple[GGUFValueType, ...]]) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] != (GGUFValueType.UINT32,) or value <= 0 or value & (value - 1):
        raise cur.fail(f"general.alignment must be a power-of-two u32, got {value!r}")
    return value


def _check_layout(cur: _Cursor, tensors: dict[str, TensorInfo], alignment: int, data_offset: int) -> None:
    """Offsets aligned, data inside the file, no two tensors overlapping."""
    file_size = len(cur.buf)
    previous: TensorInfo | None = None
    for info in sorted(tensors.values(), key=lambda t: (t.offset, t.n_bytes)):
        if (info.offset - data_offset) % alignment:
            raise cur.fail(f"tensor {info.name!r} data offset {info.offset - data_offset} is not a multiple "
                           f"of the alignment {alignment}")
        if info.offset + info.n_bytes > file_size:
            raise cur.fail(f"truncated tensor data: tensor {info.name!r} needs bytes {info.offset}.."
                           f"{info.offset + info.n_bytes}, file has {file_size} bytes")
        if previous is not None and info.offset < previous.offset + previous.n_bytes:
            raise cur.fail(f"tensors {previous.name!r} and {info.name!r} overlap in the data section")
        previous = info


def parse_header(buf: memoryview, path: str) -> Header:
    """Parse and validate everything up to the tensor data; `buf` is the whole file."""
    cur = _Cursor(buf, path)
    version, n_tensors, n_kv = _parse_preamble(cur)
    metadata, types = _parse_metadata(cur, n_kv)
    raw_infos = []
    for i in range(n_tensors):
        raw_infos.append(_parse_tensor_info(cur, i, n_tensors))
    alignment = _alignment(cur, metadata, types)
    data_offset = -(-cur.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, ne, type_id, rel_offset in raw_infos:
        if name in tensors:
            raise cur.fail(f"duplicate tensor name {name!r}")
        elems, nbytes = GGML_QUANT_SIZES[GGMLType(type_id)]
        if ne[0] % elems:
            raise cur.fail(f"tensor {name!r} ({GGMLType(type_id).name}): ne[0] = {ne[0]} is not a whole "
                           f"number of {elems}-value blocks")
        n_bytes = math.prod(ne) // elems * nbytes
        tensors[name] = TensorInfo(name, ne, type_id, data_offset + rel_offset, n_bytes)
    _check_layout(cur, tensors, alignment, data_offset)
    return Header(version, metadata, types, tensors, alignment, data_offset)
