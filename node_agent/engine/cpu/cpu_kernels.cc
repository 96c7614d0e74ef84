#include "node_agent/engine/cpu/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

// Inner loops must be inlined into the ISA-specific entry points to be compiled for that ISA,
// and their tiny fixed loops unrolled so the accumulators stay in registers (GCC does neither
// on its own at -O2).
#define KVF_ALWAYS_INLINE inline __attribute__((always_inline))
#define KVF_UNROLL _Pragma("GCC unroll 8")

namespace kvferry::engine::cpu {
namespace {

using Vec4 = float __attribute__((vector_size(16)));

// Operations on 8 float lanes. Vectors travel by reference only: a 32-byte vector passed by
// value changes the ABI without AVX (GCC's -Wpsabi).
struct BaselineLanes {
  struct V {
    Vec4 lo;
    Vec4 hi;
  };
  static KVF_ALWAYS_INLINE void zero(V& v) { v.lo = v.hi = Vec4{}; }
  static KVF_ALWAYS_INLINE void load(V& v, const float* p) {
    std::memcpy(&v.lo, p, sizeof(Vec4));
    std::memcpy(&v.hi, p + 4, sizeof(Vec4));
  }
  static KVF_ALWAYS_INLINE void madd(V& acc, const V& a, const V& b) {
    acc.lo += a.lo * b.lo;
    acc.hi += a.hi * b.hi;
  }
  static KVF_ALWAYS_INLINE float reduce(const V& v) {
    const Vec4 s = v.lo + v.hi;
    return (s[0] + s[1]) + (s[2] + s[3]);
  }
};

#if defined(__x86_64__)
using Vec8 = float __attribute__((vector_size(32)));
struct Avx2Lanes {
  using V = Vec8;
  static KVF_ALWAYS_INLINE void zero(V& v) { v = Vec8{}; }
  static KVF_ALWAYS_INLINE void load(V& v, const float* p) { std::memcpy(&v, p, sizeof(Vec8)); }
  static KVF_ALWAYS_INLINE void madd(V& acc, const V& a, const V& b) { acc += a * b; }
  static KVF_ALWAYS_INLINE float reduce(const V& v) {
    const Vec4 s = Vec4{v[0], v[1], v[2], v[3]} + Vec4{v[4], v[5], v[6], v[7]};
    return (s[0] + s[1]) + (s[2] + s[3]);
  }
};
#endif

// The last n < 8 elements, zero-padded to a full vector: padding adds exact zeros to the lanes.
template <class L>
KVF_ALWAYS_INLINE void loadTail(typename L::V& v, const float* p, size_t n) {
  float padded[8] = {};
  std::memcpy(padded, p, n * sizeof(float));
  L::load(v, padded);
}

// One step of dotTile: elements [i, i + count) of every product, count = 8 unless kTail.
template <class L, int kRows, int kTokens, bool kTail>
KVF_ALWAYS_INLINE void dotStep(typename L::V (&acc)[kRows][kTokens], const float* w, const float* x,
                               size_t n, size_t i, size_t count) {
  typename L::V wv[kRows];
  KVF_UNROLL for (int r = 0; r < kRows; ++r) {
    // Weights stream from memory once per tile: ask for them 512 bytes ahead, which measurably
    // beats the hardware prefetcher alone on small batches (a prefetch past the end is harmless).
    __builtin_prefetch(w + r * n + i + 128);
    if constexpr (kTail) {
      loadTail<L>(wv[r], w + r * n + i, count);
    } else {
      L::load(wv[r], w + r * n + i);
    }
  }
  KVF_UNROLL for (int t = 0; t < kTokens; ++t) {
    typename L::V xv;
    if constexpr (kTail) {
      loadTail<L>(xv, x + t * n + i, count);
    } else {
      L::load(xv, x + t * n + i);
    }
    KVF_UNROLL for (int r = 0; r < kRows; ++r) L::madd(acc[r][t], wv[r], xv);
  }
}

// kRows × kTokens dot products of length n (rows of w and of x n floats apart):
// y[t × y_stride + r] = w_r · x_t.
template <class L, int kRows, int kTokens>
KVF_ALWAYS_INLINE void dotTile(const float* w, const float* x, size_t n, float* y,
                               size_t y_stride) {
  typename L::V acc[kRows][kTokens];
  KVF_UNROLL for (int r = 0; r < kRows; ++r) {
    KVF_UNROLL for (int t = 0; t < kTokens; ++t) L::zero(acc[r][t]);
  }
  size_t i = 0;
  for (; i + 8 <= n; i += 8) dotStep<L, kRows, kTokens, false>(acc, w, x, n, i, 8);
  if (i < n) dotStep<L, kRows, kTokens, true>(acc, w, x, n, i, n - i);
  KVF_UNROLL for (int r = 0; r < kRows; ++r) {
    KVF_UNROLL for (int t = 0; t < kTokens; ++t) y[t * y_stride + r] = L::reduce(acc[r][t]);
  }
}

// Tiles the rows × tokens output. Batches of 4+ tokens walk the rows in tiles of kWideRows and
// the tokens in groups of kWideTokens (then 4, then 1), so a weight row streamed in from memory
// once serves a whole group; smaller batches (decode) take 4 rows per token, enough independent
// sums to keep the adders busy.
template <class L, int kWideRows, int kWideTokens>
KVF_ALWAYS_INLINE void matmulWith(const float* x, size_t tokens, size_t in, const float* w,
                                  size_t row_begin, size_t row_end, float* y, size_t y_stride) {
  size_t r = row_begin;
  if (tokens >= 4) {
    for (; r + kWideRows <= row_end; r += kWideRows) {
      size_t t = 0;
      for (; t + kWideTokens <= tokens; t += kWideTokens) {
        dotTile<L, kWideRows, kWideTokens>(w + r * in, x + t * in, in, y + t * y_stride + r,
                                           y_stride);
      }
      if constexpr (kWideTokens > 4) {
        for (; t + 4 <= tokens; t += 4) {
          dotTile<L, kWideRows, 4>(w + r * in, x + t * in, in, y + t * y_stride + r, y_stride);
        }
      }
      for (; t < tokens; ++t) {
        dotTile<L, kWideRows, 1>(w + r * in, x + t * in, in, y + t * y_stride + r, y_stride);
      }
    }
  } else {
    for (; r + 4 <= row_end; r += 4) {
      for (size_t t = 0; t < tokens; ++t) {
        dotTile<L, 4, 1>(w + r * in, x + t * in, in, y + t * y_stride + r, y_stride);
      }
    }
  }
  for (; r < row_end; ++r) {
    for (size_t t = 0; t < tokens; ++t) {
      dotTile<L, 1, 1>(w + r * in, x + t * in, in, y + t * y_stride + r, y_stride);
    }
  }
}

void matmulBaseline(const float* x, size_t tokens, size_t in, const float* w, size_t row_begin,
                    size_t row_end, float* y, size_t y_stride) {
  matmulWith<BaselineLanes, 1, 4>(x, tokens, in, w, row_begin, row_end, y, y_stride);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void matmulAvx2(const float* x, size_t tokens, size_t in,
                                                const float* w, size_t row_begin, size_t row_end,
                                                float* y, size_t y_stride) {
  matmulWith<Avx2Lanes, 1, 8>(x, tokens, in, w, row_begin, row_end, y, y_stride);
}
#endif

}  // namespace

Isa detectIsa() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

std::string_view isaName(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "baseline"; }

void matmulRows(Isa isa, const float* x, size_t tokens, size_t in, const float* w, size_t row_begin,
                size_t row_end, float* y, size_t y_stride) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx2) return matmulAvx2(x, tokens, in, w, row_begin, row_end, y, y_stride);
#endif
  matmulBaseline(x, tokens, in, w, row_begin, row_end, y, y_stride);
}

