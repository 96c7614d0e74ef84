// The CUDA StagingCopier (staging_copier.h): a pinned arena (cudaHostAlloc), one non-blocking
// stream on the region's GPU, one cudaMemcpyBatchAsync per chunk (a cudaMemcpyAsync per piece
// where the batched call is unavailable), completions through cudaLaunchHostFunc. Built with
// CUDA only; no CUDA header here.
#pragma once

#include <cstddef>
#include <memory>

#include "common/status.h"
#include "rdma/tcp/staging_copier.h"

namespace kvferry::rdma::tcp_backend {

Result<std::unique_ptr<StagingCopier>> makeCudaStagingCopier(int device, size_t arena_bytes);

}  // namespace kvferry::rdma::tcp_backend
