#include "rdma/tcp/cuda_staging_copier.h"

#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>

#include <string>
#include <utility>
#include <vector>

namespace kvferry::rdma::tcp_backend {
namespace {

Status cudaCheck(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::ok();
  return internalError(std::string(what) + ": " + cudaGetErrorName(error) + " (" +
                       cudaGetErrorString(error) + ")");
}

// cudaHostAlloc'ed memory, freed on destruction. Move-only.
class PinnedHost {
 public:
  PinnedHost() = default;
  PinnedHost(const PinnedHost&) = delete;
  PinnedHost& operator=(const PinnedHost&) = delete;
  ~PinnedHost() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  Status allocate(size_t bytes) {
    RETURN_IF_ERROR(
        cudaCheck(cudaHostAlloc(&data_, bytes, cudaHostAllocPortable), "cudaHostAlloc"));
    bytes_ = bytes;
    return Status::ok();
  }
  std::span<uint8_t> span() const { return {static_cast<uint8_t*>(data_), bytes_}; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A stream; its destructor waits for the work on it (so host callbacks have run), then
// destroys it.
class Stream {
 public:
  Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (stream_ == nullptr) return;
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  Status create() {
    return cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                     "cudaStreamCreateWithFlags");
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

void CUDART_CB hostCopied(void* done) { static_cast<CopyDone*>(done)->copied(); }

class CudaStagingCopier final : public StagingCopier {
 public:
  explicit CudaStagingCopier(int device) : device_(device) {}

  Status init(size_t arena_bytes) {
    RETURN_IF_ERROR(cudaCheck(cudaSetDevice(device_), "cudaSetDevice"));
    RETURN_IF_ERROR(arena_.allocate(arena_bytes));
    return stream_.create();
  }

  std::span<uint8_t> arena() override { return arena_.span(); }

  Status copy(std::span<const CopyPiece> pieces, CopyDirection direction, CopyDone& done) override {
    // The progress thread has no current device of its own.
    RETURN_IF_ERROR(cudaCheck(cudaSetDevice(device_), "cudaSetDevice"));
    if (batch_works_) {
      dsts_.clear();
      srcs_.clear();
      sizes_.clear();
      for (const CopyPiece& p : pieces) {
        dsts_.push_back(p.dst);
        srcs_.push_back(p.src);
        sizes_.push_back(p.bytes);
      }
      cudaMemcpyAttributes attrs{};
      attrs.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
      size_t attrs_index = 0;
      const cudaError_t error =
          cudaMemcpyBatchAsync(dsts_.data(), srcs_.data(), sizes_.data(), pieces.size(), &attrs,
                               &attrs_index, 1, stream_.get());
      if (error != cudaSuccess) {
        // Unsupported here (driver, platform): per-piece copies from now on.
        cudaGetLastError();
        batch_works_ = false;
        spdlog::warn(
            "tcp transport: cudaMemcpyBatchAsync failed ({}); staging with one "
            "cudaMemcpyAsync per piece",
            cudaGetErrorString(error));
      }
    }
    if (!batch_works_) {
      const cudaMemcpyKind kind = direction == CopyDirection::kDeviceToHost
                                      ? cudaMemcpyDeviceToHost
                                      : cudaMemcpyHostToDevice;
      for (const CopyPiece& p : pieces) {
        RETURN_IF_ERROR(cudaCheck(cudaMemcpyAsync(p.dst, p.src, p.bytes, kind, stream_.get()),
                                  "cudaMemcpyAsync"));
      }
    }
    return cudaCheck(cudaLaunchHostFunc(stream_.get(), hostCopied, &done), "cudaLaunchHostFunc");
  }

 private:
  const int device_;
  bool batch_works_ = true;
  // Teardown: the stream (waiting for its copies) before the memory they use.
  PinnedHost arena_;
  Stream stream_;
  std::vector<void*> dsts_;
  std::vector<const void*> srcs_;
  std::vector<size_t> sizes_;
};

}  // namespace

Result<std::unique_ptr<StagingCopier>> makeCudaStagingCopier(int device, size_t arena_bytes) {
  auto copier = std::make_unique<CudaStagingCopier>(device);
  RETURN_IF_ERROR(
      copier->init(arena_bytes).withContext("tcp staging on GPU " + std::to_string(device)));
  return std::unique_ptr<StagingCopier>(std::move(copier));
}

}  // namespace kvferry::rdma::tcp_backend
