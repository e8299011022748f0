"""Write a converted Qwen3.5 checkpoint as GGUF, choosing each tensor's type like llama.cpp's converter.

Type rules (llama.cpp's conversion/base.py; docs/MODEL.md, Tensors): F32 for 1-D tensors, `*_norm.weight`, `ssm_conv1d`,
`ffn_gate_inp`, `ffn_gate_inp_shexp` and every name not ending in `.weight`; the file type for the rest; a
tensor whose rows do not fit the type's block size falls back to F16. Besides llama.cpp's outtypes (f32,
f16, bf16, q8_0) any ggml type with a quantizer can be requested for all quantizable tensors, and
`type_overrides` can set single tensors (fnmatch patterns) to build mixes like Q4_K_M.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any, Mapping

import gguf
import numpy as np

from vkmtp.convert.hf_config import ConversionError, read_hf_config
from vkmtp.convert.metadata import model_metadata
from vkmtp.convert.tensors import convert_tensors, count_mtp_layers
from vkmtp.gguf import QUANTIZE_TYPES, GGMLType, add_packed_tensor, block_size
from vkmtp.gguf import quantize as gguf_quantize

FILE_TYPES: dict[str, tuple[GGMLType, gguf.LlamaFileType]] = {
    "f32": (GGMLType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (GGMLType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (GGMLType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (GGMLType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (GGMLType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (GGMLType.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "q5_0": (GGMLType.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q5_1": (GGMLType.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
    "q2_k": (GGMLType.Q2_K, gguf.LlamaFileType.MOSTLY_Q2_K),
    "q3_k": (GGMLType.Q3_K, gguf.LlamaFileType.MOSTLY_Q3_K_S),
    "q4_k": (GGMLType.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_S),
    "q5_k": (GGMLType.Q5_K, gguf.LlamaFileType.MOSTLY_Q5_K_S),
    "q6_k": (GGMLType.Q6_K, gguf.LlamaFileType.MOSTLY_Q6_K),
    "iq4_nl": (GGMLType.IQ4_NL, gguf.LlamaFileType.MOSTLY_IQ4_NL),
    "iq4_xs": (GGMLType.IQ4_XS, gguf.LlamaFileType.MOSTLY_IQ4_XS),
}
_FORCE_F32_NAMES = ("ssm_conv1d.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")


def tensor_type(
    name: str, shape: tuple[int, ...], file_type: GGMLType, overrides: Mapping[str, str] | None = None
) -> GGMLType:
    """The ggml type a tensor is written in (before the F16 fallback for rows that do not fit)."""
    if (
        len(shape) <= 1
        or name.endswith("_norm.weight")
        or not name.endswith(".weight")
        or name.endswith(_FORCE_F32_NAMES)
    ):
        return GGMLType.F32
    for pattern, type_name in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return parse_type(type_name)
    return file_type


def parse_type(type_name: str) -> GGMLType:
    key = type_name.lower()
    if key in FILE_TYPES:
        return FILE_TYPES[key][0]
    try:
        return GGMLType[type_name.upper()]
    except KeyError:
        raise ConversionError(f"unknown ggml type '{type_name}'") from None


def quantize(values: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """Pack float32 `values` (NumPy order) as `qtype`: float arrays for F32/F16, [..., row_bytes] u8 blocks
    otherwise (vkmtp.gguf's quantizers, which write llama.cpp's block layouts)."""
    if qtype == GGMLType.F32:
        return values.astype(np.float32)
    if qtype == GGMLType.F16:
        return values.astype(np.float16)
    if qtype not in QUANTIZE_TYPES:
        raise ConversionError(
            f"no quantizer for {qtype.name} (supported: "
            f"{', '.join(sorted(t.name for t in QUANTIZE_TYPES))})"
        )
    return gguf_quantize(values, qtype)


def _fits(shape: tuple[int, ...], qtype: GGMLType) -> bool:
    return shape[-1] % block_size(qtype)[0] == 0


def _add_metadata_value(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, (list, tuple)) and len(value) > 0:
        writer.add_array(key, list(value))
    else:
        raise ConversionError(f"metadata '{key}': cannot write value of type {type(value).__name__}")


def write_gguf(
    state_dict: Mapping[str, np.ndarray],
    hf_config: Mapping[str, Any],
    out_path: str | os.PathLike,
    file_type: str = "f32",
    tokenizer_meta: Mapping[str, Any] | None = None,
    mtp: bool = True,
    name: str | None = None,
    type_overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Convert an HF Qwen3.5 / Qwen3.6 state dict (NumPy arrays) and write it as a GGUF.

    Args:
        state_dict: HF tensor name -> array (PyTorch layout), including `mtp.*` tensors for the MTP head.
        hf_config: the parsed config.json.
        out_path: the .gguf file to write.
        file_type: f32, f16, bf16, q8_0 (llama.cpp's outtypes) or another ggml type with a quantizer.
        tokenizer_meta: `tokenizer.ggml.*` (and `tokenizer.chat_template`) keys to store verbatim: ints as
            uint32, lists of ints as int32 arrays, lists of str as string arrays.
        mtp: keep the MTP block (False = llama.cpp's --no-mtp).
        name: general.name.
        type_overrides: fnmatch pattern on the GGUF name -> ggml type, for tensors that are not forced F32.
    Returns:
        GGUF tensor name -> the ggml type name it was written in.
    """
    if file_type.lower() not in FILE_TYPES:
        raise ConversionError(f"unknown file type '{file_type}' (choose from {', '.join(FILE_TYPES)})")
    base_type, llama_ftype = FILE_TYPES[file_type.lower()]
    cfg = read_hf_config(hf_config, mtp=mtp, mtp_tensor_layers=count_mtp_layers(list(state_dict)))
    tensors = convert_tensors(state_dict, cfg)
    writer = gguf.GGUFWriter(os.fspath(out_path), cfg.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or f"vkmtp-{cfg.arch}")
    writer.add_file_type(int(llama_ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in model_metadata(cfg).items():
        _add_metadata_value(writer, key, value)
    for key, value in (tokenizer_meta or {}).items():
        _add_metadata_value(writer, key, value)
    written = {}
    for gguf_name, values in tensors.items():
        qtype = tensor_type(gguf_name, values.shape, base_type, type_overrides)
        if not _fits(values.shape, qtype):
            qtype = GGMLType.F16  # llama.cpp: QuantError -> F16
        data = quantize(values, qtype)
        if data.dtype == np.uint8:
            add_packed_tensor(writer, gguf_name, data, qtype, values.shape)
        else:
            writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        written[gguf_name] = qtype.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written
