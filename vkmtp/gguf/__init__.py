"""GGUF files as llama.cpp writes them: header, metadata, tensor infos (memory-mapped), block layouts, dequant."""

from vkmtp.gguf.reader import GGUFError, GGUFFile, TensorInfo, open_gguf
from vkmtp.gguf.quants import GGMLType, block_size, dequantize, row_bytes

__all__ = [
    "GGUFError", "GGUFFile", "TensorInfo", "open_gguf",
    "GGMLType", "block_size", "dequantize", "row_bytes",
]
