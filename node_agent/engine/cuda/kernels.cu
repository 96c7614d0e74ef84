#include <cuda_runtime.h>

#include "node_agent/engine/cuda/kernels.h"
#include "node_agent/engine/cuda/launch.cuh"

namespace kvferry::engine::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float toFloat(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 toBf16(float x) { return __float2bfloat16_rn(x); }
// Rounds through bfloat16, as a bfloat16 tensor between two operations does.
__device__ __forceinline__ float roundBf16(float x) { return toFloat(toBf16(x)); }

__device__ __forceinline__ float warpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float blockSum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  v = warpSum(v);
  const unsigned warp = threadIdx.x / 32;
  const unsigned lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < blockDim.x / 32 ? partial[lane] : 0.0f;
    s = warpSum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

__global__ void embedKernel(const int32_t* tokens, const bf16* table, uint32_t dim, bf16* out) {
  waitForPrerequisites();
  const uint32_t t = blockIdx.x;
  const bf16* row = table + static_cast<uint64_t>(tokens[t]) * dim;
  bf16* dst = out + static_cast<uint64_t>(t) * dim;
  for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = row[i];
}

// Eight bfloat16 in one 16-byte load or store.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 v[4];
  __device__ float at(uint32_t j) const {
    return j % 2 == 0 ? __low2float(v[j / 2]) : __high2float(v[j / 2]);
  }
  __device__ void set(uint32_t j, float value) {
    if (j % 2 == 0) {
      v[j / 2].x = toBf16(value);
    } else {
      v[j / 2].y = toBf16(value);
    }
  }
};
__device__ __forceinline__ Bf16x8 asBf16x8(uint4 raw) {
  Bf16x8 out;
  static_assert(sizeof(out) == sizeof(raw));
  memcpy(&out, &raw, sizeof(raw));
  return out;
}
__device__ __forceinline__ Bf16x8 load8(const bf16* p) {
  return asBf16x8(*reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ void store8(bf16* p, const Bf16x8& value) {
  *reinterpret_cast<Bf16x8*>(p) = value;
}
// Whether every pointer is 16-byte aligned (rows of a multiple of 8 elements from aligned bases).
__device__ __forceinline__ bool aligned16(const void* a, const void* b, const void* c,
                                          const void* d) {
  return ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
           reinterpret_cast<uintptr_t>(c) | reinterpret_cast<uintptr_t>(d)) &
          15) == 0;
}

// One block per row. x is read twice (the second time from L1/L2): rows are at most a few
// thousand elements. Rows of a multiple of 8 elements move in 16-byte pieces, others one value
// at a time; each value is rounded the same way either way.
__device__ void normRow(bf16* x, const bf16* add, bool write_back, const bf16* weight, uint32_t dim,
                        float eps, bf16* out) {
  const bool vectors = dim % 8 == 0 && aligned16(x, add, weight, out);
  float squares = 0.0f;
  if (vectors) {
    for (uint32_t i = threadIdx.x * 8; i < dim; i += blockDim.x * 8) {
      Bf16x8 v = load8(x + i);
      if (add != nullptr) {
        const Bf16x8 a = load8(add + i);
#pragma unroll
        for (uint32_t j = 0; j < 8; ++j) v.set(j, v.at(j) + a.at(j));  // bfloat16 residual
        if (write_back) store8(x + i, v);
      }
#pragma unroll
      for (uint32_t j = 0; j < 8; ++j) squares += v.at(j) * v.at(j);
    }
  } else {
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = toFloat(x[i]);
      if (add != nullptr) {
        v = roundBf16(v + toFloat(add[i]));  // the residual stream is bfloat16
        if (write_back) x[i] = toBf16(v);
      }
      squares += v * v;
    }
  }
  const float scale = rsqrtf(blockSum(squares) / static_cast<float>(dim) + eps);
  if (vectors) {
    for (uint32_t i = threadIdx.x * 8; i < dim; i += blockDim.x * 8) {
      Bf16x8 v = load8(x + i);
      if (add != nullptr && !write_back) {
        const Bf16x8 a = load8(add + i);
#pragma unroll
        for (uint32_t j = 0; j < 8; ++j) v.set(j, v.at(j) + a.at(j));
      }
      const Bf16x8 w = load8(weight + i);
      Bf16x8 o;
#pragma unroll
      for (uint32_t j = 0; j < 8; ++j) o.set(j, w.at(j) * roundBf16(v.at(j) * scale));
      store8(out + i, o);
    }
    return;
  }
  for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = toFloat(x[i]);
    if (add != nullptr && !write_back) v = roundBf16(v + toFloat(add[i]));
    out[i] = toBf16(toFloat(weight[i]) * roundBf16(v * scale));
  }
}

