"""The Vulkan device layer: device facts and choice, kernel defaults per device, SPIR-V compilation, buffers,
recorded sequences."""

from vkmtp.device.buffers import WORD, Arena, Buffer, View
from vkmtp.device.capabilities import DeviceCaps, MatVecTuning
from vkmtp.device.compiler import ShaderCompileError, ShaderCompiler, ShaderKey
from vkmtp.device.context import Device, Recorder, as_push
from vkmtp.device.info import DeviceInfo, NoDeviceError, format_devices, list_devices, pick_device

__all__ = [
    "WORD", "Arena", "Buffer", "View", "DeviceCaps", "MatVecTuning", "ShaderCompileError", "ShaderCompiler",
    "ShaderKey", "Device", "Recorder", "as_push", "DeviceInfo", "NoDeviceError", "format_devices", "list_devices", "pick_device",
]
