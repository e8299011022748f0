"""Slot files (POST /slots/{id}?action=save|restore): a slot image on disk, refused when another model wrote it.

Layout (little-endian): the magic b"VKMTPSLT", a u32 format version, a u64 header length, the header as UTF-8
JSON, then the image's arrays' raw bytes one after another in the header's order. The header holds the
*identity* the file is only valid for — the model (`model_identity`: a hash of the GGUF's size, its first 8 MiB,
which hold the header, metadata and tensor table, and its last MiB of weights), the engine (vulkan or
reference: their arrays differ), the KV cache types and whether the MTP head's state is in it — and the image:
its tokens, the prompt its checkpoints belong to, their positions, and each array's name, dtype and shape.
Reading compares the identity first and names every field that differs, so a file from another model or other
settings is refused before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from functools import lru_cache

import numpy as np

from vkmtp.engine.host_cache import SlotImage

MAGIC = b"VKMTPSLT"
VERSION = 1
_FIXED = struct.Struct("<8sIQ")
_HEAD_BYTES, _TAIL_BYTES = 8 << 20, 1 << 20


class SlotFileError(ValueError):
    """A slot file that cannot be restored here (another model, other settings, damaged); the message says why."""


def model_identity(path: str | os.PathLike) -> str:
    """A hash that tells models apart: the GGUF's size, its first 8 MiB and its last MiB (hex sha256)."""
    st = os.stat(path)
    return _identity(os.fspath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _identity(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_HEAD_BYTES))
        if size > _HEAD_BYTES:
            f.seek(max(_HEAD_BYTES, size - _TAIL_BYTES))
            h.update(f.read())
    return h.hexdigest()


def write_slot_file(path: str | os.PathLike, image: SlotImage, identity: dict) -> int:
    """Write `image` (atomically: a temporary file renamed); the bytes written."""
    arrays = [(name, np.ascontiguousarray(a)) for name, a in image.arrays.items()]
    header = json.dumps({
        "identity": identity, "tokens": image.tokens, "history": image.history, "checkpoints": image.checkpoints,
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays],
    }).encode()
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    n = 0
    try:
        with open(tmp, "wb") as f:
            for part in (_FIXED.pack(MAGIC, VERSION, len(header)), header, *(a.data for _, a in arrays)):
                f.write(part)
                n += memoryview(part).nbytes
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return n


def read_slot_file(path: str | os.PathLike, identity: dict) -> tuple[SlotImage, int]:
    """The image in a slot file written for `identity`, and the bytes read; SlotFileError otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(os.fspath(path))
    if len(data) < _FIXED.size or data[:8] != MAGIC:
        raise SlotFileError(f"{name} is not a vkmtp slot file")
    _, version, n_header = _FIXED.unpack_from(data)
    if version != VERSION:
        raise SlotFileError(f"{name} has slot file format version {version}; this vkmtp reads version {VERSION}")
    try:
        header = json.loads(data[_FIXED.size: _FIXED.size + n_header])
        theirs = header["identity"]
    except (ValueError, KeyError, TypeError):
        raise SlotFileError(f"{name}: damaged slot file header") from None
    def shown(key, value):   # model hashes are long: their first 12 digits tell them apart
        return f"{value[:12]}..." if key == "model" and isinstance(value, str) else repr(value)

    differ = [f"{key} {shown(key, theirs.get(key))} (this server: {shown(key, value)})"
              for key, value in identity.items() if theirs.get(key) != value]
    if differ:
        raise SlotFileError(f"{name} was saved for another model or other settings: " + "; ".join(differ))
    arrays, offset = {}, _FIXED.size + n_header
    try:
        for key, dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            size = dt.itemsize * int(np.prod(shape, dtype=np.int64))
            if offset + size > len(data):
                raise SlotFileError(f"{name} is truncated (array {key})")
            arrays[key] = np.frombuffer(data, dt, size // dt.itemsize, offset).reshape(shape)
            offset += size
        image = SlotImage([int(t) for t in header["tokens"]], [int(t) for t in header["history"]],
                          [int(p) for p in header["checkpoints"]], arrays)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SlotFileError):
            raise
        raise SlotFileError(f"{name}: damaged slot file ({exc})") from None
    if offset != len(data):
        raise SlotFileError(f"{name} has {len(data) - offset} bytes after its last array")
    return image, len(data)
