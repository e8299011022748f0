"""The GGUF reader: metadata and tensors of files written by `gguf.GGUFWriter`, and one clear GGUFError
(naming the file and the problem) for every kind of damaged file."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from vkmtp.gguf import GGMLType, GGUFError, add_packed_tensor, add_quantized_tensor, open_gguf, quantize

RNG = np.random.default_rng(11)
WEIGHTS = {
    "token_embd.weight": (RNG.standard_normal((4, 32)).astype(np.float32), GGMLType.F32),
    "blk.0.attn_q.weight": (RNG.standard_normal((3, 512)).astype(np.float32), GGMLType.Q4_K),
    "blk.0.ffn_up.weight": (RNG.standard_normal((2, 64)).astype(np.float32), GGMLType.Q8_0),
    "blk.0.norm.weight": (RNG.standard_normal((2, 4, 8)).astype(np.float32), GGMLType.BF16),
}


def write_model(path: Path, alignment: int | None = None) -> Path:
    writer = gguf.GGUFWriter(path, "qwen35")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_uint32("qwen35.block_count", 1)
    writer.add_int32("test.int32", -5)
    writer.add_uint64("test.uint64", 1 << 40)
    writer.add_float32("test.float32", 0.25)
    writer.add_float64("test.float64", -1.5)
    writer.add_bool("test.bool", True)
    writer.add_string("general.name", "tiny ünïcode")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "hello", "ünï", ""])
    writer.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0, 0.0])
    writer.add_array("test.int_array", [1, 2, 3])
    writer.add_array("test.bool_array", [True, False])
    writer.add_array("test.nested", [[1, 2], [3]])
    for name, (values, t) in WEIGHTS.items():
        add_quantized_tensor(writer, name, values, t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_model(tmp_path_factory.mktemp("gguf") / "model.gguf").read_bytes()


def tensor_info_offset(data: bytes, name: str) -> int:
    """Byte offset of the n_dims field of tensor `name`'s info."""
    key = struct.pack("<Q", len(name)) + name.encode()
    return data.rindex(key) + len(key)


def expect_error(path: Path, pattern: str) -> GGUFError:
    with pytest.raises(GGUFError, match=pattern) as info:
        open_gguf(path)
    assert str(info.value).startswith(str(path) + ": ")
    return info.value


