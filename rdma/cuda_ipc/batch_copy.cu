#include <cuda_runtime.h>

#include "rdma/cuda_ipc/batch_copy.h"

namespace kvferry::rdma::cuda_ipc {
namespace {

constexpr unsigned kThreads = 256;

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
    for (uint64_t i = threadIdx.x; i < vectors; i += kThreads) d[i] = __ldcs(s + i);
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