__global__ void rmsNormKernel(bf16* x, const bf16* add, const bf16* weight, uint32_t dim, float eps,
                              bf16* out) {
  waitForPrerequisites();
  const uint64_t row = blockIdx.x;
  normRow(x + row * dim, add == nullptr ? nullptr : add + row * dim, true, weight, dim, eps,
          out + row * dim);
}

__global__ void gatherRmsNormKernel(const bf16* x, const bf16* add, const int32_t* rows,
                                    const bf16* weight, uint32_t dim, float eps, bf16* out) {
  waitForPrerequisites();
  const uint64_t row = static_cast<uint64_t>(rows[blockIdx.x]);
  // x is not written: write_back false keeps the residual stream unchanged.
  normRow(const_cast<bf16*>(x) + row * dim, add + row * dim, false, weight, dim, eps,
          out + static_cast<uint64_t>(blockIdx.x) * dim);
}

// silu(gate) rounded to bfloat16, times up, as transformers' bfloat16 MLP computes it.
__device__ __forceinline__ float siluMul(float g, float u) {
  return roundBf16(g / (1.0f + expf(-g))) * u;
}

// Rows of a multiple of 8 elements move in 16-byte pieces (the gate and up halves of a row are
// then 16-byte aligned), others one value at a time.
__global__ void siluMulKernel(const bf16* gate_up, uint32_t ff, bf16* out) {
  waitForPrerequisites();
  const uint64_t row = blockIdx.y;
  const bf16* gate = gate_up + row * 2 * ff;
  const bf16* up = gate + ff;
  bf16* dst = out + row * ff;
  const uint32_t stride = gridDim.x * blockDim.x;
  if (ff % 8 == 0 && aligned16(gate_up, out, gate_up, out)) {
    for (uint32_t i = (blockIdx.x * blockDim.x + threadIdx.x) * 8; i < ff; i += stride * 8) {
      const Bf16x8 g = load8(gate + i);
      const Bf16x8 u = load8(up + i);
      Bf16x8 o;
#pragma unroll
      for (uint32_t j = 0; j < 8; ++j) o.set(j, siluMul(g.at(j), u.at(j)));
      store8(dst + i, o);
    }
    return;
  }
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < ff; i += stride) {
    dst[i] = toBf16(siluMul(toFloat(gate[i]), toFloat(up[i])));
  }
}

