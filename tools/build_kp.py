#!/usr/bin/env python3
"""Build Kompute (`kp` 0.9.0) from its PyPI sdist with vkmtp's binding additions, as a cached wheel.

Why not `pip install kp`: there is no wheel on PyPI, the sdist's setup.py fetches fmt, pybind11 and the Vulkan
headers with git at build time (no network here beyond package registries), pins numpy < 2, and the binding
records no barrier between dependent dispatches. This script:

1. downloads the sdist with pip (or reuses it from the cache),
2. builds against the system Vulkan headers and libfmt and pip's pybind11 >= 2.12 (Debian's 2.10 breaks numpy 2),
3. compiles `tools/kp/vkmtp_ext.hpp` into the binding (OpComputeBarrier, OpCopyRegion, device_infos,
   set_device_features, set_memory_type), lets storage-only tensors be copy sources/targets (chunked weight
   upload), adds one hook call to Manager::createDevice through which the extension enables optional device
   features, and lets a tensor's memory come from a memory type vkmtp chose (Tensor::allocateBindMemory),
4. stores the wheel as `<cache>/kp-0.9.0+vkmtp<EXT>-*.whl`, so a second set-up run only installs it.

Usage: python tools/build_kp.py [--cache DIR]   (prints the wheel path on the last line)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

KP_VERSION = "0.9.0"
HERE = Path(__file__).resolve().parent
EXT_HEADER = HERE / "kp" / "vkmtp_ext.hpp"


def ext_tag() -> str:
    """A short hash of our additions, so a changed extension builds a new wheel."""
    digest = hashlib.sha256(EXT_HEADER.read_bytes() + Path(__file__).read_bytes()).hexdigest()
    return digest[:10]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vkmtp" / "wheels"


def replace_once(text: str, old: str, new: str, what: str) -> str:
    if text.count(old) != 1:
        raise SystemExit(f"build_kp: cannot patch {what}: expected one '{old[:40]}...'")
    return text.replace(old, new)


def patch_sources(root: Path, local_version: str) -> None:
    main_cpp = root / "python" / "src" / "main.cpp"
    shutil.copy(EXT_HEADER, main_cpp.parent / "vkmtp_ext.hpp")
    src = main_cpp.read_text()
    src = replace_once(src, '#include "utils.hpp"\n', '#include "utils.hpp"\n#include "vkmtp_ext.hpp"\n', "main.cpp")
    src = replace_once(
        src,
        '    auto atexit = py::module_::import("atexit");',
        '    vkmtp_ext::registerExtensions(m);\n\n    auto atexit = py::module_::import("atexit");',
        "main.cpp",
    )
    main_cpp.write_text(src)

    # Device features: a hook (set by vkmtp_ext.hpp) may chain VkPhysicalDeviceFeatures2 and add extensions.
    manager_cpp = root / "src" / "Manager.cpp"
    src = manager_cpp.read_text()
    src = replace_once(
        src, "namespace kp {\n",
        "namespace kp {\n\nvoid (*vkmtpDeviceCreateHook)(const vk::PhysicalDevice&, vk::DeviceCreateInfo&,\n"
        "                              std::vector<const char*>&) = nullptr;\n",
        "Manager.cpp hook")
    src = replace_once(
        src, "    this->mDevice = std::make_shared<vk::Device>();\n",
        "    if (vkmtpDeviceCreateHook) {\n"
        "        vkmtpDeviceCreateHook(physicalDevice, deviceCreateInfo, validExtensions);\n"
        "        deviceCreateInfo.enabledExtensionCount = (uint32_t)validExtensions.size();\n"
        "        deviceCreateInfo.ppEnabledExtensionNames = validExtensions.data();\n"
        "    }\n"
        "    this->mDevice = std::make_shared<vk::Device>();\n",
        "Manager.cpp createDevice")
    manager_cpp.write_text(src)

    # Compiled pipelines apart from their buffers (vkmtp_ext.hpp's Pipeline/Binding) need the manager's VkDevice.
    manager_hpp = root / "src" / "include" / "kompute" / "Manager.hpp"
    src = replace_once(
        manager_hpp.read_text(), "    std::shared_ptr<vk::Instance> getVkInstance() const;\n",
        "    std::shared_ptr<vk::Instance> getVkInstance() const;\n\n"
        "    std::shared_ptr<vk::Device> vkmtpDevice() const { return this->mDevice; }\n",
        "Manager.hpp device accessor")
    manager_hpp.write_text(src)

    tensor_cpp = root / "src" / "Tensor.cpp"
    src = tensor_cpp.read_text()
    src = replace_once(
        src,
        "        case TensorTypes::eStorage:\n            return vk::BufferUsageFlagBits::eStorageBuffer;\n",
        "        case TensorTypes::eStorage:\n            return vk::BufferUsageFlagBits::eStorageBuffer |\n"
        "                   vk::BufferUsageFlagBits::eTransferSrc |\n"
        "                   vk::BufferUsageFlagBits::eTransferDst;\n",
        "Tensor.cpp",
    )
    # Memory types: vkmtp chooses the memory type of each buffer role (vkmtp/device/memory_types.py); the
    # extension's set_memory_type() sets a per-thread request that the next tensor's primary buffer is
    # allocated from, instead of Kompute's first type with the tensor type's property flags.
    src = replace_once(
        src, "namespace kp {\n",
        "namespace kp {\n\nthread_local int vkmtpMemoryTypeRequest = -1;\n", "Tensor.cpp memory type request")
    src = replace_once(
        src, "    uint32_t memoryTypeIndex = -1;\n",
        "    if (vkmtpMemoryTypeRequest >= 0 && buffer == this->mPrimaryBuffer) {\n"
        "        const uint32_t want = (uint32_t)vkmtpMemoryTypeRequest;\n"
        "        if (want >= memoryProperties.memoryTypeCount ||\n"
        "            !(memoryRequirements.memoryTypeBits & (1u << want))) {\n"
        "            throw std::runtime_error(\"memory type \" + std::to_string(want) +\n"
        "              \" cannot back this buffer (its memoryTypeBits are \" +\n"
        "              std::to_string(memoryRequirements.memoryTypeBits) + \")\");\n"
        "        }\n"
        "        const vk::MemoryPropertyFlags mapped = vk::MemoryPropertyFlagBits::eHostVisible |\n"
        "                                               vk::MemoryPropertyFlagBits::eHostCoherent;\n"
        "        if (this->mTensorType == TensorTypes::eHost &&\n"
        "            (memoryProperties.memoryTypes[want].propertyFlags & mapped) != mapped) {\n"
        "            throw std::runtime_error(\"memory type \" + std::to_string(want) +\n"
        "              \" is not host-visible and coherent; a host tensor is mapped\");\n"
        "        }\n"
        "        vk::MemoryAllocateInfo info(memoryRequirements.size, want);\n"
        "        this->mDevice->allocateMemory(&info, nullptr, memory.get());\n"
        "        this->mDevice->bindBufferMemory(*buffer, *memory, 0);\n"
        "        return;\n"
        "    }\n"
        "    uint32_t memoryTypeIndex = -1;\n",
        "Tensor.cpp allocateBindMemory")
    tensor_cpp.write_text(src)

    setup_py = root / "setup.py"
    src = setup_py.read_text()
    import pybind11  # noqa: PLC0415  (build-time dependency, installed by tools/setup.sh)

    cmake_args = [
        "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=' + extdir",
        "'-DKOMPUTE_OPT_BUILD_PYTHON=ON'",
        "'-DKOMPUTE_OPT_INSTALL=OFF'",
        "'-DKOMPUTE_OPT_LOG_LEVEL=Off'",
        "'-DKOMPUTE_OPT_USE_SPDLOG=OFF'",
        "'-DKOMPUTE_OPT_DISABLE_VULKAN_VERSION_CHECK=ON'",
        "'-DKOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF'",
        "'-DKOMPUTE_OPT_USE_BUILT_IN_FMT=OFF'",
        "'-DKOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF'",
        "'-DCMAKE_POSITION_INDEPENDENT_CODE=ON'",
        f"'-Dpybind11_DIR={pybind11.get_cmake_dir()}'",
        "'-DPYTHON_EXECUTABLE=' + sys.executable",
    ]
    start = src.index("        cmake_args = [")
    end = src.index("        ]\n", start) + len("        ]\n")
    new_block = "        cmake_args = ['" + ",\n                      ".join(cmake_args) + "]\n"
    src = src[:start] + new_block + src[end:]
    src = replace_once(src, "version='0.9.0'", f"version='{local_version}'", "setup.py version")
    src = replace_once(src, '"numpy<2.0.0"', '"numpy"', "setup.py numpy pin")
    src = src.replace("build_args += ['--', '-j']", f"build_args += ['--', '-j{os.cpu_count() or 2}']")
    setup_py.write_text(src)


def fetch_sdist(cache: Path) -> Path:
    sdist = cache / f"kp-{KP_VERSION}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"kp=={KP_VERSION}", "-d", str(cache)],
            check=True,
        )
    return sdist


def build(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    local_version = f"{KP_VERSION}+vkmtp{ext_tag()}"
    existing = sorted(cache.glob(f"kp-{local_version}-*.whl"))
    if existing:
        return existing[-1]
    sdist = fetch_sdist(cache)
    with tempfile.TemporaryDirectory(prefix="vkmtp-kp-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp)
        root = Path(tmp) / f"kp-{KP_VERSION}"
        patch_sources(root, local_version)
        log = Path(tmp) / "build.log"
        with open(log, "w") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(cache),
                 str(root)],
                stdout=fh, stderr=subprocess.STDOUT,
            )
        if proc.returncode != 0:
            sys.stderr.write(log.read_text()[-6000:])
            raise SystemExit("build_kp: building kp failed (log above)")
    built = sorted(cache.glob(f"kp-{local_version}-*.whl"))
    if not built:
        raise SystemExit("build_kp: pip wheel reported success but left no wheel")
    return built[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    ap.add_argument("--print-version", action="store_true", help="print the patched kp version and exit")
    args = ap.parse_args()
    if args.print_version:
        print(f"{KP_VERSION}+vkmtp{ext_tag()}")
        return
    print(build(args.cache))


if __name__ == "__main__":
    main()
