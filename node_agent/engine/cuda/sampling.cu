#include <cuda_runtime.h>

#include <cmath>

#include "node_agent/engine/cuda/launch.cuh"
#include "node_agent/engine/cuda/sampling.h"

namespace kvferry::engine::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr uint32_t kThreads = 1024;
constexpr uint32_t kWarps = kThreads / 32;
constexpr float kFixedOne = 1099511627776.0f;  // 2^40: p ≤ 1, so a vocabulary's sum fits in 64 bits

struct Best {
  float value;
  uint32_t index;
};

__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

__device__ __forceinline__ float weightOf(float logit, float max_logit, float temperature) {
  return expf((logit - max_logit) / temperature);
}
__device__ __forceinline__ uint64_t massOf(float weight) {
  return static_cast<uint64_t>(weight * kFixedOne);
}

__device__ uint64_t blockSumU64(uint64_t v, uint64_t* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  uint64_t total = 0;
  for (uint32_t w = 0; w < kWarps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__global__ void __launch_bounds__(kThreads)
    sampleKernel(const float* logits, uint32_t vocab, const DeviceDraw* draws, int32_t* tokens) {
  __shared__ Best warp_best[kWarps];
  __shared__ uint64_t scratch[kWarps];
  __shared__ unsigned long long histogram[256];
  __shared__ uint32_t chosen;
  __shared__ uint32_t threshold_shared;
  __shared__ uint64_t above_shared;

  waitForPrerequisites();
  const uint32_t tid = threadIdx.x;
  const uint32_t lane = tid % 32;
  const float* row = logits + static_cast<uint64_t>(blockIdx.x) * vocab;
  const DeviceDraw draw = draws[blockIdx.x];

  Best best{-INFINITY, 0xffffffffu};
  for (uint32_t i = tid; i < vocab; i += kThreads) {
    const float v = row[i];
    if (v > best.value) best = {v, i};  // NaN never compares greater
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const Best other{__shfl_xor_sync(kFullMask, best.value, offset),
                     __shfl_xor_sync(kFullMask, best.index, offset)};
    best = better(best, other);
  }
  if (lane == 0) warp_best[tid / 32] = best;
  __syncthreads();
  if (tid == 0) {
    Best all = warp_best[0];
    for (uint32_t w = 1; w < kWarps; ++w) all = better(all, warp_best[w]);
    chosen = all.index == 0xffffffffu ? 0 : all.index;
    warp_best[0] = all;
  }
  __syncthreads();
  const float max_logit = warp_best[0].value;
  if (draw.temperature == 0.0f || !(max_logit > -INFINITY)) {
    if (tid == 0) tokens[blockIdx.x] = static_cast<int32_t>(chosen);
    return;
  }
  const float temperature = draw.temperature;

  // top_p: the largest weight threshold whose kept mass reaches top_p · total, 8 bits at a time.
  uint32_t threshold = 0;
  if (draw.top_p < 1.0f) {
    uint64_t local = 0;
    for (uint32_t i = tid; i < vocab; i += kThreads) {
      local += massOf(weightOf(row[i], max_logit, temperature));
    }
    const uint64_t total = blockSumU64(local, scratch);
    uint64_t target = static_cast<uint64_t>(ceil(static_cast<double>(draw.top_p) * total));
    if (target == 0) target = 1;
    uint32_t prefix = 0;
    uint64_t above = 0;
    for (int level = 0; level < 4; ++level) {
      const int shift = 24 - 8 * level;
      for (uint32_t b = tid; b < 256; b += kThreads) histogram[b] = 0;
      __syncthreads();
      for (uint32_t i = tid; i < vocab; i += kThreads) {
        const float weight = weightOf(row[i], max_logit, temperature);
        const uint32_t bits = __float_as_uint(weight);
        const bool matches = level == 0 || (bits >> (shift + 8)) == (prefix >> (shift + 8));
        if (matches) atomicAdd(&histogram[(bits >> shift) & 255u], massOf(weight));
      }
      __syncthreads();
      if (tid == 0) {
        uint64_t cumulative = above;
        uint32_t digit = 0;
        for (int b = 255; b >= 0; --b) {
          if (cumulative + histogram[b] >= target) {
            digit = static_cast<uint32_t>(b);
            break;
          }
          cumulative += histogram[b];
        }
        above_shared = cumulative;
        threshold_shared = prefix | (digit << shift);
      }
      __syncthreads();
      prefix = threshold_shared;
      above = above_shared;
    }
    threshold = prefix;
  }

  // The draw, in id order: thread j owns tokens [j·span, (j+1)·span).
  const uint32_t span = (vocab + kThreads - 1) / kThreads;
  const uint32_t begin = min(vocab, tid * span);
  const uint32_t end = min(vocab, begin + span);
  uint64_t local = 0;
  for (uint32_t i = begin; i < end; ++i) {
    const float weight = weightOf(row[i], max_logit, temperature);
    if (__float_as_uint(weight) >= threshold) local += massOf(weight);
  }
  // Exclusive prefix sum over the block.
  uint64_t inclusive = local;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const uint64_t v = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= static_cast<uint32_t>(offset)) inclusive += v;
  }
  if (lane == 31) scratch[tid / 32] = inclusive;
  __syncthreads();
  uint64_t warp_offset = 0;
  uint64_t kept = 0;
  for (uint32_t w = 0; w < kWarps; ++w) {
    if (w < tid / 32) warp_offset += scratch[w];
    kept += scratch[w];
  }
  const uint64_t exclusive = warp_offset + inclusive - local;
  if (kept > 0) {
    double scaled = static_cast<double>(draw.uniform) * static_cast<double>(kept);
    uint64_t target = static_cast<uint64_t>(scaled);
    if (target >= kept) target = kept - 1;
    if (exclusive <= target && target < exclusive + local) {
      uint64_t cumulative = exclusive;
      for (uint32_t i = begin; i < end; ++i) {
        const float weight = weightOf(row[i], max_logit, temperature);
        if (__float_as_uint(weight) < threshold) continue;
        cumulative += massOf(weight);
        if (target < cumulative) {
          chosen = i;
          break;
        }
      }
    }
  }
  __syncthreads();
  if (tid == 0) tokens[blockIdx.x] = static_cast<int32_t>(chosen);
}

}  // namespace

cudaError_t launchSample(const float* logits, uint32_t vocab, const DeviceDraw* draws,
                         uint32_t sequences, int32_t* tokens, cudaStream_t stream) {
  if (sequences == 0) return cudaSuccess;
  return launchDependent(sampleKernel, dim3(sequences), dim3(kThreads), 0, stream, logits, vocab,
                         draws, tokens);
}

}  // namespace kvferry::engine::cuda
