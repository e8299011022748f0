"""Build an engine from a GGUF path: the Vulkan engine, or the NumPy reference (`--backend reference`)."""

from __future__ import annotations

from vkmtp.engine.api import Engine, EngineConfig


def load_engine(model_path: str, config: EngineConfig, backend: str = "vulkan", progress: bool = False) -> Engine:
    if backend == "vulkan":
        from vkmtp.engine.vulkan import VulkanEngine

        return VulkanEngine(model_path, config, progress=progress)
    if backend == "reference":
        from vkmtp.engine.reference import ReferenceEngine

        return ReferenceEngine(model_path, config)
    raise ValueError(f"unknown backend {backend!r} (vulkan | reference)")
