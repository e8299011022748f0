"""GGUF files as llama.cpp writes them: header, metadata, tensor infos (memory-mapped), block layouts,
NumPy dequantization and quantization of every weight type vkmtp runs, and helpers to write GGUF tensors."""

from vkmtp.gguf.header import GGUFError, TensorInfo
from vkmtp.gguf.quants import (DEQUANTIZE_TYPES, QUANTIZE_TYPES, GGMLType, block_size, dequantize, ggml_type,
                               quantize, row_bytes, tensor_bytes)
from vkmtp.gguf.reader import GGUFFile, open_gguf
from vkmtp.gguf.writer import StreamedTensor, add_packed_tensor, add_quantized_tensor, add_streamed_tensor

__all__ = [
    "GGUFError", "GGUFFile", "TensorInfo", "open_gguf",
    "GGMLType", "ggml_type", "block_size", "row_bytes", "tensor_bytes",
    "dequantize", "quantize", "DEQUANTIZE_TYPES", "QUANTIZE_TYPES",
    "add_packed_tensor", "add_quantized_tensor", "add_streamed_tensor", "StreamedTensor",
]
