#include <cuda_runtime.h>

#include <cstring>
#include <type_traits>

#include "rdma/cuda_ipc/batch_copy.h"

namespace kvferry::rdma::cuda_ipc {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kUnroll = 8;  // a 32 KiB op is one round: 8 × 16 bytes per thread

// One thread block copies one 64 KiB piece (blockIdx.y) of one op.
__device__ __forceinline__ void copyPiece(const CopyOp& op) {
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

__global__ void __launch_bounds__(kThreads) batchCopyKernel(const CopyOp* ops) {
  copyPiece(ops[blockIdx.x]);
}

// The ops inside the launch's parameters: no block waits on a read of the op list (from pinned
// host memory, a PCIe round trip of a microsecond or two) before its first load.
// (Plain words: a CopyOp array would be zeroed on every launch, the unused tail included.)
template <uint32_t kOps>
struct InlineOps {
  uint64_t words[3 * kOps];  // src, dst, bytes of each op
};
static_assert(sizeof(CopyOp) == 3 * sizeof(uint64_t));
template <uint32_t kOps>
__global__ void __launch_bounds__(kThreads)
    inlineBatchCopyKernel(const __grid_constant__ InlineOps<kOps> list) {
  const uint64_t* op = list.words + 3 * blockIdx.x;
  copyPiece(CopyOp{op[0], op[1], op[2]});
}
static_assert(sizeof(InlineOps<kMaxInlineOps>) <= 32764, "a launch's parameters hold 32,764 bytes");

dim3 gridFor(uint32_t count, uint64_t longest_bytes) {
  const uint64_t pieces = (longest_bytes + kCopyPieceBytes - 1) / kCopyPieceBytes;
  return dim3(count, static_cast<unsigned>(pieces == 0 ? 1 : pieces));
}

// Calls `launch` with std::integral_constant<uint32_t, N> for the smallest N of kOps, 2 kOps,
// 4 kOps, … kMax that holds `count` ops: a launch copies its whole parameter block, so the
// block should be no larger than the batch needs.
template <uint32_t kOps, uint32_t kMax, typename Launch>
cudaError_t withSmallestBlock(uint32_t count, Launch&& launch) {
  static_assert(kOps <= kMax && kMax % kOps == 0, "the sizes double from kOps to kMax");
  if constexpr (kOps < kMax) {
    if (count > kOps) return withSmallestBlock<kOps * 2, kMax>(count, launch);
  }
  return launch(std::integral_constant<uint32_t, kOps>{});
}

// A uniform batch inside the launch's parameters (see UniformOp).
template <uint32_t kOps>
struct UniformOps {
  uint64_t src_base;
  uint64_t dst_base;
  uint64_t bytes;
  UniformOp ops[kOps];
};
static_assert(sizeof(UniformOps<kMaxUniformOps>) <= 32764,
              "a launch's parameters hold 32,764 bytes");
template <uint32_t kOps>
__global__ void __launch_bounds__(kThreads)
    uniformBatchCopyKernel(const __grid_constant__ UniformOps<kOps> list) {
  const UniformOp op = list.ops[blockIdx.x];
  copyPiece(CopyOp{list.src_base + uint64_t{op.src} * kUniformUnit,
                   list.dst_base + uint64_t{op.dst} * kUniformUnit, list.bytes});
}

}  // namespace

cudaError_t launchUniformBatchCopy(uint64_t src_base, uint64_t dst_base, uint64_t bytes,
                                   const UniformOp* ops, uint32_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (count > kMaxUniformOps) return cudaErrorInvalidValue;
  // 16, 32, … 2,048 ops.
  return withSmallestBlock<16, kMaxUniformOps>(count, [&](auto block) {
    constexpr uint32_t kOps = decltype(block)::value;
    UniformOps<kOps> list;
    list.src_base = src_base;
    list.dst_base = dst_base;
    list.bytes = bytes;
    std::memcpy(list.ops, ops, count * sizeof(UniformOp));
    uniformBatchCopyKernel<kOps><<<gridFor(count, bytes), kThreads, 0, stream>>>(list);
    return cudaGetLastError();
  });
}

cudaError_t launchBatchCopy(const CopyOp* ops, uint32_t count, uint64_t longest_bytes,
                            cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  batchCopyKernel<<<gridFor(count, longest_bytes), kThreads, 0, stream>>>(ops);
  return cudaGetLastError();
}

cudaError_t launchBatchCopyFromHost(const CopyOp* host_ops, uint32_t count, uint64_t longest_bytes,
                                    cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (count > kMaxInlineOps) return launchBatchCopy(host_ops, count, longest_bytes, stream);
  // 10, 20, … 1,280 ops.
  return withSmallestBlock<10, kMaxInlineOps>(count, [&](auto block) {
    constexpr uint32_t kOps = decltype(block)::value;
    InlineOps<kOps> list;
    std::memcpy(list.words, host_ops, count * sizeof(CopyOp));
    inlineBatchCopyKernel<kOps><<<gridFor(count, longest_bytes), kThreads, 0, stream>>>(list);
    return cudaGetLastError();
  });
}

}  // namespace kvferry::rdma::cuda_ipc
