// Llama-family hyper-parameters and weights (Llama 2/3, Mistral, Qwen2/2.5, Qwen3), read from a
// GGUF file's `<architecture>.*` metadata and tensor table with llama.cpp's key names and
// defaults, plus the model fingerprint that agents and the orchestrator compare at registration
// (DESIGN.md §3). Hugging Face directories read into the same structures (model/model_files.h).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/hash.h"

namespace kvferry::model {

// The architectures the runtime computes. Mistral's checkpoints are `llama` (GGUF) or `mistral`
// (Hugging Face, read as llama): the same network.
//  - llama: the base network below.
//  - qwen2: llama with a bias on the q, k and v projections (attn_q.bias, …).
//  - qwen3: llama with a per-head RMSNorm of q and k before RoPE (attn_q_norm, attn_k_norm), and a
//    head dimension that need not be embedding_length / head_count.
enum class Architecture : uint8_t { kLlama, kQwen2, kQwen3 };
// GGUF's general.architecture names: "llama", "qwen2", "qwen3".
std::string_view architectureName(Architecture architecture);

struct LlamaParams {
  Architecture architecture = Architecture::kLlama;  // general.architecture
  // Keys below are named for llama; other architectures use their own prefix (qwen2.…).
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
  // Width of one attention head: llama.attention.key_length (= value_length), head_dim in a
  // config.json. 0 means embedding_length / head_count, and the readers store 0 whenever the file
  // says exactly that, so one model's params compare equal whichever format they came from.
  uint32_t head_dim = 0;
  // Which elements of a head RoPE rotates together: false, llama.cpp's "normal" mode, the pairs
  // (2k, 2k + 1) — GGUF llama files, whose converter permuted the rows of Q and K for it; true,
  // the NeoX mode, the pairs (k, k + rope_dimension_count / 2) — Hugging Face checkpoints of every
  // architecture, and GGUF qwen2 / qwen3 files (llama.cpp does not permute those).
  bool rope_neox = false;

  uint32_t headDim() const { return head_dim != 0 ? head_dim : embedding_length / head_count; }
  uint32_t queryDim() const { return headDim() * head_count; }  // Q (and attention output) width
  uint32_t kvDim() const { return headDim() * head_count_kv; }  // K (and V) width per token
  uint32_t queryGroupSize() const { return head_count / head_count_kv; }  // GQA ratio
  bool hasQkvBias() const { return architecture == Architecture::kQwen2; }
  bool hasQkNorm() const { return architecture == Architecture::kQwen3; }

  bool operator==(const LlamaParams&) const = default;
};

// Reads and validates the hyper-parameters; `general.architecture` must be "llama", "qwen2" or
// "qwen3" (anything else is refused naming the key and the value). Refused as unsupported rather
// than silently mis-run: RoPE scaling other than per-frequency factors (rope_freqs.weight),
// mixture of experts, a sliding attention window, and a value width other than the key width.
Result<LlamaParams> readLlamaParams(const GgufFile& file);

// Every count positive, head_count divides embedding_length (when head_dim is 0), head_count_kv
// divides head_count, the head dimension is even, rope_dimension_count is even and at most the
// head dimension, and epsilon and frequency base are positive and finite, and rope_freq_factors
// is empty or holds rope_dimension_count / 2 positive finite factors.
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

// Weights of one transformer block; shapes in GGUF order {row length, rows}. q_dim is
// params.queryDim() (= dim unless head_dim says otherwise), head_dim params.headDim().
struct LlamaLayerTensors {
  const GgufTensor* attn_norm = nullptr;    // blk.N.attn_norm.weight    {dim}
  const GgufTensor* attn_q = nullptr;       // blk.N.attn_q.weight       {dim, q_dim}
  const GgufTensor* attn_k = nullptr;       // blk.N.attn_k.weight       {dim, kv_dim}
  const GgufTensor* attn_v = nullptr;       // blk.N.attn_v.weight       {dim, kv_dim}
  const GgufTensor* attn_output = nullptr;  // blk.N.attn_output.weight  {q_dim, dim}
  const GgufTensor* ffn_norm = nullptr;     // blk.N.ffn_norm.weight     {dim}
  const GgufTensor* ffn_gate = nullptr;     // blk.N.ffn_gate.weight     {dim, ff}
  const GgufTensor* ffn_up = nullptr;       // blk.N.ffn_up.weight       {dim, ff}
  const GgufTensor* ffn_down = nullptr;     // blk.N.ffn_down.weight     {ff, dim}
  // qwen2 (params.hasQkvBias()), else null: added to the projections' outputs.
  const GgufTensor* attn_q_bias = nullptr;  // blk.N.attn_q.bias         {q_dim}
  const GgufTensor* attn_k_bias = nullptr;  // blk.N.attn_k.bias         {kv_dim}
  const GgufTensor* attn_v_bias = nullptr;  // blk.N.attn_v.bias         {kv_dim}
  // qwen3 (params.hasQkNorm()), else null: RMSNorm weights (epsilon rms_epsilon) of every q head
  // and every k head, applied after the bias and before RoPE.
  const GgufTensor* attn_q_norm = nullptr;  // blk.N.attn_q_norm.weight  {head_dim}
  const GgufTensor* attn_k_norm = nullptr;  // blk.N.attn_k_norm.weight  {head_dim}
};

// The model's weights: views of the model's files (GGUF tensors, or safetensors tensors presented
// as GgufTensor: name, ggml-order dims, type F32/F16/BF16, data in the mapped file), valid while
// the GgufFile or model::ModelFiles they came from lives. Both runners load from this.
struct LlamaTensors {
  const GgufTensor* token_embd = nullptr;   // token_embd.weight {dim, vocab}
  const GgufTensor* output_norm = nullptr;  // output_norm.weight {dim}
  const GgufTensor* output = nullptr;       // output.weight {dim, vocab}, or token_embd if tied
  const GgufTensor* rope_freqs = nullptr;   // rope_freqs.weight {rope_dims / 2}, or none
  bool tied_output = false;                 // output.weight absent: logits use token_embd
  std::vector<LlamaLayerTensors> layers;
};

// Finds every weight and checks its shape. INVALID_ARGUMENT for a missing tensor, a wrong shape,
// or a tensor the runtime would not use (a bias on a llama, …): ignoring one would compute a
// different model.
Result<LlamaTensors> findLlamaTensors(const GgufFile& file, const LlamaParams& params);

// The same over any table of tensors named as in GGUF (`tensors` outlives the result). `describe`
// names a tensor in error messages (e.g. its file and Hugging Face name); `pytorch_order` prints
// shapes outermost-first, as a safetensors file writes them.
struct TensorNaming {
  std::function<std::string(std::string_view gguf_name)> describe;
  bool pytorch_order = false;
};
Result<LlamaTensors> findLlamaTensors(std::span<const GgufTensor> tensors,
                                      const LlamaParams& params, const TensorNaming& naming);

// Model fingerprint of a GGUF file: SipHash-2-4 with key (0, 0) over, in this order (integers
// little-endian, strings as u64 length + bytes, floats as their u32 bit pattern):
//   "kvferry.model.v1", the architecture name ("llama", "qwen2", "qwen3"),
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
// The same hash over any tensor table, with `kind` in place of the architecture name and `extra`
// (when set) fed after rms_epsilon: model/model_files.h fingerprints safetensors with it.
uint64_t modelFingerprint(std::string_view kind, std::span<const GgufTensor> tensors,
                          const LlamaParams& params, const std::function<void(SipHasher&)>& extra);

}  // namespace kvferry::model
