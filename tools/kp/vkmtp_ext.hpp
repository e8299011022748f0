// vkmtp additions to Kompute 0.9.0's Python binding (compiled into kp's main.cpp by tools/build_kp.py).
//
// Why: kp 0.9.0 records no barrier between two dispatches of one sequence, so a dispatch that reads what the
// previous one wrote can see stale data on a real GPU. OpComputeBarrier records one global memory barrier
// (shader/transfer writes -> shader/transfer/host reads and writes), the way llama.cpp orders its graph nodes.
// OpDispatch dispatches a pipeline with per-dispatch push constants and group counts.
// OpCopyRegion copies a byte range between two tensors (chunked weight upload, KV snapshots, state rollback).
// device_infos() reports what kp's own get_device_properties() leaves out: device type, driver, subgroup
// size and operations, memory heaps and budget, limits and optional features.
#pragma once

#include <kompute/Kompute.hpp>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <vulkan/vulkan.hpp>

#include <cstring>
#include <string>
#include <vector>

namespace vkmtp_ext {

namespace py = pybind11;
using namespace pybind11::literals;

class OpComputeBarrier : public kp::OpBase
{
  public:
    void record(const vk::CommandBuffer& commandBuffer) override
    {
        vk::MemoryBarrier barrier(
          vk::AccessFlagBits::eShaderWrite | vk::AccessFlagBits::eTransferWrite,
          vk::AccessFlagBits::eShaderRead | vk::AccessFlagBits::eShaderWrite |
            vk::AccessFlagBits::eTransferRead | vk::AccessFlagBits::eTransferWrite |
            vk::AccessFlagBits::eHostRead);
        commandBuffer.pipelineBarrier(
          vk::PipelineStageFlagBits::eComputeShader | vk::PipelineStageFlagBits::eTransfer,
          vk::PipelineStageFlagBits::eComputeShader | vk::PipelineStageFlagBits::eTransfer |
            vk::PipelineStageFlagBits::eHost,
          vk::DependencyFlags(),
          barrier,
          nullptr,
          nullptr);
    }
    void preEval(const vk::CommandBuffer&) override {}
    void postEval(const vk::CommandBuffer&) override {}
};

class OpCopyRegion : public kp::OpBase
{
  public:
    OpCopyRegion(std::shared_ptr<kp::Tensor> src,
                 std::shared_ptr<kp::Tensor> dst,
                 uint64_t srcOffset,
                 uint64_t dstOffset,
                 uint64_t nBytes)
      : mSrc(src), mDst(dst), mSrcOffset(srcOffset), mDstOffset(dstOffset), mBytes(nBytes)
    {
        if (srcOffset + nBytes > src->memorySize() || dstOffset + nBytes > dst->memorySize()) {
            throw std::runtime_error("OpCopyRegion: byte range outside a tensor");
        }
    }
    void record(const vk::CommandBuffer& commandBuffer) override
    {
        if (mBytes == 0) {
            return;
        }
        vk::BufferCopy region(mSrcOffset, mDstOffset, mBytes);
        commandBuffer.copyBuffer(mSrc->constructDescriptorBufferInfo().buffer,
                                 mDst->constructDescriptorBufferInfo().buffer,
                                 1,
                                 &region);
    }
    void preEval(const vk::CommandBuffer&) override {}
    void postEval(const vk::CommandBuffer&) override {}

  private:
    std::shared_ptr<kp::Tensor> mSrc, mDst;
    uint64_t mSrcOffset, mDstOffset, mBytes;
};

// One dispatch of an existing Algorithm with its own push constants and group counts. kp's OpAlgoDispatch
// takes the group count from the Algorithm (fixed at creation) and adds transfer->shader barriers for every
// bound buffer; vkmtp reuses one pipeline for many dispatches (different offsets and sizes into shared
// buffers) and records its own barriers, so it needs neither.
class OpDispatch : public kp::OpBase
{
  public:
    OpDispatch(std::shared_ptr<kp::Algorithm> algorithm,
               std::vector<uint32_t> pushConsts,
               uint32_t x,
               uint32_t y,
               uint32_t z)
      : mAlgorithm(algorithm), mPush(std::move(pushConsts)), mX(x), mY(y), mZ(z)
    {
    }
    void record(const vk::CommandBuffer& commandBuffer) override
    {
        if (!mPush.empty()) {
            mAlgorithm->setPushConstants(mPush.data(), (uint32_t)mPush.size(), sizeof(uint32_t));
        }
        mAlgorithm->recordBindCore(commandBuffer);
        if (!mPush.empty()) {
            mAlgorithm->recordBindPush(commandBuffer);
        }
        commandBuffer.dispatch(mX, mY, mZ);
    }
    void preEval(const vk::CommandBuffer&) override {}
    void postEval(const vk::CommandBuffer&) override {}

