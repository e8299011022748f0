"""Model description shared by the NumPy reference and the GPU engine: config and the tensor table."""

from vkmtp.model.config import LayerKind, ModelConfig
from vkmtp.model.weights import ModelTensors, TensorSpec, expected_tensors, validate

__all__ = ["LayerKind", "ModelConfig", "ModelTensors", "TensorSpec", "expected_tensors", "validate"]
