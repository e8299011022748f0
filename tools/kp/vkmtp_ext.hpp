// vkmtp additions to Kompute 0.9.0's Python binding (compiled into kp's main.cpp by tools/build_kp.py).
//
// Why: kp 0.9.0 records no barrier between two dispatches of one sequence, so a dispatch that reads what the
// previous one wrote can see stale data on a real GPU. OpComputeBarrier records one global memory barrier
// (shader/transfer writes -> shader/transfer/host reads and writes), the way llama.cpp orders its graph nodes.
// OpDispatch dispatches a pipeline with per-dispatch push constants and group counts.
// OpCopyRegion copies a byte range between two tensors (chunked weight upload, KV snapshots, state rollback).
// device_infos() reports what kp's own get_device_properties() leaves out: device type, driver, subgroup
// size and operations, memory heaps and budget, limits, the optional features the device supports and those
// its most recent VkDevice was created with, and every memory type's property flags.
// set_memory_type(index) makes the next tensor this thread creates take its memory from that memory type (vkmtp
// chooses one per buffer role, vkmtp/device/memory_types.py; Kompute would take the first type with the tensor
// type's flags, e.g. a system-RAM host type on a discrete GPU). Device-local tensors are storage tensors filled
// through vkmtp's staging buffer (OpCopyRegion); host-visible ones are host tensors, mapped.
// Device features: kp's Manager::createDevice enables no optional feature (pEnabledFeatures = nullptr, no
// pNext). tools/build_kp.py adds one call in it to kp::vkmtpDeviceCreateHook, which this file sets: it chains a
// VkPhysicalDeviceFeatures2 with the optional features below that the device supports and that
// set_device_features() allows (all by default, none with an empty list), and adds their extensions.
#pragma once

#include <kompute/Kompute.hpp>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <vulkan/vulkan.hpp>

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace kp {
// Defined in kp's Manager.cpp by tools/build_kp.py; called just before vkCreateDevice.
extern void (*vkmtpDeviceCreateHook)(const vk::PhysicalDevice&,
                                     vk::DeviceCreateInfo&,
                                     std::vector<const char*>&);
// Defined in kp's Tensor.cpp by tools/build_kp.py: the memory type index the next tensor created on this
// thread takes its primary buffer's memory from (-1: Kompute's own choice).
extern thread_local int vkmtpMemoryTypeRequest;
}

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

// --- s6-fuse: a barrier between dependent dispatches without the host stage ------------------------------------
// OpShaderBarrier: shader/transfer writes -> shader/transfer reads and writes, compute and transfer stages only:
// what one dispatch of a step needs before reading what an earlier one wrote. Only the barrier that ends a step
// (OpComputeBarrier, before the host reads its outputs) also waits for the host stage and makes writes
// visible to host reads.
class OpShaderBarrier : public kp::OpBase
{
  public:
    void record(const vk::CommandBuffer& commandBuffer) override
    {
        vk::MemoryBarrier barrier(
          vk::AccessFlagBits::eShaderWrite | vk::AccessFlagBits::eTransferWrite,
          vk::AccessFlagBits::eShaderRead | vk::AccessFlagBits::eShaderWrite |
            vk::AccessFlagBits::eTransferRead | vk::AccessFlagBits::eTransferWrite);
        commandBuffer.pipelineBarrier(
          vk::PipelineStageFlagBits::eComputeShader | vk::PipelineStageFlagBits::eTransfer,
          vk::PipelineStageFlagBits::eComputeShader | vk::PipelineStageFlagBits::eTransfer,
          vk::DependencyFlags(),
          barrier,
          nullptr,
          nullptr);
    }
    void preEval(const vk::CommandBuffer&) override {}
    void postEval(const vk::CommandBuffer&) override {}
};
// --- end s6-fuse --------------------------------------------------------------------------------------------------

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

// --- optional device features ------------------------------------------------------------------------------
// The names vkmtp knows (Python side: vkmtp.device.info.FEATURE_NAMES).
static const char* const kFeatureNames[] = {
    "storage_buffer_16bit", "storage_buffer_8bit", "shader_float16", "shader_int8", "shader_int16",
    "integer_dot_product", "subgroup_size_control", "compute_full_subgroups",
};

