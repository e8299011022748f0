"""Writing GGUF tensors of any ggml type through `gguf.GGUFWriter`: from floats, from packed bytes, and
streamed chunk by chunk; read back with vkmtp's reader and cross-checked with the gguf package's reader."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from vkmtp.gguf import (GGMLType, add_packed_tensor, add_quantized_tensor, add_streamed_tensor, open_gguf,
                        quantize, row_bytes)


def finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("t", [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q5_1,
                               GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.IQ4_XS], ids=lambda t: t.name.lower())
def test_add_quantized_tensor_round_trips(tmp_path: Path, t: GGMLType) -> None:
    values = np.random.default_rng(int(t)).standard_normal((3, 512)).astype(np.float32)
    path = tmp_path / "q.gguf"
    writer = gguf.GGUFWriter(path, "qwen35")
    packed = add_quantized_tensor(writer, "w", values, t.name.lower())
    finish(writer)
    f = open_gguf(path)
    info = f.tensors["w"]
    assert info.ne == (512, 3) and info.ggml_type == t and info.row_bytes == row_bytes(t, 512)
    np.testing.assert_array_equal(f.raw("w"), packed.reshape(-1))
    ref = gguf.GGUFReader(path).tensors[0]
    assert [int(n) for n in ref.shape] == [512, 3] and ref.tensor_type == t


def test_add_packed_tensor_any_known_type(tmp_path: Path) -> None:
    """Random IQ2_XXS bytes (a type vkmtp cannot quantize) go in verbatim with the right ne."""
    packed = np.random.default_rng(0).integers(0, 256, 2 * 4 * 66, dtype=np.uint8)
    path = tmp_path / "p.gguf"
    writer = gguf.GGUFWriter(path, "qwen35")
    add_packed_tensor(writer, "experts", packed, GGMLType.IQ2_XXS, (2, 2, 512))
    add_packed_tensor(writer, "bias", np.arange(4, dtype=np.float32).tobytes(), "f32", (4,))
    finish(writer)
    f = open_gguf(path)
    assert f.tensors["experts"].ne == (512, 2, 2) and f.tensors["bias"].ne == (4,)
    np.testing.assert_array_equal(f.raw("experts"), packed)
    np.testing.assert_array_equal(f.dequantize("bias"), np.arange(4, dtype=np.float32))


def test_add_packed_tensor_rejects_wrong_sizes() -> None:
    writer = gguf.GGUFWriter(None, "qwen35")
    with pytest.raises(ValueError, match="Q4_K shape \\(2, 256\\) needs 288 bytes, got 144"):
        add_packed_tensor(writer, "w", np.zeros(144, np.uint8), GGMLType.Q4_K, (2, 256))
    with pytest.raises(ValueError, match="not a whole number of Q4_K blocks"):
        add_packed_tensor(writer, "w", np.zeros(144, np.uint8), GGMLType.Q4_K, (1, 100))
    with pytest.raises(ValueError, match="must be u8"):
        add_packed_tensor(writer, "w", np.zeros(72, np.float32), GGMLType.Q4_K, (2, 256))
    with pytest.raises(ValueError, match="at most 4 dimensions"):
        add_packed_tensor(writer, "w", np.zeros(4, np.float32), GGMLType.F32, (1, 1, 1, 1, 1))


def test_streamed_tensor_writes_chunks_in_order(tmp_path: Path) -> None:
    values = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    path = tmp_path / "s.gguf"
    writer = gguf.GGUFWriter(path, "qwen35")
    add_quantized_tensor(writer, "before", values[:2], GGMLType.Q8_0)
    chunks = (quantize(values[i:i + 10], GGMLType.Q4_K) for i in range(0, 64, 10))   # ragged last chunk
    add_streamed_tensor(writer, "big", values.shape, GGMLType.Q4_K, chunks)
    add_quantized_tensor(writer, "after", values[:1], GGMLType.F16)
    finish(writer)
    f = open_gguf(path)
    np.testing.assert_array_equal(f.raw("big"), quantize(values, GGMLType.Q4_K).reshape(-1))
    np.testing.assert_array_equal(f.dequantize("after"), values[:1].astype(np.float16).astype(np.float32))
    assert f.tensors["big"].offset % 32 == 0 and f.tensors["after"].offset % 32 == 0


@pytest.mark.parametrize("n_chunks, pattern", [(1, "chunks gave 144 bytes, expected 288"),
                                               (3, "chunks exceed its 288 bytes")])
def test_streamed_tensor_with_wrong_total_fails(tmp_path: Path, n_chunks: int, pattern: str) -> None:
    writer = gguf.GGUFWriter(tmp_path / "bad.gguf", "qwen35")
    add_streamed_tensor(writer, "w", (2, 256), GGMLType.Q4_K, (bytes(144) for _ in range(n_chunks)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    with pytest.raises(ValueError, match=pattern):
        writer.write_tensors_to_file()
    writer.close()


def test_streamed_tensor_rejects_non_byte_chunks(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "bad.gguf", "qwen35")
    add_streamed_tensor(writer, "w", (1, 256), GGMLType.Q4_K, [np.zeros(36, np.float32)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    with pytest.raises(ValueError, match="chunks must be u8, got float32"):
        writer.write_tensors_to_file()
    writer.close()
