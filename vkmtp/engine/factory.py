"""Build an engine from a GGUF path: the Vulkan engine, or the NumPy reference (`--backend reference`)."""

from __future__ import annotations

from vkmtp.engine.api import Engine, EngineConfig


def load_engine(model_path: str, config: EngineConfig, backend: str = "vulkan", progress: bool = False,
                device=None) -> Engine:
    """device: a vkmtp.device.Device the Vulkan engine runs on and leaves open when closed (None: its own)."""
    if backend == "vulkan" and config.split_devices:
        from vkmtp.engine.split import SplitEngine

        if device is not None:
            raise ValueError("a layer split opens its own devices (-dev/--device lists them)")
        return SplitEngine(model_path, config, progress=progress)
    if backend == "vulkan":
        from vkmtp.engine.vulkan import VulkanEngine

        return VulkanEngine(model_path, config, progress=progress, device=device)
    if backend == "reference":
        from vkmtp.engine.reference import ReferenceEngine

        return ReferenceEngine(model_path, config)
    raise ValueError(f"unknown backend {backend!r} (vulkan | reference)")


class EngineFactory:
    """Builds the server's engine, and builds it again after each sleep.

    Every Vulkan engine it builds runs on one Device, opened at the first build and destroyed by close(): a
    sleeping server frees every buffer (the engine's close), while the device and its compiled pipelines stay,
    so a wake binds new buffers to pipelines compiled once instead of compiling them again. Recompiling at
    every wake grew a lavapipe server's RSS by ~0.1 MiB per sleep/wake cycle (LLVM's churn fragments the C
    heap; docs/PERFORMANCE.md, sleep/wake) and is most of a wake's time there. A layer split (-dev A,B) opens
    its devices with each engine (vkmtp.engine.split)."""

    def __init__(self, model_path: str, config: EngineConfig, backend: str = "vulkan"):
        self.model_path, self.config, self.backend = model_path, config, backend
        self.device = None

    def __call__(self) -> Engine:
        if self.backend == "vulkan" and self.device is None and not self.config.split_devices:
            from vkmtp.device import Device

            self.device = Device(self.config.device)
        return load_engine(self.model_path, self.config, self.backend, device=self.device)

    def close(self) -> None:
        """Destroy the kept device (after the last engine built on it was closed)."""
        if self.device is not None:
            self.device.destroy()
            self.device = None