  private:
    std::shared_ptr<kp::Algorithm> mAlgorithm;
    std::vector<uint32_t> mPush;
    uint32_t mX, mY, mZ;
};

static bool
hasExtension(const std::vector<vk::ExtensionProperties>& exts, const char* name)
{
    for (const auto& e : exts) {
        if (std::strcmp(e.extensionName, name) == 0) {
            return true;
        }
    }
    return false;
}

static py::dict
deviceInfo(const vk::PhysicalDevice& dev)
{
    const auto exts = dev.enumerateDeviceExtensionProperties();
    const bool haveDriverProps = hasExtension(exts, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
    const bool haveBudget = hasExtension(exts, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);

    vk::PhysicalDeviceProperties2 props2;
    vk::PhysicalDeviceSubgroupProperties subgroup;
    vk::PhysicalDeviceDriverPropertiesKHR driver;
    props2.pNext = &subgroup;
    if (haveDriverProps) {
        subgroup.pNext = &driver;
    }
    dev.getProperties2(&props2);
    const vk::PhysicalDeviceProperties& p = props2.properties;

    vk::PhysicalDeviceMemoryProperties2 mem2;
    vk::PhysicalDeviceMemoryBudgetPropertiesEXT budget;
    if (haveBudget) {
        mem2.pNext = &budget;
    }
    dev.getMemoryProperties2(&mem2);
    const vk::PhysicalDeviceMemoryProperties& m = mem2.memoryProperties;

    py::list heaps;
    for (uint32_t i = 0; i < m.memoryHeapCount; i++) {
        heaps.append(py::dict("size"_a = (uint64_t)m.memoryHeaps[i].size,
                              "device_local"_a = (bool)(m.memoryHeaps[i].flags &
                                                        vk::MemoryHeapFlagBits::eDeviceLocal),
                              "budget"_a = haveBudget ? (uint64_t)budget.heapBudget[i] : 0,
                              "usage"_a = haveBudget ? (uint64_t)budget.heapUsage[i] : 0));
    }
    py::list types;
    for (uint32_t i = 0; i < m.memoryTypeCount; i++) {
        const auto f = m.memoryTypes[i].propertyFlags;
        types.append(py::dict(
          "heap"_a = m.memoryTypes[i].heapIndex,
          "device_local"_a = (bool)(f & vk::MemoryPropertyFlagBits::eDeviceLocal),
          "host_visible"_a = (bool)(f & vk::MemoryPropertyFlagBits::eHostVisible),
          "host_coherent"_a = (bool)(f & vk::MemoryPropertyFlagBits::eHostCoherent),
          "host_cached"_a = (bool)(f & vk::MemoryPropertyFlagBits::eHostCached)));
    }

    vk::PhysicalDeviceFeatures2 feats2;
    vk::PhysicalDevice16BitStorageFeatures storage16;
    feats2.pNext = &storage16;
    dev.getFeatures2(&feats2);

    py::list extNames;
    for (const auto& e : exts) {
        extNames.append(std::string(e.extensionName.data()));
    }

    const auto ops = subgroup.supportedOperations;
    py::dict subgroupOps(
      "basic"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eBasic),
      "vote"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eVote),
      "arithmetic"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eArithmetic),
      "ballot"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eBallot),
      "shuffle"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eShuffle),
      "shuffle_relative"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eShuffleRelative),
      "clustered"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eClustered),
      "quad"_a = (bool)(ops & vk::SubgroupFeatureFlagBits::eQuad));

    const auto& L = p.limits;
    return py::dict(
      "name"_a = std::string(p.deviceName.data()),
      "vendor_id"_a = p.vendorID,
      "device_id"_a = p.deviceID,
      "device_type"_a = vk::to_string(p.deviceType),
      "api_version"_a = p.apiVersion,
      "driver_version"_a = p.driverVersion,
      "driver_name"_a = haveDriverProps ? std::string(driver.driverName.data()) : std::string(),
      "driver_info"_a = haveDriverProps ? std::string(driver.driverInfo.data()) : std::string(),
      "subgroup_size"_a = subgroup.subgroupSize,
      "subgroup_compute"_a = (bool)(subgroup.supportedStages & vk::ShaderStageFlagBits::eCompute),
      "subgroup_ops"_a = subgroupOps,
      "max_shared_memory"_a = L.maxComputeSharedMemorySize,
      "max_workgroup_invocations"_a = L.maxComputeWorkGroupInvocations,
      "max_workgroup_size"_a = py::make_tuple(L.maxComputeWorkGroupSize[0],
                                              L.maxComputeWorkGroupSize[1],
                                              L.maxComputeWorkGroupSize[2]),
      "max_workgroup_count"_a = py::make_tuple(L.maxComputeWorkGroupCount[0],
                                               L.maxComputeWorkGroupCount[1],
                                               L.maxComputeWorkGroupCount[2]),
      "max_storage_buffer_range"_a = L.maxStorageBufferRange,
      "max_push_constants_size"_a = L.maxPushConstantsSize,
      "max_memory_allocation_count"_a = L.maxMemoryAllocationCount,
      "min_storage_buffer_offset_alignment"_a = (uint64_t)L.minStorageBufferOffsetAlignment,
      "timestamp_period_ns"_a = L.timestampPeriod,
      "timestamps"_a = (bool)L.timestampComputeAndGraphics,
      "memory_heaps"_a = heaps,
      "memory_types"_a = types,
      "memory_budget"_a = haveBudget,
      "features"_a = py::dict("shader_float64"_a = (bool)feats2.features.shaderFloat64,
                              "shader_int64"_a = (bool)feats2.features.shaderInt64,
                              "shader_int16"_a = (bool)feats2.features.shaderInt16,
                              "storage_buffer_16bit"_a = (bool)storage16.storageBuffer16BitAccess),
      "extensions"_a = extNames);
}