// One warp per (token, head); lanes over pairs. Reads the projection's row, writes q or the
// pools.
__global__ void qkvRopeStoreKernel(const bf16* qkv, QkvParams p, bf16* q_out, bf16* key_pool,
                                   bf16* value_pool) {
  waitForPrerequisites();
  const uint32_t t = blockIdx.x;
  const uint32_t warp = threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  const uint32_t warps = blockDim.x / 32;
  const uint32_t hd = p.head_dim;
  const uint32_t q_dim = p.heads * hd;
  const uint32_t kv_dim = p.kv_heads * hd;
  const uint64_t row = static_cast<uint64_t>(t) * (q_dim + 2 * kv_dim);
  const float position = static_cast<float>(p.positions[t]);
  const uint64_t slot = static_cast<uint64_t>(p.slots[t]) * kv_dim;
  const uint32_t half = p.rope_dims / 2;

  // Heads 0..heads-1 are queries, then kv_heads keys, then kv_heads values.
  for (uint32_t h = warp; h < p.heads + 2 * p.kv_heads; h += warps) {
    const bool is_q = h < p.heads;
    const bool is_v = h >= p.heads + p.kv_heads;
    const uint32_t col = h * hd;  // offset in the fused row
    const bf16* norm = is_q ? p.q_norm : (is_v ? nullptr : p.k_norm);
    bf16* dst = is_q ? q_out + static_cast<uint64_t>(t) * q_dim + col
                     : (is_v ? value_pool + slot + (col - q_dim - kv_dim)
                             : key_pool + slot + (col - q_dim));
    const auto load = [&](uint32_t d) {
      float v = toFloat(qkv[row + col + d]);
      if (p.bias != nullptr) v = roundBf16(v + toFloat(p.bias[col + d]));
      return v;
    };
    float scale = 1.0f;
    if (norm != nullptr) {
      float squares = 0.0f;
      for (uint32_t d = lane; d < hd; d += 32) {
        const float v = load(d);
        squares += v * v;
      }
      scale = rsqrtf(warpSum(squares) / static_cast<float>(hd) + p.eps);
    }
    const auto value = [&](uint32_t d) {
      const float v = load(d);
      return norm == nullptr ? v : roundBf16(toFloat(norm[d]) * roundBf16(v * scale));
    };
    if (is_v) {
      for (uint32_t d = lane; d < hd; d += 32) dst[d] = toBf16(value(d));
      continue;
    }
    for (uint32_t k = lane; k < half; k += 32) {
      const uint32_t i0 = p.rope_neox ? k : 2 * k;
      const uint32_t i1 = p.rope_neox ? k + half : 2 * k + 1;
      const float angle = position * p.inv_freq[k];
      const float c = roundBf16(cosf(angle));
      const float s = roundBf16(sinf(angle));
      const float x0 = value(i0);
      const float x1 = value(i1);
      dst[i0] = toBf16(roundBf16(x0 * c) + roundBf16(-x1 * s));
      dst[i1] = toBf16(roundBf16(x1 * c) + roundBf16(x0 * s));
    }
    for (uint32_t d = p.rope_dims + lane; d < hd; d += 32) dst[d] = toBf16(value(d));
  }
}

template <typename Out>
__device__ __forceinline__ void storeOut(Out* y, float v);
template <>
__device__ __forceinline__ void storeOut<bf16>(bf16* y, float v) {
  *y = toBf16(v);
}
template <>
__device__ __forceinline__ void storeOut<float>(float* y, float v) {
  *y = v;
}

// One warp per row of W; each lane reads 16 bytes of the row per step, several steps in flight.
template <uint32_t kTokens, typename Out>
__global__ void __launch_bounds__(256)
    gemvKernel(const bf16* w, uint32_t rows, uint32_t cols, const bf16* x, Out* y) {
  waitForPrerequisites();
  const uint32_t lane = threadIdx.x % 32;
  const uint64_t r = static_cast<uint64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const uint4* wrow = reinterpret_cast<const uint4*>(w + r * cols);
  const uint32_t vectors = cols / 8;
  float acc[kTokens];
#pragma unroll
  for (uint32_t t = 0; t < kTokens; ++t) acc[t] = 0.0f;
  constexpr uint32_t kUnroll = 4;
  uint32_t i = lane;
  for (; i + 32 * (kUnroll - 1) < vectors; i += 32 * kUnroll) {
    Bf16x8 wv[kUnroll];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) wv[u] = asBf16x8(__ldcs(wrow + i + 32 * u));  // once
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (uint32_t t = 0; t < kTokens; ++t) {
        const Bf16x8 xv =
            asBf16x8(__ldg(reinterpret_cast<const uint4*>(x + t * cols) + i + 32 * u));
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 a = __bfloat1622float2(wv[u].v[j]);
          const float2 b = __bfloat1622float2(xv.v[j]);
          acc[t] += a.x * b.x + a.y * b.y;
        }
      }
    }
  }
  for (; i < vectors; i += 32) {
    const Bf16x8 wv = asBf16x8(__ldcs(wrow + i));
#pragma unroll
    for (uint32_t t = 0; t < kTokens; ++t) {
      const Bf16x8 xv = asBf16x8(__ldg(reinterpret_cast<const uint4*>(x + t * cols) + i));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(wv.v[j]);
        const float2 b = __bfloat1622float2(xv.v[j]);
        acc[t] += a.x * b.x + a.y * b.y;
      }
    }
  }
#pragma unroll
  for (uint32_t t = 0; t < kTokens; ++t) {
    const float sum = warpSum(acc[t]);
    if (lane == 0) storeOut(y + t * rows + r, sum);
  }
}