def test_reads_metadata(model_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(model_bytes)
    with open_gguf(path) as f:
        md = f.metadata
        assert f.arch == "qwen35" and f.version == 3 and f.alignment == 32
        assert md["qwen35.block_count"] == 1 and md["test.int32"] == -5 and md["test.uint64"] == 1 << 40
        assert md["test.float32"] == 0.25 and md["test.float64"] == -1.5 and md["test.bool"] is True
        assert md["general.name"] == "tiny ünïcode"
        assert md["tokenizer.ggml.tokens"] == ["<s>", "hello", "ünï", ""]
        assert md["tokenizer.ggml.scores"] == [0.5, -1.0, 2.0, 0.0]
        assert md["test.int_array"] == [1, 2, 3] and md["test.bool_array"] == [True, False]
        assert md["test.nested"] == [[1, 2], [3]]
        vt = gguf.GGUFValueType
        assert f.metadata_types["tokenizer.ggml.tokens"] == (vt.ARRAY, vt.STRING)
        assert f.metadata_types["qwen35.block_count"] == (gguf.GGUFValueType.UINT32,)


def test_reads_tensors_like_gguf_package(model_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(model_bytes)
    f = open_gguf(path)
    reference = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert list(f.tensors) == list(WEIGHTS)
    for name, (values, t) in WEIGHTS.items():
        info = f.tensors[name]
        assert info.shape == values.shape and info.ne == tuple(reversed(values.shape))
        assert info.ggml_type == t and info.type_name == t.name
        assert info.ne == tuple(int(n) for n in reference[name].shape)
        assert info.offset == reference[name].data_offset and info.offset % 32 == 0
        raw = f.raw(name)
        assert isinstance(raw, np.memmap) and not raw.flags.writeable and raw.size == info.n_bytes
        np.testing.assert_array_equal(raw, quantize(values, t).reshape(-1))
        decoded = f.dequantize(name)
        assert decoded.shape == values.shape and decoded.dtype == np.float32
    np.testing.assert_array_equal(f.dequantize("token_embd.weight"), WEIGHTS["token_embd.weight"][0])
    np.testing.assert_array_equal(f.dequantize_rows("blk.0.attn_q.weight", [2, 0]),
                                  f.dequantize("blk.0.attn_q.weight")[[2, 0]])
    np.testing.assert_array_equal(f.dequantize_rows("blk.0.norm.weight", slice(5, 8)),
                                  f.dequantize("blk.0.norm.weight").reshape(8, 8)[5:8])


def test_custom_alignment(tmp_path: Path) -> None:
    f = open_gguf(write_model(tmp_path / "a64.gguf", alignment=64))
    assert f.alignment == 64 and all(t.offset % 64 == 0 for t in f.tensors.values())
    np.testing.assert_array_equal(f.dequantize("token_embd.weight"), WEIGHTS["token_embd.weight"][0])


def test_unknown_tensor_name_and_closed_file(model_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(model_bytes)
    f = open_gguf(path)
    with pytest.raises(GGUFError, match="no tensor named 'nope'"):
        f.raw("nope")
    with pytest.raises(GGUFError, match="row index out of range"):
        f.dequantize_rows("token_embd.weight", [4])
    f.close()
    with pytest.raises(GGUFError, match="file is closed"):
        f.raw("token_embd.weight")


def test_tensor_of_undecodable_type_opens_but_does_not_dequantize(tmp_path: Path) -> None:
    path = tmp_path / "iq1.gguf"
    writer = gguf.GGUFWriter(path, "qwen35")
    add_packed_tensor(writer, "blk.0.w", np.zeros(2 * 50, np.uint8), GGMLType.IQ1_S, (2, 256))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    f = open_gguf(path)
    assert f.tensors["blk.0.w"].n_bytes == 100 and f.raw("blk.0.w").size == 100
    with pytest.raises(GGUFError, match=r"tensor 'blk.0.w' has type IQ1_S \(id 19\), which vkmtp cannot"):
        f.dequantize("blk.0.w")


# ---- damaged files: each gives one GGUFError naming the file and the problem ----

def test_missing_file_and_directory(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.gguf", "file not found")
    expect_error(tmp_path, "is a directory")


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    expect_error(tmp_path / "empty.gguf", "file is empty")
    (tmp_path / "tiny.gguf").write_bytes(b"GGU")
    expect_error(tmp_path / "tiny.gguf", "not a GGUF file: only 3 bytes")


def test_wrong_magic(model_bytes: bytes, tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"GGML" + model_bytes[4:])
    expect_error(tmp_path / "bad.gguf", r"not a GGUF file \(magic b'GGML'")


@pytest.mark.parametrize("version, pattern", [(1, "unsupported GGUF version 1"),
                                              (4, "unsupported GGUF version 4"),
                                              (0x03000000, "big-endian GGUF files are not supported")])
def test_unsupported_version(model_bytes: bytes, tmp_path: Path, version: int, pattern: str) -> None:
    (tmp_path / "v.gguf").write_bytes(model_bytes[:4] + struct.pack("<I", version) + model_bytes[8:])
    expect_error(tmp_path / "v.gguf", pattern)


def test_truncated_sections(model_bytes: bytes, tmp_path: Path) -> None:
    first_info = tensor_info_offset(model_bytes, "token_embd.weight")
    data_start = open_gguf(write_model(tmp_path / "ok.gguf")).tensors["token_embd.weight"].offset
    cases = {
        12: "truncated header",
        model_bytes.index(b"test.float32") + 4: r"truncated metadata \(",
        model_bytes.index(b"tokenizer.ggml.tokens") + 40:
            r"truncated metadata \(value of 'tokenizer.ggml.tokens'\)",
        first_info + 6: r"truncated tensor info \('token_embd.weight'\)",
        first_info - 10: r"truncated tensor info \(#0 of 4\)",
        data_start + 100: "truncated tensor data: tensor '",
        len(model_bytes) - 1: "truncated tensor data: tensor 'blk.0.norm.weight'",
    }
    for cut, pattern in cases.items():
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(model_bytes[:cut])
        expect_error(path, pattern)


def test_huge_counts_are_reported_as_truncation(model_bytes: bytes, tmp_path: Path) -> None:
    (tmp_path / "n.gguf").write_bytes(model_bytes[:16] + struct.pack("<Q", 1 << 60) + model_bytes[24:])
    expect_error(tmp_path / "n.gguf", "truncated metadata")
    # the array count sits after the key, the value type and the element type
    pos = model_bytes.index(b"tokenizer.ggml.scores") + len("tokenizer.ggml.scores") + 8
    (tmp_path / "a.gguf").write_bytes(model_bytes[:pos] + struct.pack("<Q", 1 << 50) + model_bytes[pos + 8:])
    expect_error(tmp_path / "a.gguf", r"truncated metadata \(value of 'tokenizer.ggml.scores'\)")


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_unknown_ggml_type_id(model_bytes: bytes, tmp_path: Path) -> None:
    at = tensor_info_offset(model_bytes, "blk.0.ffn_up.weight") + 4 + 2 * 8      # n_dims, ne[0], ne[1]
    (tmp_path / "t.gguf").write_bytes(patch(model_bytes, at, "<I", 99))
    err = expect_error(tmp_path / "t.gguf", "tensor 'blk.0.ffn_up.weight' has unknown ggml type id 99")
    assert err.problem.startswith("tensor 'blk.0.ffn_up.weight'")


def test_dims_not_whole_blocks(model_bytes: bytes, tmp_path: Path) -> None:
    at = tensor_info_offset(model_bytes, "blk.0.attn_q.weight") + 4
    (tmp_path / "d.gguf").write_bytes(patch(model_bytes, at, "<Q", 500))
    expect_error(tmp_path / "d.gguf",
                 r"tensor 'blk.0.attn_q.weight' \(Q4_K\): ne\[0\] = 500 is not a whole number")


def test_too_many_dims(model_bytes: bytes, tmp_path: Path) -> None:
    at = tensor_info_offset(model_bytes, "blk.0.attn_q.weight")
    (tmp_path / "d.gguf").write_bytes(patch(model_bytes, at, "<I", 5))
    expect_error(tmp_path / "d.gguf", "tensor 'blk.0.attn_q.weight' has 5 dimensions")


def test_unknown_metadata_value_type(model_bytes: bytes, tmp_path: Path) -> None:
    at = model_bytes.index(b"test.int32") + len("test.int32")
    (tmp_path / "v.gguf").write_bytes(patch(model_bytes, at, "<I", 77))
    expect_error(tmp_path / "v.gguf", "metadata key 'test.int32' has unknown value type 77")


def test_bad_tensor_offsets(model_bytes: bytes, tmp_path: Path) -> None:
    at = tensor_info_offset(model_bytes, "blk.0.ffn_up.weight") + 4 + 2 * 8 + 4    # the offset field
    original = struct.unpack_from("<Q", model_bytes, at)[0]
    (tmp_path / "mis.gguf").write_bytes(patch(model_bytes, at, "<Q", original + 1))
    expect_error(tmp_path / "mis.gguf",
                 "tensor 'blk.0.ffn_up.weight' data offset .* not a multiple of the alignment")
    (tmp_path / "ovl.gguf").write_bytes(patch(model_bytes, at, "<Q", 0))
    expect_error(tmp_path / "ovl.gguf", "overlap")


def test_duplicate_names(model_bytes: bytes, tmp_path: Path) -> None:
    assert len(b"blk.0.ffn_up.weight") == len(b"blk.0.attn_q.weight")
    (tmp_path / "t.gguf").write_bytes(model_bytes.replace(b"blk.0.ffn_up.weight", b"blk.0.attn_q.weight"))
    expect_error(tmp_path / "t.gguf", "duplicate tensor name 'blk.0.attn_q.weight'")
    path = tmp_path / "k.gguf"
    writer = gguf.GGUFWriter(path, "qwen35")
    writer.add_uint32("dup.k1", 1)
    writer.add_uint32("dup.k2", 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.write_bytes(path.read_bytes().replace(b"dup.k2", b"dup.k1"))
    expect_error(path, "duplicate metadata key 'dup.k1'")


def test_bad_alignment_value(tmp_path: Path) -> None:
    path = tmp_path / "al.gguf"
    writer = gguf.GGUFWriter(path, "qwen35")
    writer.add_uint32("general.alignment", 24)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expect_error(path, "general.alignment must be a power-of-two u32, got 24")


def test_key_not_utf8(model_bytes: bytes, tmp_path: Path) -> None:
    (tmp_path / "u.gguf").write_bytes(model_bytes.replace(b"test.bool", b"test.b\xffol"))
    expect_error(tmp_path / "u.gguf", r"metadata key #\d+ is not valid UTF-8")
