"""The Vulkan device through Kompute: buffers, pipelines and recorded sequences.

Kompute 0.9.0 records no barrier between dependent dispatches. `Recorder` tracks which byte ranges each
dispatch reads and writes and records one global memory barrier (kp.OpComputeBarrier, vkmtp's patch) only
before a dispatch that touches a range written (or writes a range read) since the last barrier -- the
dependency rule llama.cpp's Vulkan backend uses. A recorded sequence is replayed as one queue submission.

Device features: vkmtp's kp extension enables, at device creation, the optional features the device supports
(vkmtp.device.info.FEATURE_NAMES) unless VKMTP_FEATURES restricts them ('none': no optional feature, the device
is created exactly as Kompute creates it). `Device.info.enabled_features` says what was enabled and
`Device.caps` what the kernels use; every shader keeps its 32-bit-word-only variant. See docs/DESIGN.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence as Seq

import numpy as np

from vkmtp import env
from vkmtp.device.buffers import WORD, Buffer, View
from vkmtp.device.capabilities import DeviceCaps
from vkmtp.device.compiler import ShaderCompiler, ShaderKey
from vkmtp.device.info import FEATURE_NAMES, DeviceInfo, list_devices, pick_device
from vkmtp.device.memory_types import HOST_ROLES, ROLES

STAGING_BYTES = 64 << 20


def staging_bytes(max_storage_buffer_range: int) -> int:
    """The reused upload / download buffer of a device whose device-local memory is not mapped."""
    return min(STAGING_BYTES, max_storage_buffer_range)


class Device:
    """One opened Vulkan device. Owns the kp.Manager, the shader compiler, pipelines and memory accounting.

    `info` is what the driver reports; `caps` the kernel defaults op wrappers use here (vkmtp.device.capabilities).
    """

    def __init__(self, index: int | str | None = None, compiler: ShaderCompiler | None = None,
                 info: DeviceInfo | None = None, features: Seq[str] | None = None):
        """features: the optional features to enable where supported (None: VKMTP_FEATURES, default all)."""
        import kp

        self._kp = kp
        info = info or pick_device(list_devices(), index)
        requested = env.device_features() if features is None else list(features)
        unknown = sorted(set(requested or ()) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown device feature(s) {unknown} (VKMTP_FEATURES); known: "
                             f"{', '.join(FEATURE_NAMES)}, or 'all' / 'none'")
        kp.set_device_features(requested)
        try:
            self.manager = kp.Manager(info.index)
        finally:
            kp.set_device_features(None)
        enabled = kp.device_infos(self.manager)[info.index]["enabled_features"]
        self.info = replace(info, enabled_features=frozenset(k for k, v in enabled.items() if v))
        self.caps = DeviceCaps.for_device(self.info)
        self.memory = self.info.memory   # the memory type of each buffer role (vkmtp.device.memory_types)
        self.compiler = compiler or ShaderCompiler()
        self.allocated = {"device": 0, "host": 0}
        self.n_buffers = 0
        self.submits = 0
        self._pipelines: dict[tuple, object] = {}   # compiled: (shader, spec, bindings, push) -> kp.Pipeline
        self._bindings: dict[tuple, object] = {}    # (shader, spec, buffers, push) -> kp.Binding
        self._staging: Buffer | None = None
        self._live: dict[int, Buffer] = {}   # buffers allocated and not yet destroyed
        self.peak_allocated = 0

    # --- memory ---------------------------------------------------------------------------------------------
    def buffer(self, nbytes: int, kind: str = "device", name: str = "", role: str | None = None) -> Buffer:
        """Allocate `nbytes` (rounded up to words) in the memory type chosen for `role`
        (vkmtp.device.memory_types.ROLES). Without a role, kind 'device' is scratch and 'host' is outputs.
        Mapped roles (UMA, host-side roles) are host tensors; the others are device-local storage tensors that
        upload() / download() fill and read through the staging buffer."""
        if kind not in ("device", "host"):
            raise ValueError(f"unknown buffer kind {kind!r}")
        role = role or ("scratch" if kind == "device" else "outputs")
        if role not in ROLES:
            raise ValueError(f"unknown buffer role {role!r}; roles: {', '.join(ROLES)}")
        nbytes = max(-(-int(nbytes) // WORD) * WORD, WORD)
        if nbytes > self.info.max_storage_buffer_range:
            raise MemoryError(f"buffer '{name}' of {nbytes} B exceeds this device's maxStorageBufferRange "
                              f"({self.info.max_storage_buffer_range} B); split it")
        place = self.memory[role]
        mapped = place.mapped
        kp = self._kp
        words = np.zeros(nbytes // WORD, dtype=np.uint32) if mapped else np.empty(nbytes // WORD, np.uint32)
        ttype = kp.TensorTypes.host if mapped else kp.TensorTypes.storage
        kp.set_memory_type(place.type_index)
        try:
            tensor = self.manager.tensor_t(words, ttype)
        except Exception as exc:  # driver out-of-memory and friends
            raise MemoryError(f"allocating {nbytes} B for '{name}' ({role}, memory type {place.type_index}) "
                              f"failed: {exc}") from None
        finally:
            kp.set_memory_type(None)
        buf = Buffer(self, tensor, nbytes, "host" if mapped else "device", name)
        buf.role = role
        buf.memory_type = place.type_index
        accounted = "host" if role in HOST_ROLES else "device"
        self.allocated[accounted] += nbytes
        buf._accounted = accounted
        self.n_buffers += 1
        self._live[id(buf)] = buf
        self.peak_allocated = max(self.peak_allocated, self.allocated_bytes)
        return buf

    def _release(self, buf: Buffer) -> None:
        self.allocated[getattr(buf, "_accounted", buf.kind)] -= buf.nbytes
        self.n_buffers -= 1
        self._live.pop(id(buf), None)
        for k in [k for k in self._bindings if buf in k[2]]:
            self._bindings.pop(k).destroy()

    @property
    def allocated_bytes(self) -> int:
        return sum(self.allocated.values())

    def live_buffers(self) -> list[Buffer]:
        """Every buffer allocated on this device and not destroyed, in allocation order."""
        return list(self._live.values())

    def upload(self, view: View, data) -> None:
        """Copy host bytes into a view: directly into mapped memory, else through a reused staging buffer."""
        raw = np.frombuffer(memoryview(np.ascontiguousarray(data)).cast("B"), dtype=np.uint8)
        if raw.nbytes > view.nbytes:
            raise ValueError(f"upload of {raw.nbytes} B into a view of {view.nbytes} B")
        if view.buffer.mapped:
            dst = view.buffer.words().view(np.uint8)
            dst[view.offset: view.offset + raw.nbytes] = raw
            return
        staging = self._staging_buffer()
        for start in range(0, raw.nbytes, staging.nbytes):
            chunk = raw[start: start + staging.nbytes]
            padded = -(-chunk.nbytes // WORD) * WORD
            staging.words().view(np.uint8)[: chunk.nbytes] = chunk
            seq = self.manager.sequence()
            seq.record(self._kp.OpCopyRegion(staging.tensor, view.buffer.tensor, 0, view.offset + start, padded))
            seq.record(self._kp.OpComputeBarrier())
            seq.eval()
            self.submits += 1

    def download(self, view: View) -> bytes:
        if view.buffer.mapped:
            return view.buffer.words().view(np.uint8)[view.offset: view.offset + view.nbytes].tobytes()
        staging = self._staging_buffer()
        out = bytearray()
        for start in range(0, view.nbytes, staging.nbytes):
            n = min(staging.nbytes, view.nbytes - start)
            padded = -(-n // WORD) * WORD
            seq = self.manager.sequence()
            seq.record(self._kp.OpComputeBarrier())
            seq.record(self._kp.OpCopyRegion(view.buffer.tensor, staging.tensor, view.offset + start, 0, padded))
            seq.record(self._kp.OpComputeBarrier())
            seq.eval()
            self.submits += 1
            out += staging.words().view(np.uint8)[:n].tobytes()
        return bytes(out)

    def read(self, view: View, dtype=np.float32) -> np.ndarray:
        return np.frombuffer(self.download(view), dtype=dtype).copy()

    def _staging_buffer(self) -> Buffer:
        if self._staging is None:
            self._staging = self.buffer(staging_bytes(self.info.max_storage_buffer_range), "host", "staging",
                                        role="staging")
        return self._staging

    # --- pipelines --------------------------------------------------------------------------------------------
    def pipeline(self, key: ShaderKey, buffers: Seq[Buffer], spec: Seq[int] = (), n_push: int = 0):
        """A kp.Binding of this shader variant to `buffers` (binding i = buffers[i]); cached.

        The compiled pipeline behind it is cached apart from the buffers and lives as long as the device: when
        the buffers are destroyed (an engine closed, e.g. a server falling asleep) only the binding goes, and
        an engine built again on this device binds its new buffers to the same compiled pipelines. Recompiling
        at every wake costs time and, on lavapipe, leaves ~0.1 MiB more of the C heap resident per wake
        (LLVM's allocations fragment it; see docs/PERFORMANCE.md, sleep/wake)."""
        spec = tuple(int(s) for s in spec)
        ck = (key, spec, tuple(buffers), int(n_push))
        binding = self._bindings.get(ck)
        if binding is None:
            pk = (key, spec, len(buffers), int(n_push))
            compiled = self._pipelines.get(pk)
            if compiled is None:
                spirv = np.frombuffer(self.compiler.spirv(key), dtype=np.uint32).tolist()
                compiled = self._kp.Pipeline(self.manager, spirv, len(buffers), list(spec), int(n_push))
                self._pipelines[pk] = compiled
            binding = self._kp.Binding(compiled, [b.tensor for b in buffers])
            self._bindings[ck] = binding
        return binding

    @property
    def n_pipelines(self) -> int:
        """Compiled pipelines held (they outlive the buffers they were bound to)."""
        return len(self._pipelines)

    @property
    def n_bindings(self) -> int:
        """Pipeline-to-buffer bindings held (each goes with the first of its buffers destroyed)."""
        return len(self._bindings)

    def recorder(self, timestamps: int = 0) -> "Recorder":
        return Recorder(self, timestamps)

    def release_pipelines(self) -> None:
        """Destroy every binding and compiled pipeline (before the kp.Manager, which does not track them)."""
        for binding in self._bindings.values():
            binding.destroy()
        self._bindings.clear()
        for compiled in self._pipelines.values():
            compiled.destroy()
        self._pipelines.clear()

    @property
    def has_staging(self) -> bool:
        return self._staging is not None

    def release_staging(self) -> None:
        """Free the reused staging buffer when it is the only buffer left (it is made again when next needed):
        a device kept while its engine sleeps holds no buffer."""
        if self._staging is not None and len(self._live) == 1:
            self._staging.destroy()
            self._staging = None

    def destroy(self) -> None:
        self.release_pipelines()
        if self._staging is not None:
            self._staging.destroy()
            self._staging = None
        if self.manager is not None:
            self.manager.destroy()
            self.manager = None


def as_push(values: Seq[int | float]) -> list[int]:
    """Push constants as uint32 words; floats are bit-cast (the shader reads them with uintBitsToFloat)."""
    out = []
    for v in values:
        if isinstance(v, (float, np.floating)):
            out.append(int(np.float32(v).view(np.uint32)))
        else:
            iv = int(v)
            if not -(1 << 31) <= iv < (1 << 32):
                raise ValueError(f"push constant {iv} does not fit 32 bits")
            out.append(iv & 0xFFFFFFFF)
    return out


class Recorder:
    """Records dispatches and copies into one kp.Sequence; `run()` submits it (again and again: replay)."""

    def __init__(self, device: Device, timestamps: int = 0):
        self.device = device
        self._kp = device._kp
        self.seq = device.manager.sequence(total_timestamps=timestamps) if timestamps \
            else device.manager.sequence()
        self._pending_writes: list[View] = []
        self._pending_reads: list[View] = []
        self.n_dispatches = 0
        self.n_barriers = 0
        self.n_host_barriers = 0   # of which also wait for the host stage (the last one of a recording)
        self.labels: list[str] = []
        self._keep: list = []   # ops must outlive the recording

    def _order(self, reads: Seq[View], writes: Seq[View]) -> None:
        hazard = any(r.overlaps(w) for r in (*reads, *writes) for w in self._pending_writes) or \
            any(w.overlaps(r) for w in writes for r in self._pending_reads)
        if hazard:
            self.barrier()
        self._pending_writes.extend(writes)
        self._pending_reads.extend(reads)

    def barrier(self, host: bool = False) -> None:
        """A memory barrier between dependent dispatches: compute/transfer stages only (kp.OpShaderBarrier);
        host=True also makes the writes visible to the host (kp.OpComputeBarrier), which only the barrier ending
        a recording needs. A kp built without OpShaderBarrier records OpComputeBarrier for both."""
        shader_barrier = getattr(self._kp, "OpShaderBarrier", None)
        op = self._kp.OpComputeBarrier() if host or shader_barrier is None else shader_barrier()
        self.seq.record(op)
        self._keep.append(op)
        self._pending_writes.clear()
        self._pending_reads.clear()
        self.n_barriers += 1
        self.n_host_barriers += int(host or shader_barrier is None)
        self.labels.append("barrier")

    def dispatch(self, key: ShaderKey, buffers: Seq[Buffer], groups: tuple[int, int, int],
                 push: Seq[int | float] = (), spec: Seq[int] = (), reads: Seq[View] = (),
                 writes: Seq[View] = (), label: str = "") -> None:
        push_words = as_push(push)
        limit = self.device.info.max_workgroup_count
        if any(g < 1 or g > lim for g, lim in zip(groups, limit)):
            raise ValueError(f"{key.name}: group count {groups} outside 1..{limit}")
        algo = self.device.pipeline(key, buffers, spec, len(push_words))
        self._order(reads, writes)
        op = self._kp.OpDispatchBinding(algo, push_words, int(groups[0]), int(groups[1]), int(groups[2]))
        self.seq.record(op)
        self._keep.append(op)
        self.n_dispatches += 1
        self.labels.append(label or key.name)

    def copy(self, src: View, dst: View, nbytes: int | None = None) -> None:
        n = src.nbytes if nbytes is None else nbytes
        if n > dst.nbytes or n > src.nbytes:
            raise ValueError("copy larger than its source or destination view")
        self._order([src.sub(0, n)], [dst.sub(0, n)])
        op = self._kp.OpCopyRegion(src.buffer.tensor, dst.buffer.tensor, src.offset, dst.offset, n)
        self.seq.record(op)
        self._keep.append(op)
        self.labels.append("copy")

    def finish(self) -> "Recorder":
        """End with a barrier so the host (after the fence) sees every write."""
        self.barrier(host=True)
        return self

    def run(self) -> None:
        self.seq.eval()
        self.device.submits += 1

    def timestamps_ns(self) -> np.ndarray:
        ts = np.asarray(self.seq.get_timestamps(), dtype=np.float64)
        return ts * self.device.info.timestamp_period_ns

    def destroy(self) -> None:
        self.seq.destroy()
        self._keep.clear()