template <typename Out>
cudaError_t gemv(const bf16* w, uint32_t rows, uint32_t cols, const bf16* x, uint32_t tokens,
                 Out* y, cudaStream_t stream) {
  if (cols % 8 != 0 || tokens == 0 || tokens > kGemvMaxTokens) return cudaErrorInvalidValue;
  constexpr uint32_t kThreads = 256;
  const dim3 grid((rows + kThreads / 32 - 1) / (kThreads / 32));
  switch (tokens) {
#define KVF_GEMV_CASE_(n)                                                                         \
  case n:                                                                                         \
    return launchDependent(gemvKernel<n, Out>, grid, dim3(kThreads), 0, stream, w, rows, cols, x, \
                           y);
    KVF_GEMV_CASE_(1)
    KVF_GEMV_CASE_(2)
    KVF_GEMV_CASE_(3)
    KVF_GEMV_CASE_(4)
    KVF_GEMV_CASE_(5)
    KVF_GEMV_CASE_(6)
    KVF_GEMV_CASE_(7)
    KVF_GEMV_CASE_(8)
#undef KVF_GEMV_CASE_
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

__global__ void toBf16Kernel(const float* in, uint64_t count, bf16* out) {
  waitForPrerequisites();
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    out[i] = toBf16(in[i]);
  }
}

// Threads for one row: about a 16-byte piece each where the row allows (normRow), else four
// values each.
unsigned normThreads(uint32_t dim) {
  const uint32_t per_thread = dim % 8 == 0 ? 8 : 4;
  unsigned threads = 32;
  while (threads < 1024 && threads < dim / per_thread) threads *= 2;
  return threads;
}

}  // namespace

cudaError_t launchEmbed(const int32_t* tokens, uint32_t count, const bf16* table, uint32_t dim,
                        bf16* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return launchDependent(embedKernel, dim3(count), dim3(256), 0, stream, tokens, table, dim, out);
}

cudaError_t launchRmsNorm(bf16* x, const bf16* add, const bf16* weight, uint32_t rows, uint32_t dim,
                          float eps, bf16* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launchDependent(rmsNormKernel, dim3(rows), dim3(normThreads(dim)), 0, stream, x, add,
                         weight, dim, eps, out);
}

cudaError_t launchGatherRmsNorm(const bf16* x, const bf16* add, const int32_t* rows, uint32_t count,
                                const bf16* weight, uint32_t dim, float eps, bf16* out,
                                cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return launchDependent(gatherRmsNormKernel, dim3(count), dim3(normThreads(dim)), 0, stream, x,
                         add, rows, weight, dim, eps, out);
}

cudaError_t launchSiluMul(const bf16* gate_up, uint32_t rows, uint32_t ff, bf16* out,
                          cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  // A thread per 8 values where rows allow it (the kernel falls back to one per value).
  const uint32_t per_thread = ff % 8 == 0 ? 8 : 1;
  const dim3 grid((ff / per_thread + 255) / 256, rows);
  return launchDependent(siluMulKernel, grid, dim3(256), 0, stream, gate_up, ff, out);
}

cudaError_t launchQkvRopeStore(const bf16* qkv, const QkvParams& params, bf16* q, bf16* key_pool,
                               bf16* value_pool, cudaStream_t stream) {
  if (params.tokens == 0) return cudaSuccess;
  if (params.rope_dims % 2 != 0 || params.rope_dims > params.head_dim) {
    return cudaErrorInvalidValue;
  }
  return launchDependent(qkvRopeStoreKernel, dim3(params.tokens), dim3(256), 0, stream, qkv, params,
                         q, key_pool, value_pool);
}

cudaError_t launchGemv(const bf16* w, uint32_t rows, uint32_t cols, const bf16* x, uint32_t tokens,
                       bf16* y, cudaStream_t stream) {
  return gemv(w, rows, cols, x, tokens, y, stream);
}

cudaError_t launchGemvF32(const bf16* w, uint32_t rows, uint32_t cols, const bf16* x,
                          uint32_t tokens, float* y, cudaStream_t stream) {
  return gemv(w, rows, cols, x, tokens, y, stream);
}

cudaError_t launchToBf16(const float* in, uint64_t count, bf16* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const uint64_t blocks = (count + 255) / 256;
  toBf16Kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(
      in, count, out);
  return cudaGetLastError();
}

}  // namespace kvferry::engine::cuda
