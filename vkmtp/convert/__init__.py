"""Hugging Face Qwen3.5 / Qwen3.6 checkpoint -> GGUF, as llama.cpp's convert_hf_to_gguf.py writes it.

NumPy in, GGUF out; no torch. `write_gguf(state_dict, hf_config, out_path, file_type, tokenizer_meta)`.
"""

from vkmtp.convert.hf_config import ConversionError, HFConfig, read_hf_config
from vkmtp.convert.metadata import model_metadata
from vkmtp.convert.tensors import convert_tensors, reorder_v_heads
from vkmtp.convert.writer import FILE_TYPES, quantize, tensor_type, write_gguf

__all__ = ["ConversionError", "HFConfig", "read_hf_config", "model_metadata", "convert_tensors",
           "reorder_v_heads", "FILE_TYPES", "quantize", "tensor_type", "write_gguf"]
