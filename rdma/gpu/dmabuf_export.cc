#include "rdma/gpu/dmabuf_export.h"

#include <unistd.h>

#include <string>
#include <utility>

#if KVFERRY_HAVE_CUDA
#include <cuda.h>
#include <cuda_runtime_api.h>
#endif

namespace kvferry::rdma::gpu {

DmabufRange::DmabufRange(DmabufRange&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), offset_(other.offset_) {}

DmabufRange& DmabufRange::operator=(DmabufRange&& other) noexcept {
  std::swap(fd_, other.fd_);
  std::swap(offset_, other.offset_);
  return *this;
}

DmabufRange::~DmabufRange() {
  if (fd_ >= 0) ::close(fd_);
}

#if KVFERRY_HAVE_CUDA

namespace {

// cuMemGetHandleForAddressRange's ABI as of CUDA 11.7 (the version we ask the runtime for).
using GetHandleForAddressRange = CUresult (*)(void* handle, CUdeviceptr dptr, size_t size,
                                              CUmemRangeHandleType type, unsigned long long flags);
constexpr unsigned kGetHandleAbiVersion = 11070;

Status driverEntryPoint(GetHandleForAddressRange& out) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  cudaError_t err = cudaGetDriverEntryPointByVersion(
      "cuMemGetHandleForAddressRange", &fn, kGetHandleAbiVersion, cudaEnableDefault, &found);
  if (err != cudaSuccess) {
    return failedPrecondition(std::string("cudaGetDriverEntryPointByVersion: ") +
                              cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
  if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
    return failedPrecondition(
        "the CUDA driver has no cuMemGetHandleForAddressRange (driver older than 11.7?)");
  }
  out = reinterpret_cast<GetHandleForAddressRange>(fn);
  return Status::ok();
}

}  // namespace

Result<DmabufRange> exportDmabuf(const void* base, size_t bytes) {
  GetHandleForAddressRange get_handle = nullptr;
  RETURN_IF_ERROR(driverEntryPoint(get_handle));
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t start = reinterpret_cast<uint64_t>(base) & ~(page - 1);
  const uint64_t end = (reinterpret_cast<uint64_t>(base) + bytes + page - 1) & ~(page - 1);
  int fd = -1;
  CUresult rc = get_handle(&fd, static_cast<CUdeviceptr>(start), end - start,
                           CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
  if (rc != CUDA_SUCCESS) {
    return failedPrecondition(
        "cuMemGetHandleForAddressRange(DMA_BUF_FD, " + std::to_string(end - start) +
        " bytes): CUresult " + std::to_string(static_cast<int>(rc)) +
        (rc == CUDA_ERROR_NOT_SUPPORTED ? " (not supported: needs the open NVIDIA kernel modules)"
                                        : ""));
  }
  return DmabufRange(fd, reinterpret_cast<uint64_t>(base) - start);
}

#else

Result<DmabufRange> exportDmabuf(const void*, size_t) {
  return failedPrecondition("this build has no CUDA, so it cannot export GPU memory as dma-buf");
}

#endif

}  // namespace kvferry::rdma::gpu
