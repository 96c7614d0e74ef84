// Llama-architecture hyper-parameters and weights, read from a GGUF file's `llama.*` metadata and
// tensor table with llama.cpp's key names and defaults, plus the model fingerprint that agents and
// the orchestrator compare at registration (DESIGN.md §3).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"

namespace kvferry::model {

struct LlamaParams {
  uint32_t vocab_size = 0;            // llama.vocab_size, else the tokenizer's token count
  uint32_t embedding_length = 0;      // llama.embedding_length (d_model)
  uint32_t feed_forward_length = 0;   // llama.feed_forward_length
  uint32_t block_count = 0;           // llama.block_count (layers)
  uint32_t head_count = 0;            // llama.attention.head_count
  uint32_t head_count_kv = 0;         // llama.attention.head_count_kv (default: head_count)
  uint32_t rope_dimension_count = 0;  // llama.rope.dimension_count (default: headDim())
  float rope_freq_base = 10000.0f;    // llama.rope.freq_base
  float rms_epsilon = 1e-5f;          // llama.attention.layer_norm_rms_epsilon (required)
  uint32_t context_length = 0;        // llama.context_length (trained context)
  // Per rotated pair k, the divisor of its frequency base^(-2k / rope_dims): llama.cpp's
  // `rope_freqs.weight` tensor, which is how GGUF files carry Llama 3's frequency scaling
  // (rope_scaling.rope_type "llama3" in Hugging Face's config.json). Empty: all 1.
  std::vector<float> rope_freq_factors;

  uint32_t headDim() const { return embedding_length / head_count; }
  uint32_t kvDim() const { return headDim() * head_count_kv; }  // K (and V) width per token
  uint32_t queryGroupSize() const { return head_count / head_count_kv; }  // GQA ratio

  bool operator==(const LlamaParams&) const = default;
};

// Reads and validates the hyper-parameters; `general.architecture` must be "llama". Refused as
// unsupported rather than silently mis-run: RoPE scaling other than per-frequency factors
// (rope_freqs.weight), mixture of experts, and per-head key or value widths other than
// embedding_length / head_count.
Result<LlamaParams> readLlamaParams(const GgufFile& file);

// Every count positive, head_count divides embedding_length, head_count_kv divides head_count,
// the head dimension is even, rope_dimension_count is even and at most the head dimension, and
// epsilon and frequency base are positive and finite, and rope_freq_factors is empty or holds
// rope_dimension_count / 2 positive finite factors.
Status validateLlamaParams(const LlamaParams& params);

// The RoPE inverse frequencies of params: base^(-2k / rope_dims) / factor_k for each rotated pair
// k, in float, computed as Hugging Face's transformers does (1 / base^(2k / rope_dims)).
std::vector<float> ropeInverseFrequencies(const LlamaParams& params);

// Llama 3's frequency scaling (Hugging Face rope_type "llama3") as per-pair divisors, as
// llama.cpp's converter writes them into rope_freqs.weight: 1 for wavelengths shorter than
// original_context / high_freq_factor, `factor` for those longer than original_context /
// low_freq_factor, a smooth blend between.
std::vector<float> llama3RopeFactors(float freq_base, uint32_t rope_dims, float factor,
                                     float low_freq_factor, float high_freq_factor,
                                     uint32_t original_context);

// Weights of one transformer block; shapes in GGUF order {row length, rows}.
struct LlamaLayerTensors {
  const GgufTensor* attn_norm = nullptr;    // blk.N.attn_norm.weight    {dim}
  const GgufTensor* attn_q = nullptr;       // blk.N.attn_q.weight       {dim, dim}
  const GgufTensor* attn_k = nullptr;       // blk.N.attn_k.weight       {dim, kv_dim}
  const GgufTensor* attn_v = nullptr;       // blk.N.attn_v.weight       {dim, kv_dim}
  const GgufTensor* attn_output = nullptr;  // blk.N.attn_output.weight  {dim, dim}
  const GgufTensor* ffn_norm = nullptr;     // blk.N.ffn_norm.weight     {dim}
  const GgufTensor* ffn_gate = nullptr;     // blk.N.ffn_gate.weight     {dim, ff}
  const GgufTensor* ffn_up = nullptr;       // blk.N.ffn_up.weight       {dim, ff}
  const GgufTensor* ffn_down = nullptr;     // blk.N.ffn_down.weight     {ff, dim}
};

// The model's weights: pointers into the GgufFile, valid while it lives.
struct LlamaTensors {
  const GgufTensor* token_embd = nullptr;   // token_embd.weight {dim, vocab}
  const GgufTensor* output_norm = nullptr;  // output_norm.weight {dim}
  const GgufTensor* output = nullptr;       // output.weight {dim, vocab}, or token_embd if tied
  const GgufTensor* rope_freqs = nullptr;   // rope_freqs.weight {rope_dims / 2}, or none
  bool tied_output = false;                 // output.weight absent: logits use token_embd
  std::vector<LlamaLayerTensors> layers;
};

// Finds every weight and checks its shape. INVALID_ARGUMENT for a missing tensor, a wrong shape,
// or a tensor the runtime would not use (biases, …): ignoring one would compute a different
// model.
Result<LlamaTensors> findLlamaTensors(const GgufFile& file, const LlamaParams& params);

// Model fingerprint: SipHash-2-4 with key (0, 0) over, in this order (integers little-endian,
// strings as u64 length + bytes, floats as their u32 bit pattern):
//   "kvferry.model.v1", "llama",
//   u32 vocab_size, embedding_length, feed_forward_length, block_count, head_count,
//       head_count_kv, rope_dimension_count, context_length,
//   f32 rope_freq_base, rms_epsilon,
//   u64 tensor count, then for each tensor in byte order of its name: name, u32 n_dims,
//   n_dims × u64 dim, u32 ggml type, u64 data bytes, the first and the last min(64, data bytes)
//   bytes of its data.
// The data samples tell apart fine-tunes of one base (same names and shapes) while reading only
// two pages per tensor; weights that differ only in the middle of every tensor are not detected.
// Metadata other than the hyper-parameters (general.name, …) does not enter: renaming a file
// does not change the model.
uint64_t modelFingerprint(const GgufFile& file, const LlamaParams& params);

}  // namespace kvferry::model
