#include "node_agent/engine/cuda/kv_digest.h"
#include "node_agent/engine/kv_digest.h"

namespace kvferry::engine::cuda {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kWarps = kThreads / 32;

// One thread block per (block id, pool): thread t adds the terms of words t, t + 256, … (a warp
// reads 256 consecutive bytes at a time), then the warps' sums meet in shared memory. The sum's
// order differs from the CPU's; a sum modulo 2^64 does not care.
__global__ void __launch_bounds__(kThreads)
    blockDigestKernel(const uint8_t* const* pools, const uint32_t* ids, uint32_t count,
                      uint64_t block_bytes, uint64_t* out) {
  const uint32_t i = blockIdx.x;
  const uint32_t pool = blockIdx.y;
  const auto* words =
      reinterpret_cast<const uint64_t*>(pools[pool] + uint64_t{ids[i]} * block_bytes);
  const uint64_t n = block_bytes / kDigestWordBytes;
  uint64_t sum = 0;
  for (uint64_t w = threadIdx.x; w < n; w += kThreads) sum += digestTerm(words[w], w);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  __shared__ uint64_t warp_sums[kWarps];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x != 0) return;
  uint64_t total = 0;
  for (unsigned warp = 0; warp < kWarps; ++warp) total += warp_sums[warp];
  out[uint64_t{pool} * count + i] = digestFinish(total, block_bytes);
}

}  // namespace

cudaError_t launchBlockDigests(const uint8_t* const* pools, uint32_t pool_count,
                               const uint32_t* ids, uint32_t count, uint64_t block_bytes,
                               uint64_t* out, cudaStream_t stream) {
  if (pool_count == 0 || count == 0) return cudaSuccess;
  if (pool_count > 65535) return cudaErrorInvalidValue;
  blockDigestKernel<<<dim3(count, pool_count), kThreads, 0, stream>>>(pools, ids, count,
                                                                      block_bytes, out);
  return cudaGetLastError();
}

}  // namespace kvferry::engine::cuda
