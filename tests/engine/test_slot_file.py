"""Slot files (vkmtp.engine.slot_file): an image comes back as written; another identity, a damaged or foreign
file is refused with a message that says why."""

from __future__ import annotations

import numpy as np
import pytest

from vkmtp.engine.host_cache import SlotImage
from vkmtp.engine.slot_file import SlotFileError, model_identity, read_slot_file, write_slot_file

IDENTITY = {"model": "0" * 64, "engine": "vulkan", "cache_types": ["f16", "f16", "f16", "f16"], "mtp": True}


def _image():
    return SlotImage([5, 6, 7], [5, 6, 7, 8], [2, 3], {"k0": np.arange(12, dtype=np.float16).reshape(3, 4),
                                                       "state": np.arange(7, dtype=np.uint8)})


def test_round_trip(tmp_path):
    path = tmp_path / "slot.bin"
    n = write_slot_file(path, _image(), IDENTITY)
    image, n_read = read_slot_file(path, IDENTITY)
    assert n == n_read == path.stat().st_size
    assert (image.tokens, image.history, image.checkpoints) == ([5, 6, 7], [5, 6, 7, 8], [2, 3])
    assert all(np.array_equal(image.arrays[k], v) and image.arrays[k].dtype == v.dtype
               for k, v in _image().arrays.items())


def test_refusals(tmp_path):
    path = tmp_path / "slot.bin"
    write_slot_file(path, _image(), IDENTITY)
    with pytest.raises(SlotFileError, match=r"another model or other settings: model 000000000000\.\.\. "
                                            r"\(this server: 111111111111\.\.\.\); mtp True"):
        read_slot_file(path, IDENTITY | {"model": "1" * 64, "mtp": False})
    with pytest.raises(SlotFileError, match="cache_types"):
        read_slot_file(path, IDENTITY | {"cache_types": ["q8_0", "q8_0", "f16", "f16"]})
    data = path.read_bytes()
    (tmp_path / "short.bin").write_bytes(data[:-1])
    with pytest.raises(SlotFileError, match="truncated"):
        read_slot_file(tmp_path / "short.bin", IDENTITY)
    (tmp_path / "other.bin").write_bytes(b"GGUF" + data[4:])
    with pytest.raises(SlotFileError, match="not a vkmtp slot file"):
        read_slot_file(tmp_path / "other.bin", IDENTITY)


def test_model_identity_tells_files_apart(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + bytes(100))
    b.write_bytes(b"GGUF" + bytes(99) + b"\x01")
    assert model_identity(a) != model_identity(b) and model_identity(a) == model_identity(a)
