// One launch that performs a whole batch of device copies (cuda_ipc's data path): ops[i] copies
// bytes from src to dst, both device addresses (local or IPC-mapped). Each op is cut into 64 KiB
// pieces, one thread block each, copied with 16-byte accesses where source, destination and
// length allow. Only CUDA code includes this header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvferry::rdma::cuda_ipc {

struct CopyOp {
  uint64_t src = 0;
  uint64_t dst = 0;
  uint64_t bytes = 0;
};

inline constexpr uint64_t kCopyPieceBytes = 64 * 1024;

// ops: `count` CopyOps in memory the device reads (device memory, or pinned host memory: each
// thread block reads its one op); the longest op's length sets the grid's depth.
cudaError_t launchBatchCopy(const CopyOp* ops, uint32_t count, uint64_t longest_bytes,
                            cudaStream_t stream);

// The same from ops in host memory: up to kMaxInlineOps travel inside the launch's parameters
// (copied before this returns); a longer list is read by the device where it lies, so it must
// be pinned and stay untouched until the copy has run.
inline constexpr uint32_t kMaxInlineOps = 1280;
cudaError_t launchBatchCopyFromHost(const CopyOp* host_ops, uint32_t count, uint64_t longest_bytes,
                                    cudaStream_t stream);

// A uniform batch — every op copies the same `bytes` from one span to another, a layer's blocks
// between two pools — travels in 8 bytes an op instead of 24: two offsets, in 16-byte units, from
// `src_base` and `dst_base`. Bases, offsets and `bytes` are multiples of 16. Up to
// kMaxUniformOps ops go inside the launch's parameters (copied before this returns; `ops` may
// live anywhere in host memory), so the launch carries a third of what a CopyOp list would.
struct UniformOp {
  uint32_t src = 0;
  uint32_t dst = 0;
};
inline constexpr uint64_t kUniformUnit = 16;
inline constexpr uint32_t kMaxUniformOps = 2048;
cudaError_t launchUniformBatchCopy(uint64_t src_base, uint64_t dst_base, uint64_t bytes,
                                   const UniformOp* ops, uint32_t count, cudaStream_t stream);

}  // namespace kvferry::rdma::cuda_ipc
