#include "rdma/cuda_ipc/device_memory.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>
#include <utility>

#include "rdma/cuda_ipc/batch_copy.h"

namespace kvferry::rdma::cuda_ipc {
namespace {

Status check(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::ok();
  return internalError(std::string(what) + ": " + cudaGetErrorName(error) + " (" +
                       cudaGetErrorString(error) + ")");
}

// Milliseconds that `repeats` runs of `enqueue` take on `stream`, the first run excluded.
template <typename Fn>
Result<double> timeRuns(cudaStream_t stream, uint32_t repeats, Fn&& enqueue) {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  RETURN_IF_ERROR(check(cudaEventCreate(&start), "cudaEventCreate"));
  RETURN_IF_ERROR(check(cudaEventCreate(&stop), "cudaEventCreate"));
  Status status = enqueue();  // warm-up
  if (status.isOk()) status = check(cudaEventRecord(start, stream), "cudaEventRecord");
  for (uint32_t i = 0; status.isOk() && i < repeats; ++i) status = enqueue();
  if (status.isOk()) status = check(cudaEventRecord(stop, stream), "cudaEventRecord");
  if (status.isOk()) status = check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  if (status.isOk()) status = check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  RETURN_IF_ERROR(status);
  return static_cast<double>(ms);
}

}  // namespace

Result<DeviceMemory> DeviceMemory::allocate(int gpu, uint64_t bytes) {
  RETURN_IF_ERROR(check(cudaSetDevice(gpu), "cudaSetDevice"));
  DeviceMemory memory;
  RETURN_IF_ERROR(check(cudaMalloc(&memory.data_, bytes), "cudaMalloc"));
  memory.bytes_ = bytes;
  memory.gpu_ = gpu;
  RETURN_IF_ERROR(check(cudaMemset(memory.data_, 0, bytes), "cudaMemset"));
  return memory;
}

DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      gpu_(other.gpu_) {}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  std::swap(gpu_, other.gpu_);
  return *this;
}

DeviceMemory::~DeviceMemory() {
  if (data_ != nullptr) cudaFree(data_);
}

Status DeviceMemory::upload(const void* host, uint64_t bytes, uint64_t offset) {
  if (offset + bytes > bytes_) return outOfRange("upload past the allocation");
  return check(
      cudaMemcpy(static_cast<uint8_t*>(data_) + offset, host, bytes, cudaMemcpyHostToDevice),
      "cudaMemcpy");
}

Status DeviceMemory::download(void* host, uint64_t bytes, uint64_t offset) const {
  if (offset + bytes > bytes_) return outOfRange("download past the allocation");
  return check(
      cudaMemcpy(host, static_cast<const uint8_t*>(data_) + offset, bytes, cudaMemcpyDeviceToHost),
      "cudaMemcpy");
}

std::string deviceUnavailableReason() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(error);
  if (count == 0) return "no CUDA device";
  return "";
}

