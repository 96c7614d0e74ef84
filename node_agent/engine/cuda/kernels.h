// The CUDA model runtime's element-wise, normalization, embedding and small-GEMM kernels
// (kernels.cu), launched by CudaModelRunner. Activations are bfloat16, row-major, one row per
// token; every kernel computes in float32 and rounds its outputs to bfloat16 where Hugging Face's
// transformers rounds them in a bfloat16 model (the comments say where), so the two agree to the
// last bit in most elements. Launchers enqueue on `stream` and return the launch's error.
//
// Only CUDA code includes this header (DESIGN.md §1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvferry::engine::cuda {

using bf16 = __nv_bfloat16;

// out[t] = table[tokens[t]], rows of `dim`.
cudaError_t launchEmbed(const int32_t* tokens, uint32_t count, const bf16* table, uint32_t dim,
                        bf16* out, cudaStream_t stream);

// Llama's RMSNorm as transformers computes it in bfloat16: h = bf16(x · rsqrt(mean(x²) + eps)),
// out = bf16(weight · h). With `add`, first x = bf16(x + add) (the residual add, written back).
cudaError_t launchRmsNorm(bf16* x, const bf16* add, const bf16* weight, uint32_t rows, uint32_t dim,
                          float eps, bf16* out, cudaStream_t stream);

// The final norm of the rows whose logits are wanted: out[i] = rmsNorm(bf16(x[rows[i]] +
// add[rows[i]])), rows of `dim`.
cudaError_t launchGatherRmsNorm(const bf16* x, const bf16* add, const int32_t* rows, uint32_t count,
                                const bf16* weight, uint32_t dim, float eps, bf16* out,
                                cudaStream_t stream);

// out = bf16(bf16(silu(gate)) · up) per element, gate_up rows holding [gate | up] (2·ff wide).
cudaError_t launchSiluMul(const bf16* gate_up, uint32_t rows, uint32_t ff, bf16* out,
                          cudaStream_t stream);

// What happens to one token's fused QKV row after the projection, for every token of a batch.
struct QkvParams {
  uint32_t tokens = 0;
  uint32_t heads = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t rope_dims = 0;              // the leading dims of each head that rotate
  bool rope_neox = false;              // pairs (k, k + rope_dims/2) (Hugging Face); else (2k, 2k+1)
  float eps = 0.0f;                    // of the q/k norms
  const bf16* bias = nullptr;          // [heads·hd + 2·kv_heads·hd] or null (Qwen2)
  const bf16* q_norm = nullptr;        // [head_dim] or null (Qwen3: RMSNorm of each q head)
  const bf16* k_norm = nullptr;        // [head_dim] or null
  const float* inv_freq = nullptr;     // [rope_dims / 2]
  const int32_t* positions = nullptr;  // [tokens]
  const uint32_t* slots = nullptr;     // [tokens]: block × block_tokens + position % block_tokens
};

// Applies bias, q/k norm and RoPE (cos and sin of position · inv_freq rounded to bfloat16, then
// bf16(bf16(x·cos) + bf16(±y·sin)), as transformers rotates), writes the queries to q
// ([tokens × heads·hd]) and the keys and values to their slots of the layer's pools
// ([slots × kv_heads·hd]).
cudaError_t launchQkvRopeStore(const bf16* qkv, const QkvParams& params, bf16* q, bf16* key_pool,
                               bf16* value_pool, cudaStream_t stream);

// y[t] = W · x[t] for t < tokens (1..kGemvMaxTokens), W row-major [rows × cols] bfloat16, float32
// accumulation; y bfloat16 or float32. For decode steps, where the weights' bytes bound the time:
// each warp streams one row of W with 16-byte loads. cols must be a multiple of 8.
inline constexpr uint32_t kGemvMaxTokens = 8;
cudaError_t launchGemv(const bf16* w, uint32_t rows, uint32_t cols, const bf16* x, uint32_t tokens,
                       bf16* y, cudaStream_t stream);
cudaError_t launchGemvF32(const bf16* w, uint32_t rows, uint32_t cols, const bf16* x,
                          uint32_t tokens, float* y, cudaStream_t stream);

// Converts float32 to bfloat16 (round to nearest even) on the device.
cudaError_t launchToBf16(const float* in, uint64_t count, bf16* out, cudaStream_t stream);

}  // namespace kvferry::engine::cuda
