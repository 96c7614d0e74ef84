// The CPU runtime's numeric kernels. Every sum of products is computed the same way everywhere:
// 8 lanes, lane j accumulating the elements j, j + 8, j + 16, … in order (the tail padded with
// zeros), then the lanes added as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)). The
// baseline (SSE2 / NEON, two 4-wide registers) and the AVX2 variant (one 8-wide register)
// therefore return bit-identical results, as do every tile shape, batch size and thread split:
// a prompt prefilled on one agent and decoded on another yields exactly the tokens of one agent
// (DESIGN.md §5), whichever x86-64 machines they run on. No FMA, so no contraction either (the
// engine is built with -ffp-contract=off).
#pragma once

#include <cstddef>
#include <string_view>

namespace kvferry::engine::cpu {

// Instruction sets with a kernel variant. Chosen at run time (the build never assumes more than
// the baseline: binaries also run in the emulated rxe VM).
enum class Isa { kBaseline, kAvx2 };
Isa detectIsa();  // the best this CPU supports
std::string_view isaName(Isa isa);

// y[t × y_stride + r] = Σ_i x[t × in + i] · w[r × in + i] for t < tokens and r in
// [row_begin, row_end): a GEMM against a row-major weight matrix with one row per output.
// `isa` must be supported by this CPU (detectIsa() or kBaseline).
void matmulRows(Isa isa, const float* x, size_t tokens, size_t in, const float* w, size_t row_begin,
                size_t row_end, float* y, size_t y_stride);

// Σ a[i] · b[i], the same sum as one output of matmulRows.
float dot(const float* a, const float* b, size_t n);
// y[i] += a · x[i].
void axpy(float a, const float* x, float* y, size_t n);
// out[i] = weight[i] · (x[i] / sqrt(mean(x²) + epsilon)). `out` may be `x`.
void rmsNorm(const float* x, const float* weight, size_t n, float epsilon, float* out);
// x ← softmax(x), in place.
void softmax(float* x, size_t n);
// out[i] = silu(gate[i]) · up[i] (SwiGLU).
void siluMul(const float* gate, const float* up, size_t n, float* out);
// llama.cpp's "normal" RoPE on `heads` consecutive vectors of head_dim floats: the pairs
// (x[2k], x[2k+1]) for 2k < rope_dims rotate by the angle whose cosine and sine are cos[k] and
// sin[k]; the other elements are left alone.
void rope(float* x, size_t heads, size_t head_dim, size_t rope_dims, const float* cos,
          const float* sin);
// The NeoX mode (Hugging Face's rotate_half, llama.cpp's GGML_ROPE_TYPE_NEOX): the pairs
// (x[k], x[k + rope_dims/2]) for k < rope_dims/2 rotate by angle k.
void ropeNeox(float* x, size_t heads, size_t head_dim, size_t rope_dims, const float* cos,
              const float* sin);

}  // namespace kvferry::engine::cpu
