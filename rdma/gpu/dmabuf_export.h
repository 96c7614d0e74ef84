// A dma-buf file descriptor for a range of CUDA device memory, for ibv_reg_dmabuf_mr. The CUDA
// driver's cuMemGetHandleForAddressRange is found through cudaGetDriverEntryPointByVersion, so
// nothing links libcuda directly. No CUDA header here; a build without CUDA gets a stub that
// says so.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace kvferry::rdma::gpu {

// The exported range covers [base, base + bytes) rounded out to host pages (the driver wants
// page-aligned ranges); `offset` is where `base` lies in it. Owns the descriptor. Move-only.
class DmabufRange {
 public:
  DmabufRange() = default;
  DmabufRange(int fd, uint64_t offset) : fd_(fd), offset_(offset) {}
  DmabufRange(DmabufRange&& other) noexcept;
  DmabufRange& operator=(DmabufRange&& other) noexcept;
  ~DmabufRange();

  int fd() const { return fd_; }
  uint64_t offset() const { return offset_; }

 private:
  int fd_ = -1;
  uint64_t offset_ = 0;
};

// FAILED_PRECONDITION naming the step that failed (no CUDA in this build, no driver entry point,
// the driver's error for this range).
Result<DmabufRange> exportDmabuf(const void* base, size_t bytes);

}  // namespace kvferry::rdma::gpu
