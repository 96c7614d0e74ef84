// tcp from GPU memory, the CUDA side behind an interface: a StagingCopier owns an arena of pinned
// host memory and moves bytes between it and device memory, one batched copy per call. The tcp
// transport stages CUDA regions through it (staging_ring.h); cuda_staging_copier.cc is the CUDA
// implementation, tests use a host-memory fake, so CPU CI runs the same staging logic.
// No CUDA header here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "common/status.h"

namespace kvferry::rdma::tcp_backend {

// One contiguous copy of a batched copy.
struct CopyPiece {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};

enum class CopyDirection { kDeviceToHost, kHostToDevice };

// Told when a batched copy has completed. `copied()` may run on any thread (a CUDA callback
// thread), so it must only hand the news over to the owner's thread.
class CopyDone {
 public:
  virtual void copied() = 0;

 protected:
  ~CopyDone() = default;
};

// Owns the pinned arena and whatever the copies need (CUDA: one stream). Calls are made on the
// transport's progress thread. The destructor waits for copies in flight (their CopyDone is
// still told) and then frees everything.
class StagingCopier {
 public:
  virtual ~StagingCopier() = default;

  // The pinned host memory staging chunks are cut from; fixed for the copier's life.
  virtual std::span<uint8_t> arena() = 0;
  // Enqueues `pieces` (all in `direction`) as one batched copy; `done` is told once all of them
  // have completed and must outlive that. An error means nothing was enqueued.
  virtual Status copy(std::span<const CopyPiece> pieces, CopyDirection direction,
                      CopyDone& done) = 0;
};

// Makes the copier for GPU `device` with an arena of `arena_bytes`.
using CopierFactory =
    std::function<Result<std::unique_ptr<StagingCopier>>(int device, size_t arena_bytes)>;

}  // namespace kvferry::rdma::tcp_backend
