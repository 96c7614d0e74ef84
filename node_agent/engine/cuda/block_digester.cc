// createDeviceBlockDigester (cuda_runner.h): the pools' addresses and the block ids go to the
// device in one copy, one kernel (cuda/kv_digest.cu) digests every (pool, block), one copy brings
// the digests back, all on the digester's own stream — the engine's stream keeps computing.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "node_agent/engine/cuda/cuda_util.h"
#include "node_agent/engine/cuda/kv_digest.h"
#include "node_agent/engine/cuda_runner.h"
#include "node_agent/engine/kv_digest.h"

namespace kvferry::engine {
namespace {

class CudaBlockDigester final : public DeviceBlockDigester {
 public:
  CudaBlockDigester(int device, cuda::Stream stream)
      : device_(device), stream_(std::move(stream)) {}

  Status digest(std::span<const void* const> pools, uint64_t block_bytes,
                std::span<const uint32_t> ids, std::span<uint64_t> out) override {
    if (out.size() != pools.size() * ids.size()) {
      return invalidArgument("block digests: room for " + std::to_string(out.size()) + ", " +
                             std::to_string(pools.size()) + " pools × " +
                             std::to_string(ids.size()) + " blocks asked");
    }
    if (block_bytes % kDigestWordBytes != 0) {
      return invalidArgument("block digests: blocks of " + std::to_string(block_bytes) +
                             " bytes, not a multiple of " + std::to_string(kDigestWordBytes));
    }
    if (out.empty()) return Status::ok();
    // Device and pinned buffers alike: [pool addresses][ids, padded to 8 bytes][digests].
    const uint64_t pools_bytes = pools.size() * sizeof(void*);
    const uint64_t ids_bytes = (ids.size() * sizeof(uint32_t) + 7) / 8 * 8;
    const uint64_t in_bytes = pools_bytes + ids_bytes;
    const uint64_t total = in_bytes + out.size() * sizeof(uint64_t);
    CUDA_CHECK(cudaSetDevice(device_));
    if (total > device_buffer_.bytes()) {
      const uint64_t bytes = std::max(total, 2 * device_buffer_.bytes());
      device_buffer_ = {};  // freed before the larger ones are taken
      host_buffer_ = {};
      ASSIGN_OR_RETURN(cuda::DeviceBuffer grown_device, cuda::DeviceBuffer::allocate(bytes));
      ASSIGN_OR_RETURN(cuda::PinnedBuffer grown_host, cuda::PinnedBuffer::allocate(bytes));
      device_buffer_ = std::move(grown_device);
      host_buffer_ = std::move(grown_host);
    }
    auto* host = host_buffer_.as<uint8_t>();
    std::memcpy(host, pools.data(), pools_bytes);
    std::memcpy(host + pools_bytes, ids.data(), ids.size() * sizeof(uint32_t));
    auto* device = device_buffer_.as<uint8_t>();
    cudaStream_t stream = stream_.get();
    CUDA_CHECK(cudaMemcpyAsync(device, host, in_bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cuda::launchBlockDigests(
        reinterpret_cast<const uint8_t* const*>(device), static_cast<uint32_t>(pools.size()),
        reinterpret_cast<const uint32_t*>(device + pools_bytes), static_cast<uint32_t>(ids.size()),
        block_bytes, reinterpret_cast<uint64_t*>(device + in_bytes), stream));
    CUDA_CHECK(cudaMemcpyAsync(host + in_bytes, device + in_bytes, out.size() * sizeof(uint64_t),
                               cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    std::memcpy(out.data(), host + in_bytes, out.size() * sizeof(uint64_t));
    return Status::ok();
  }

 private:
  int device_;
  cuda::Stream stream_;
  cuda::DeviceBuffer device_buffer_;
  cuda::PinnedBuffer host_buffer_;
};

}  // namespace

Result<std::unique_ptr<DeviceBlockDigester>> createDeviceBlockDigester(int device) {
  ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::selectDevice(device));
  (void)info;
  ASSIGN_OR_RETURN(cuda::Stream stream, cuda::Stream::create());
  return std::unique_ptr<DeviceBlockDigester>(new CudaBlockDigester(device, std::move(stream)));
}

}  // namespace kvferry::engine
