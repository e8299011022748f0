"""vkmtp: Qwen3.5/3.6 GGUF inference on Vulkan with native MTP speculative decoding."""

__version__ = "0.1.0"
