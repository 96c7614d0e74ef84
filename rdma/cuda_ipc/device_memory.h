// Device memory for what drives cuda_ipc without being CUDA code itself (transfer_bench, tests):
// an owned allocation, host↔device copies, and the copy baselines transfer_bench prints beside
// the transport's rate. No CUDA header here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvferry::rdma::cuda_ipc {

// cudaMalloc'ed memory on one GPU, freed on destruction. Move-only.
class DeviceMemory {
 public:
  static Result<DeviceMemory> allocate(int gpu, uint64_t bytes);
  DeviceMemory() = default;
  DeviceMemory(DeviceMemory&& other) noexcept;
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  ~DeviceMemory();

  void* data() const { return data_; }
  uint64_t bytes() const { return bytes_; }
  int gpu() const { return gpu_; }
  Status upload(const void* host, uint64_t bytes, uint64_t offset = 0);
  Status download(void* host, uint64_t bytes, uint64_t offset = 0) const;

 private:
  void* data_ = nullptr;
  uint64_t bytes_ = 0;
  int gpu_ = -1;
};

// Whether a CUDA device can be used here, and why not when it cannot ("" when it can).
std::string deviceUnavailableReason();

// What moving `blocks` blocks of `block_bytes` costs on one GPU without the transport, each
// timed over `repeats` repetitions with CUDA events (bytes moved / second, payload only):
//   contiguous:   one cudaMemcpyAsync of blocks × block_bytes contiguous bytes, each repetition
//                 the next such window of the pools (so, like the transport's batches, it reads
//                 device memory and not what the L2 cache kept of the last repetition);
//   contiguous_hot: the same copy of the pools' first window every time: from batches of about
//                 half the L2 cache down (25 MiB on an H100), source and target stay in L2, and
//                 this rate is the cache's rather than the memory's;
//   per_block:    one cudaMemcpyAsync per block between scattered block ids;
//   gather_scatter: a gather kernel into a contiguous buffer, then a scatter kernel out of it
//                 (PyTorch's index_select + index_copy_).
struct CopyBaselines {
  double contiguous_bytes_per_s = 0;
  double contiguous_hot_bytes_per_s = 0;
  double per_block_bytes_per_s = 0;
  double gather_scatter_bytes_per_s = 0;
};
Result<CopyBaselines> measureCopyBaselines(const DeviceMemory& from, const DeviceMemory& to,
                                           uint64_t block_bytes, const uint32_t* source_blocks,
                                           const uint32_t* target_blocks, uint64_t blocks,
                                           uint32_t repeats);

// What tcp from GPU memory cannot beat on one host: `bytes` contiguous bytes of `device`
// copied to pinned host memory and back, each timed over `repeats` repetitions (bytes / second).
struct PinnedCopyRates {
  double device_to_host_bytes_per_s = 0;
  double host_to_device_bytes_per_s = 0;
};
Result<PinnedCopyRates> measurePinnedCopies(const DeviceMemory& device, uint64_t bytes,
                                            uint32_t repeats);

}  // namespace kvferry::rdma::cuda_ipc