float dot(const float* a, const float* b, size_t n) {
  float result;
  dotTile<BaselineLanes, 1, 1>(a, b, n, &result, 1);
  return result;
}

void axpy(float a, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void rmsNorm(const float* x, const float* weight, size_t n, float epsilon, float* out) {
  const float mean_square = dot(x, x, n) / static_cast<float>(n);
  const float scale = 1.0f / std::sqrt(mean_square + epsilon);
  for (size_t i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

void softmax(float* x, size_t n) {
  const float max = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  for (size_t i = 0; i < n; ++i) x[i] /= sum;
}

void siluMul(const float* gate, const float* up, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g * (1.0f / (1.0f + std::exp(-g))) * up[i];
  }
}

void rope(float* x, size_t heads, size_t head_dim, size_t rope_dims, const float* cos,
          const float* sin) {
  for (size_t h = 0; h < heads; ++h) {
    float* v = x + h * head_dim;
    for (size_t k = 0; k < rope_dims / 2; ++k) {
      const float v0 = v[2 * k];
      const float v1 = v[2 * k + 1];
      v[2 * k] = v0 * cos[k] - v1 * sin[k];
      v[2 * k + 1] = v0 * sin[k] + v1 * cos[k];
    }
  }
}

void ropeNeox(float* x, size_t heads, size_t head_dim, size_t rope_dims, const float* cos,
              const float* sin) {
  const size_t half = rope_dims / 2;
  for (size_t h = 0; h < heads; ++h) {
    float* v = x + h * head_dim;
    for (size_t k = 0; k < half; ++k) {
      const float v0 = v[k];
      const float v1 = v[k + half];
      v[k] = v0 * cos[k] - v1 * sin[k];
      v[k + half] = v0 * sin[k] + v1 * cos[k];
    }
  }
}

}  // namespace kvferry::engine::cpu
