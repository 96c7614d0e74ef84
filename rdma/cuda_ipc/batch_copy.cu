#include <cuda_runtime.h>

#include "rdma/cuda_ipc/batch_copy.h"

namespace kvferry::rdma::cuda_ipc {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kUnroll = 8;  // a 32 KiB op is one round: 8 × 16 bytes per thread

__global__ void __launch_bounds__(kThreads) batchCopyKernel(const CopyOp* ops) {
  const CopyOp op = ops[blockIdx.x];
  const uint64_t begin = static_cast<uint64_t>(blockIdx.y) * kCopyPieceBytes;
  if (begin >= op.bytes) return;
  const uint64_t end = begin + kCopyPieceBytes < op.bytes ? begin + kCopyPieceBytes : op.bytes;
  const auto* src = reinterpret_cast<const unsigned char*>(op.src);
  auto* dst = reinterpret_cast<unsigned char*>(op.dst);
  if (((op.src | op.dst | begin | end) & 15) == 0) {
    const auto* s = reinterpret_cast<const uint4*>(src + begin);
    auto* d = reinterpret_cast<uint4*>(dst + begin);
    const uint64_t vectors = (end - begin) / 16;
    // Up to kUnroll loads in flight per thread before their stores (a plain loop has one: the
    // compiler cannot move a load above the previous store, the two might alias).
    for (uint64_t first = threadIdx.x; first < vectors; first += kUnroll * kThreads) {
      uint4 v[kUnroll];
#pragma unroll
      for (unsigned u = 0; u < kUnroll; ++u) {
        if (first + u * kThreads < vectors) v[u] = __ldcs(s + first + u * kThreads);
      }
#pragma unroll
      for (unsigned u = 0; u < kUnroll; ++u) {
        if (first + u * kThreads < vectors) d[first + u * kThreads] = v[u];
      }
    }
    return;
  }
  for (uint64_t i = begin + threadIdx.x; i < end; i += kThreads) dst[i] = src[i];
}

}  // namespace

cudaError_t launchBatchCopy(const CopyOp* ops, uint32_t count, uint64_t longest_bytes,
                            cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const uint64_t pieces = (longest_bytes + kCopyPieceBytes - 1) / kCopyPieceBytes;
  const dim3 grid(count, static_cast<unsigned>(pieces == 0 ? 1 : pieces));
  batchCopyKernel<<<grid, kThreads, 0, stream>>>(ops);
  return cudaGetLastError();
}

}  // namespace kvferry::rdma::cuda_ipc