Result<CopyBaselines> measureCopyBaselines(const DeviceMemory& from, const DeviceMemory& to,
                                           uint64_t block_bytes, const uint32_t* source_blocks,
                                           const uint32_t* target_blocks, uint64_t blocks,
                                           uint32_t repeats) {
  const uint64_t batch_bytes = blocks * block_bytes;
  RETURN_IF_ERROR(check(cudaSetDevice(from.gpu()), "cudaSetDevice"));
  cudaStream_t stream = nullptr;
  RETURN_IF_ERROR(
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  std::unique_ptr<CUstream_st, cudaError_t (*)(cudaStream_t)> owned(stream, &cudaStreamDestroy);
  const auto* src = static_cast<const uint8_t*>(from.data());
  auto* dst = static_cast<uint8_t*>(to.data());
  CopyBaselines out;
  const auto bytesPerSecond = [&](double ms) {
    return repeats * static_cast<double>(batch_bytes) / (ms / 1e3);
  };
  // One contiguous copy of the batch's bytes per run, run r at window r % windows of the pools.
  const auto timeContiguous = [&](uint64_t windows) {
    uint64_t run = 0;
    return timeRuns(stream, repeats, [&] {
      const uint64_t offset = (run++ % windows) * batch_bytes;
      return check(cudaMemcpyAsync(dst + offset, src + offset, batch_bytes,
                                   cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpyAsync");
    });
  };
  // Walking the pools' windows, as the transport's batches walk its pools: the bytes come from
  // device memory, not from the L2 cache the last run filled. Hot: the first window every run.
  ASSIGN_OR_RETURN(
      const double contiguous_ms,
      timeContiguous(std::max<uint64_t>(1, std::min(from.bytes(), to.bytes()) / batch_bytes)));
  out.contiguous_bytes_per_s = bytesPerSecond(contiguous_ms);
  ASSIGN_OR_RETURN(const double hot_ms, timeContiguous(1));
  out.contiguous_hot_bytes_per_s = bytesPerSecond(hot_ms);
  ASSIGN_OR_RETURN(
      const double per_block_ms, timeRuns(stream, repeats, [&] {
        for (uint64_t i = 0; i < blocks; ++i) {
          RETURN_IF_ERROR(check(cudaMemcpyAsync(dst + uint64_t{target_blocks[i]} * block_bytes,
                                                src + uint64_t{source_blocks[i]} * block_bytes,
                                                block_bytes, cudaMemcpyDeviceToDevice, stream),
                                "cudaMemcpyAsync"));
        }
        return Status::ok();
      }));
  out.per_block_bytes_per_s = bytesPerSecond(per_block_ms);
  // Gather into a staging buffer, then scatter out of it: two launches of the batch copy.
  ASSIGN_OR_RETURN(DeviceMemory staging, DeviceMemory::allocate(from.gpu(), batch_bytes));
  std::vector<CopyOp> gather(blocks);
  std::vector<CopyOp> scatter(blocks);
  auto* stage = static_cast<uint8_t*>(staging.data());
  for (uint64_t i = 0; i < blocks; ++i) {
    gather[i] = {reinterpret_cast<uint64_t>(src + uint64_t{source_blocks[i]} * block_bytes),
                 reinterpret_cast<uint64_t>(stage + i * block_bytes), block_bytes};
    scatter[i] = {reinterpret_cast<uint64_t>(stage + i * block_bytes),
                  reinterpret_cast<uint64_t>(dst + uint64_t{target_blocks[i]} * block_bytes),
                  block_bytes};
  }
  ASSIGN_OR_RETURN(DeviceMemory ops,
                   DeviceMemory::allocate(from.gpu(), 2 * blocks * sizeof(CopyOp)));
  RETURN_IF_ERROR(ops.upload(gather.data(), blocks * sizeof(CopyOp)));
  RETURN_IF_ERROR(ops.upload(scatter.data(), blocks * sizeof(CopyOp), blocks * sizeof(CopyOp)));
  const auto* device_ops = static_cast<const CopyOp*>(ops.data());
  ASSIGN_OR_RETURN(
      const double two_kernel_ms, timeRuns(stream, repeats, [&] {
        RETURN_IF_ERROR(
            check(launchBatchCopy(device_ops, static_cast<uint32_t>(blocks), block_bytes, stream),
                  "gather"));
        return check(launchBatchCopy(device_ops + blocks, static_cast<uint32_t>(blocks),
                                     block_bytes, stream),
                     "scatter");
      }));
  out.gather_scatter_bytes_per_s = bytesPerSecond(two_kernel_ms);
  return out;
}

Result<PinnedCopyRates> measurePinnedCopies(const DeviceMemory& device, uint64_t bytes,
                                            uint32_t repeats) {
  if (bytes > device.bytes()) return outOfRange("pinned copy baseline past the allocation");
  RETURN_IF_ERROR(check(cudaSetDevice(device.gpu()), "cudaSetDevice"));
  cudaStream_t stream = nullptr;
  RETURN_IF_ERROR(
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  std::unique_ptr<CUstream_st, cudaError_t (*)(cudaStream_t)> owned_stream(stream,
                                                                           &cudaStreamDestroy);
  void* pinned = nullptr;
  RETURN_IF_ERROR(check(cudaHostAlloc(&pinned, bytes, cudaHostAllocDefault), "cudaHostAlloc"));
  std::unique_ptr<void, cudaError_t (*)(void*)> owned_pinned(pinned, &cudaFreeHost);
  PinnedCopyRates out;
  ASSIGN_OR_RETURN(
      const double d2h_ms, timeRuns(stream, repeats, [&] {
        return check(cudaMemcpyAsync(pinned, device.data(), bytes, cudaMemcpyDeviceToHost, stream),
                     "cudaMemcpyAsync");
      }));
  out.device_to_host_bytes_per_s = repeats * static_cast<double>(bytes) / (d2h_ms / 1e3);
  ASSIGN_OR_RETURN(
      const double h2d_ms, timeRuns(stream, repeats, [&] {
        return check(cudaMemcpyAsync(device.data(), pinned, bytes, cudaMemcpyHostToDevice, stream),
                     "cudaMemcpyAsync");
      }));
  out.host_to_device_bytes_per_s = repeats * static_cast<double>(bytes) / (h2d_ms / 1e3);
  return out;
}

}  // namespace kvferry::rdma::cuda_ipc