// What a physical device supports, queried with one VkPhysicalDeviceFeatures2 chain of the structs whose
// extensions it lists (kp's instance is Vulkan 1.1, so 1.2/1.3 features come through their extensions).
struct FeatureChain
{
    bool has16 = false, has8 = false, hasF16I8 = false, hasDot = false, hasSize = false;
    vk::PhysicalDeviceFeatures2 feats2;
    vk::PhysicalDevice16BitStorageFeatures storage16;
    vk::PhysicalDevice8BitStorageFeaturesKHR storage8;
    vk::PhysicalDeviceShaderFloat16Int8FeaturesKHR f16i8;
    vk::PhysicalDeviceShaderIntegerDotProductFeaturesKHR dot;
    vk::PhysicalDeviceSubgroupSizeControlFeaturesEXT size;

    explicit FeatureChain(const std::vector<vk::ExtensionProperties>& exts);
    void link();
    std::map<std::string, bool> flags() const;
    void restrictTo(const std::map<std::string, bool>& allowed);
};

FeatureChain::FeatureChain(const std::vector<vk::ExtensionProperties>& exts)
{
    has16 = hasExtension(exts, VK_KHR_16BIT_STORAGE_EXTENSION_NAME);
    has8 = hasExtension(exts, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
    hasF16I8 = hasExtension(exts, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
    hasDot = hasExtension(exts, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
    hasSize = hasExtension(exts, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    link();
}

// pNext pointers into this object: call again after a copy.
void
FeatureChain::link()
{
    void** next = &feats2.pNext;
    auto add = [&next](bool present, auto& s) {
        if (present) {
            *next = &s;
            next = &s.pNext;
        }
    };
    *next = nullptr;
    storage16.pNext = storage8.pNext = f16i8.pNext = dot.pNext = size.pNext = nullptr;
    add(has16, storage16);
    add(has8, storage8);
    add(hasF16I8, f16i8);
    add(hasDot, dot);
    add(hasSize, size);
    *next = nullptr;
}

std::map<std::string, bool>
FeatureChain::flags() const
{
    return {
        { "storage_buffer_16bit", has16 && storage16.storageBuffer16BitAccess },
        { "storage_buffer_8bit", has8 && storage8.storageBuffer8BitAccess },
        { "shader_float16", hasF16I8 && f16i8.shaderFloat16 },
        { "shader_int8", hasF16I8 && f16i8.shaderInt8 },
        { "shader_int16", (bool)feats2.features.shaderInt16 },
        { "integer_dot_product", hasDot && dot.shaderIntegerDotProduct },
        { "subgroup_size_control", hasSize && size.subgroupSizeControl },
        { "compute_full_subgroups", hasSize && size.computeFullSubgroups },
    };
}

// Keep only the features in `allowed` (supported ones stay supported); everything else off.
void
FeatureChain::restrictTo(const std::map<std::string, bool>& allowed)
{
    auto ok = [&allowed](const char* n) {
        auto it = allowed.find(n);
        return it != allowed.end() && it->second;
    };
    const vk::PhysicalDeviceFeatures core = feats2.features;
    feats2.features = vk::PhysicalDeviceFeatures();
    feats2.features.shaderInt16 = core.shaderInt16 && ok("shader_int16");
    storage16.storageBuffer16BitAccess = storage16.storageBuffer16BitAccess && ok("storage_buffer_16bit");
    storage16.uniformAndStorageBuffer16BitAccess = false;
    storage16.storagePushConstant16 = false;
    storage16.storageInputOutput16 = false;
    storage8.storageBuffer8BitAccess = storage8.storageBuffer8BitAccess && ok("storage_buffer_8bit");
    storage8.uniformAndStorageBuffer8BitAccess = false;
    storage8.storagePushConstant8 = false;
    f16i8.shaderFloat16 = f16i8.shaderFloat16 && ok("shader_float16");
    f16i8.shaderInt8 = f16i8.shaderInt8 && ok("shader_int8");
    dot.shaderIntegerDotProduct = dot.shaderIntegerDotProduct && ok("integer_dot_product");
    size.subgroupSizeControl = size.subgroupSizeControl && ok("subgroup_size_control");
    size.computeFullSubgroups = size.computeFullSubgroups && ok("compute_full_subgroups");
    // Chain (and enable the extension of) only the structs that enable something.
    has16 = has16 && storage16.storageBuffer16BitAccess;
    has8 = has8 && storage8.storageBuffer8BitAccess;
    hasF16I8 = hasF16I8 && (f16i8.shaderFloat16 || f16i8.shaderInt8);
    hasDot = hasDot && dot.shaderIntegerDotProduct;
    hasSize = hasSize && (size.subgroupSizeControl || size.computeFullSubgroups);
    link();
}

struct FeatureState
{
    std::mutex lock;
    bool restricted = false;                          // set_device_features() called
    std::map<std::string, bool> allowed;              // its names
    std::map<std::string, std::map<std::string, bool>> enabled;   // device UUID -> what its last VkDevice enabled
};

static FeatureState&
featureState()
{
    static FeatureState state;
    return state;
}

static std::string
deviceKey(const vk::PhysicalDevice& dev)
{
    vk::PhysicalDeviceProperties2 props2;
    vk::PhysicalDeviceIDProperties ids;
    props2.pNext = &ids;
    dev.getProperties2(&props2);
    std::string key(props2.properties.deviceName.data());
    for (uint8_t b : ids.deviceUUID) {
        key += std::to_string((int)b) + ".";
    }
    return key;
}

// Runs inside kp::Manager::createDevice on the creating thread; the chain must live until vkCreateDevice
// returns, hence thread_local storage.
static void
deviceCreateHook(const vk::PhysicalDevice& dev, vk::DeviceCreateInfo& info, std::vector<const char*>& exts)
{
    thread_local std::unique_ptr<FeatureChain> chain;
    const auto available = dev.enumerateDeviceExtensionProperties();
    chain.reset(new FeatureChain(available));
    dev.getFeatures2(&chain->feats2);
    std::map<std::string, bool> allowed;
    {
        std::lock_guard<std::mutex> g(featureState().lock);
        if (featureState().restricted) {
            allowed = featureState().allowed;
        } else {
            for (const char* n : kFeatureNames) {
                allowed[n] = true;
            }
        }
    }
    chain->restrictTo(allowed);
    auto addExt = [&exts](bool on, const char* name) {
        if (!on) {
            return;
        }
        for (const char* e : exts) {
            if (std::strcmp(e, name) == 0) {
                return;
            }
        }
        exts.push_back(name);
    };
    addExt(chain->has16, VK_KHR_16BIT_STORAGE_EXTENSION_NAME);
    addExt(chain->has8, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
    addExt(chain->hasF16I8, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
    addExt(chain->hasDot, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
    addExt(chain->hasSize, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    const auto enabled = chain->flags();
    bool any = false;
    for (const auto& kv : enabled) {
        any = any || kv.second;
    }
    // Nothing to enable: the device is created exactly as kp creates it.
    info.pNext = any ? (const void*)&chain->feats2 : nullptr;
    info.pEnabledFeatures = nullptr;
    std::lock_guard<std::mutex> g(featureState().lock);
    featureState().enabled[deviceKey(dev)] = enabled;
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
          "host_cached"_a = (bool)(f & vk::MemoryPropertyFlagBits::eHostCached),
          "property_flags"_a = (uint32_t)f));
    }

    FeatureChain chain(exts);
    dev.getFeatures2(&chain.feats2);
    const vk::PhysicalDeviceFeatures2& feats2 = chain.feats2;
    py::dict supported;
    for (const auto& kv : chain.flags()) {
        supported[py::str(kv.first)] = kv.second;
    }
    py::dict enabled;
    {
        std::lock_guard<std::mutex> g(featureState().lock);
        auto it = featureState().enabled.find(deviceKey(dev));
        if (it != featureState().enabled.end()) {
            for (const auto& kv : it->second) {
                enabled[py::str(kv.first)] = kv.second;
            }
        }
    }
    vk::PhysicalDeviceProperties2 dotProps2;
    vk::PhysicalDeviceShaderIntegerDotProductPropertiesKHR dotProps;
    vk::PhysicalDeviceSubgroupSizeControlPropertiesEXT sizeProps;
    void** nextProp = &dotProps2.pNext;
    if (chain.hasDot) {
        *nextProp = &dotProps;
        nextProp = &dotProps.pNext;
    }
    if (chain.hasSize) {
        *nextProp = &sizeProps;
        nextProp = &sizeProps.pNext;
    }
    dev.getProperties2(&dotProps2);

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
                              "storage_buffer_16bit"_a = supported["storage_buffer_16bit"]),
      "supported_features"_a = supported,
      "enabled_features"_a = enabled,
      "integer_dot_4x8_packed_accelerated"_a =
        chain.hasDot && (bool)dotProps.integerDotProduct4x8BitPackedSignedAccelerated,
      "min_subgroup_size"_a = chain.hasSize ? sizeProps.minSubgroupSize : subgroup.subgroupSize,
      "max_subgroup_size"_a = chain.hasSize ? sizeProps.maxSubgroupSize : subgroup.subgroupSize,
      "extensions"_a = extNames);
}

// --- begin s6-memory: compiled pipelines kept apart from the buffers they are bound to ---------------------
// Why: a kp::Algorithm is a pipeline AND a descriptor set bound to its tensors, so freeing the tensors (an
// engine closed while the server sleeps) forces a recompile of the pipeline at the next wake. On lavapipe
// every compile runs LLVM, whose churn through the C heap leaves a little more of the heap resident each time
// (~0.1 MiB per wake). Pipeline is the compiled part (shader module, descriptor set layout, pipeline layout,
// pipeline) keyed by shader, specialization constants, binding count and push-constant size; Binding is one
// descriptor set (its own pool) of a Pipeline over given tensors, cheap to create and destroy with them.
// OpDispatchBinding records one. kp::Manager does not track these; each holds the manager (so it is never
// destructed first) and destroy() does nothing once the manager has destroyed its device.
// vkmtp/device/context.py destroys them before the manager.
class Pipeline
{
  public:
    Pipeline(std::shared_ptr<kp::Manager> mgr,
             const std::vector<uint32_t>& spirv,
             uint32_t nBindings,
             const std::vector<uint32_t>& specConsts,
             uint32_t nPush)
      : mManager(mgr), mDevice(mgr->vkmtpDevice()), mBindings(nBindings),
        mPushBytes(nPush * (uint32_t)sizeof(uint32_t))
    {
        if (!mDevice) {
            throw std::runtime_error("Pipeline: the manager has no device");
        }
        vk::ShaderModuleCreateInfo moduleInfo(
          vk::ShaderModuleCreateFlags(), sizeof(uint32_t) * spirv.size(), spirv.data());
        mModule = mDevice->createShaderModule(moduleInfo);
        std::vector<vk::DescriptorSetLayoutBinding> bindings;
        for (uint32_t i = 0; i < nBindings; i++) {
            bindings.emplace_back(i, vk::DescriptorType::eStorageBuffer, 1, vk::ShaderStageFlagBits::eCompute);
        }
        mSetLayout = mDevice->createDescriptorSetLayout(vk::DescriptorSetLayoutCreateInfo(
          vk::DescriptorSetLayoutCreateFlags(), (uint32_t)bindings.size(), bindings.data()));
        vk::PipelineLayoutCreateInfo layoutInfo(vk::PipelineLayoutCreateFlags(), 1, &mSetLayout);
        vk::PushConstantRange pushRange(vk::ShaderStageFlagBits::eCompute, 0, mPushBytes);
        if (mPushBytes) {
            layoutInfo.setPushConstantRangeCount(1);
            layoutInfo.setPPushConstantRanges(&pushRange);
        }
        mLayout = mDevice->createPipelineLayout(layoutInfo);
        std::vector<vk::SpecializationMapEntry> entries;
        for (uint32_t i = 0; i < (uint32_t)specConsts.size(); i++) {
            entries.emplace_back(i, (uint32_t)(i * sizeof(uint32_t)), sizeof(uint32_t));
        }
        vk::SpecializationInfo specInfo((uint32_t)entries.size(), entries.data(),
                                        specConsts.size() * sizeof(uint32_t), specConsts.data());
        vk::PipelineShaderStageCreateInfo stage(
          vk::PipelineShaderStageCreateFlags(), vk::ShaderStageFlagBits::eCompute, mModule, "main", &specInfo);
        vk::ComputePipelineCreateInfo info(vk::PipelineCreateFlags(), stage, mLayout);
        auto made = mDevice->createComputePipeline(vk::PipelineCache(), info);
        if (made.result != vk::Result::eSuccess) {
            throw std::runtime_error("Pipeline: vkCreateComputePipelines failed: " + vk::to_string(made.result));
        }
        mPipeline = made.value;
    }
    ~Pipeline() { destroy(); }
    void destroy()
    {
        if (mPipeline && deviceAlive()) {
            mDevice->destroy(mPipeline);
            mDevice->destroy(mLayout);
            mDevice->destroy(mSetLayout);
            mDevice->destroy(mModule);
        }
        mPipeline = vk::Pipeline();
    }
    bool deviceAlive() const { return mManager->vkmtpDevice() == mDevice; }
    bool alive() const { return (bool)mPipeline && deviceAlive(); }

    std::shared_ptr<kp::Manager> mManager;
    std::shared_ptr<vk::Device> mDevice;
    uint32_t mBindings, mPushBytes;
    vk::ShaderModule mModule;
    vk::DescriptorSetLayout mSetLayout;
    vk::PipelineLayout mLayout;
    vk::Pipeline mPipeline;
};

class Binding
{
  public:
    Binding(std::shared_ptr<Pipeline> pipeline, const std::vector<std::shared_ptr<kp::Tensor>>& tensors)
      : mPipeline(pipeline), mTensors(tensors)
    {
        if (!pipeline->alive()) {
            throw std::runtime_error("Binding: the pipeline was destroyed");
        }
        if (tensors.size() != pipeline->mBindings) {
            throw std::runtime_error("Binding: " + std::to_string(tensors.size()) + " tensors for a pipeline of " +
                                     std::to_string(pipeline->mBindings) + " bindings");
        }
        const auto& dev = pipeline->mDevice;
        vk::DescriptorPoolSize size(vk::DescriptorType::eStorageBuffer, pipeline->mBindings ? pipeline->mBindings : 1);
        mPool = dev->createDescriptorPool(vk::DescriptorPoolCreateInfo(vk::DescriptorPoolCreateFlags(), 1, 1, &size));
        vk::DescriptorSetAllocateInfo alloc(mPool, 1, &pipeline->mSetLayout);
        mSet = dev->allocateDescriptorSets(alloc)[0];
        std::vector<vk::DescriptorBufferInfo> infos;
        infos.reserve(tensors.size());
        for (const auto& t : tensors) {
            infos.push_back(t->constructDescriptorBufferInfo());
        }
        std::vector<vk::WriteDescriptorSet> writes;
        for (uint32_t i = 0; i < (uint32_t)infos.size(); i++) {
            writes.emplace_back(mSet, i, 0, 1, vk::DescriptorType::eStorageBuffer, nullptr, &infos[i]);
        }
        dev->updateDescriptorSets(writes, nullptr);
    }
    ~Binding() { destroy(); }
    void destroy()
    {
        if (mPool && mPipeline->deviceAlive()) {
            mPipeline->mDevice->destroy(mPool);   // frees its descriptor set
        }
        mPool = vk::DescriptorPool();
        mTensors.clear();
    }
    void record(const vk::CommandBuffer& cb, const std::vector<uint32_t>& push) const
    {
        if (!mPool || !mPipeline->alive()) {
            throw std::runtime_error("Binding: recorded after it (or its pipeline) was destroyed");
        }
        cb.bindPipeline(vk::PipelineBindPoint::eCompute, mPipeline->mPipeline);
        cb.bindDescriptorSets(vk::PipelineBindPoint::eCompute, mPipeline->mLayout, 0, mSet, nullptr);
        if (!push.empty()) {
            if (push.size() * sizeof(uint32_t) != mPipeline->mPushBytes) {
                throw std::runtime_error("Binding: push constants of the wrong size");
            }
            cb.pushConstants(mPipeline->mLayout, vk::ShaderStageFlagBits::eCompute, 0,
                             (uint32_t)(push.size() * sizeof(uint32_t)), push.data());
        }
    }

    std::shared_ptr<Pipeline> mPipeline;
    std::vector<std::shared_ptr<kp::Tensor>> mTensors;   // kept alive while bound
    vk::DescriptorPool mPool;
    vk::DescriptorSet mSet;
};

class OpDispatchBinding : public kp::OpBase
{
  public:
    OpDispatchBinding(std::shared_ptr<Binding> binding, std::vector<uint32_t> push, uint32_t x, uint32_t y, uint32_t z)
      : mBinding(binding), mPush(std::move(push)), mX(x), mY(y), mZ(z)
    {
    }
    void record(const vk::CommandBuffer& commandBuffer) override
    {
        mBinding->record(commandBuffer, mPush);
        commandBuffer.dispatch(mX, mY, mZ);
    }
    void preEval(const vk::CommandBuffer&) override {}
    void postEval(const vk::CommandBuffer&) override {}

  private:
    std::shared_ptr<Binding> mBinding;
    std::vector<uint32_t> mPush;
    uint32_t mX, mY, mZ;
};

static void
registerPipelines(py::module_& m)
{
    py::class_<Pipeline, std::shared_ptr<Pipeline>>(
      m, "Pipeline", "A compiled compute pipeline, independent of any buffer (vkmtp).")
      .def(py::init([](std::shared_ptr<kp::Manager> mgr, const std::vector<uint32_t>& spirv, uint32_t nBindings,
                       const std::vector<uint32_t>& spec, uint32_t nPush) {
               return std::make_shared<Pipeline>(mgr, spirv, nBindings, spec, nPush);
           }),
           py::arg("manager"), py::arg("spirv"), py::arg("n_bindings"), py::arg("spec_consts"), py::arg("n_push"))
      .def("destroy", &Pipeline::destroy)
      .def("is_init", &Pipeline::alive);
    py::class_<Binding, std::shared_ptr<Binding>>(
      m, "Binding", "A descriptor set binding tensors to a Pipeline (vkmtp).")
      .def(py::init<std::shared_ptr<Pipeline>, const std::vector<std::shared_ptr<kp::Tensor>>&>(),
           py::arg("pipeline"), py::arg("tensors"))
      .def("destroy", &Binding::destroy);
    py::class_<OpDispatchBinding, kp::OpBase, std::shared_ptr<OpDispatchBinding>>(
      m, "OpDispatchBinding", "Dispatch a Binding's pipeline with push constants (uint32) and group counts (vkmtp).")
      .def(py::init<std::shared_ptr<Binding>, std::vector<uint32_t>, uint32_t, uint32_t, uint32_t>(),
           py::arg("binding"), py::arg("push_consts"), py::arg("x"), py::arg("y") = 1, py::arg("z") = 1);
}
// --- end s6-memory ---------------------------------------------------------------------------------------

static void
registerExtensions(py::module_& m)
{
    py::class_<OpComputeBarrier, kp::OpBase, std::shared_ptr<OpComputeBarrier>>(
      m, "OpComputeBarrier", "Global compute/transfer memory barrier between dependent dispatches (vkmtp).")
      .def(py::init<>());
    // --- s6-fuse ---
    py::class_<OpShaderBarrier, kp::OpBase, std::shared_ptr<OpShaderBarrier>>(
      m, "OpShaderBarrier", "Compute/transfer memory barrier between dependent dispatches, no host stage (vkmtp).")
      .def(py::init<>());
    // --- end s6-fuse ---
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
    m.def(
      "set_device_features",
      [](py::object names) {
          std::lock_guard<std::mutex> g(featureState().lock);
          featureState().allowed.clear();
          featureState().restricted = !names.is_none();
          if (!names.is_none()) {
              for (const auto& n : names.cast<std::vector<std::string>>()) {
                  featureState().allowed[n] = true;
              }
          }
      },
      py::arg("names"),
      "Optional features the next kp.Manager may enable where supported: a list of names, or None for all "
      "(vkmtp).");
    m.attr("device_feature_names") = py::cast(std::vector<std::string>(std::begin(kFeatureNames),
                                                                        std::end(kFeatureNames)));
    m.def(
      "set_memory_type",
      [](py::object index) { kp::vkmtpMemoryTypeRequest = index.is_none() ? -1 : index.cast<int>(); },
      py::arg("index"),
      "Memory type index the next tensor created on this thread is allocated from; None: Kompute's choice "
      "(vkmtp).");
    registerPipelines(m);   // s6-memory
    kp::vkmtpDeviceCreateHook = &deviceCreateHook;
    m.attr("vkmtp_ext_version") = 4;
}

} // namespace vkmtp_ext