static void
registerExtensions(py::module_& m)
{
    py::class_<OpComputeBarrier, kp::OpBase, std::shared_ptr<OpComputeBarrier>>(
      m, "OpComputeBarrier", "Global compute/transfer memory barrier between dependent dispatches (vkmtp).")
      .def(py::init<>());
    py::class_<OpCopyRegion, kp::OpBase, std::shared_ptr<OpCopyRegion>>(
      m, "OpCopyRegion", "Copy n_bytes from src at src_offset to dst at dst_offset (vkmtp).")
      .def(py::init<std::shared_ptr<kp::Tensor>, std::shared_ptr<kp::Tensor>, uint64_t, uint64_t, uint64_t>(),
           py::arg("src"), py::arg("dst"), py::arg("src_offset"), py::arg("dst_offset"), py::arg("n_bytes"));
    py::class_<OpDispatch, kp::OpBase, std::shared_ptr<OpDispatch>>(
      m, "OpDispatch", "Dispatch an Algorithm with given push constants (uint32) and group counts (vkmtp).")
      .def(py::init<std::shared_ptr<kp::Algorithm>, std::vector<uint32_t>, uint32_t, uint32_t, uint32_t>(),
           py::arg("algorithm"), py::arg("push_consts"), py::arg("x"), py::arg("y") = 1, py::arg("z") = 1);
    m.def(
      "device_infos",
      [](kp::Manager& mgr) {
          py::list out;
          for (const auto& d : mgr.listDevices()) {
              out.append(deviceInfo(d));
          }
          return out;
      },
      "Describe every Vulkan physical device (vkmtp).");
    m.attr("vkmtp_ext_version") = 2;
}

} // namespace vkmtp_ext
