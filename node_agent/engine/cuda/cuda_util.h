// CUDA errors as Status, and move-only owners of device memory, pinned host memory, streams,
// events and executable graphs (STYLE.md: resources are owned, constructors cannot fail —
// factories return Result, destructors never throw). Only CUDA code includes this header.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <utility>

#include "common/status.h"

namespace kvferry::engine::cuda {

// The Status of a CUDA runtime call: OK, or INTERNAL naming the call and CUDA's message
// (RESOURCE_EXHAUSTED for an allocation the device cannot satisfy).
Status cudaStatus(cudaError_t error, const char* call);
Status cublasStatus(cublasStatus_t status, const char* call);

#define CUDA_CHECK(call) RETURN_IF_ERROR(::kvferry::engine::cuda::cudaStatus((call), #call))
#define CUBLAS_CHECK(call) RETURN_IF_ERROR(::kvferry::engine::cuda::cublasStatus((call), #call))

// Memory from one CUDA allocator (device: cudaMalloc/cudaFree; pinned host: cudaMallocHost/
// cudaFreeHost). Not copyable; moving transfers ownership.
template <cudaError_t (*kAllocate)(void**, size_t), cudaError_t (*kFree)(void*)>
class CudaMemory {
 public:
  CudaMemory() = default;
  static Result<CudaMemory> allocate(uint64_t bytes) {
    void* data = nullptr;
    if (bytes > 0) RETURN_IF_ERROR(cudaStatus(kAllocate(&data, bytes), "allocate"));
    return CudaMemory(data, bytes);
  }
  CudaMemory(CudaMemory&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  CudaMemory& operator=(CudaMemory&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  ~CudaMemory() {
    if (data_ != nullptr) kFree(data_);
  }

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  uint64_t bytes() const { return bytes_; }

 private:
  CudaMemory(void* data, uint64_t bytes) : data_(data), bytes_(bytes) {}
  void* data_ = nullptr;
  uint64_t bytes_ = 0;
};

inline cudaError_t mallocDevice(void** data, size_t bytes) { return cudaMalloc(data, bytes); }
inline cudaError_t mallocPinned(void** data, size_t bytes) { return cudaMallocHost(data, bytes); }
using DeviceBuffer = CudaMemory<&mallocDevice, &cudaFree>;      // device memory
using PinnedBuffer = CudaMemory<&mallocPinned, &cudaFreeHost>;  // page-locked host memory

// A non-blocking stream (no implicit synchronization with the legacy default stream).
class Stream {
 public:
  Stream() = default;
  static Result<Stream> create();
  Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept {
    std::swap(stream_, other.stream_);
    return *this;
  }
  ~Stream();
  cudaStream_t get() const { return stream_; }

 private:
  explicit Stream(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_ = nullptr;
};

// An event without timing (cheapest to record and wait on), or with it for measurements.
class Event {
 public:
  Event() = default;
  static Result<Event> create(bool timing = false);
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    std::swap(event_, other.event_);
    return *this;
  }
  ~Event();
  cudaEvent_t get() const { return event_; }

 private:
  explicit Event(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

// An instantiated CUDA graph.
class GraphExec {
 public:
  GraphExec() = default;
  // Instantiates what `stream` captured between cudaStreamBeginCapture and this call.
  static Result<GraphExec> endCapture(cudaStream_t stream);
  GraphExec(GraphExec&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  GraphExec& operator=(GraphExec&& other) noexcept {
    std::swap(exec_, other.exec_);
    return *this;
  }
  ~GraphExec();
  bool valid() const { return exec_ != nullptr; }
  cudaGraphExec_t get() const { return exec_; }

 private:
  explicit GraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  cudaGraphExec_t exec_ = nullptr;
};

// The device's name, memory and compute capability, for registration and error messages.
struct DeviceInfo {
  int index = 0;
  std::string name;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  int major = 0;
  int minor = 0;
};
// Selects `device` on the calling thread and describes it. NOT_FOUND when no such device (the
// count in the message), UNAVAILABLE when CUDA finds no driver or device at all.
Result<DeviceInfo> selectDevice(int device);

}  // namespace kvferry::engine::cuda
