"""NumPy reference of Qwen3.5 / 3.6 (trunk, MTP head, generation): the oracle for the Vulkan engine.

Imports only NumPy and vkmtp.gguf / vkmtp.model, so it runs on any machine.
"""

from vkmtp.ref.model import ReferenceModel, WeightStore
from vkmtp.ref.state import DeltaNetState, KVCache, ModelState, MtpState, StateSnapshot

__all__ = ["ReferenceModel", "WeightStore", "ModelState", "MtpState", "KVCache", "DeltaNetState", "StateSnapshot"]
