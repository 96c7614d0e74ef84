// The CPU backend of ModelRunner: float32 weights and KV pools in host memory, the forward pass
// of cpu_kernels.h, data-parallel over a ThreadPool. Prefill chunks and decode batches take the
// same path: the batch's tokens are flattened so each weight matrix is read once per forward
// pass whatever the number of sequences.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "node_agent/engine/cpu/cpu_kernels.h"
#include "node_agent/engine/cpu/thread_pool.h"
#include "node_agent/engine/llama_weights.h"
#include "node_agent/engine/model_runner.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::engine::cpu {

// Owns host memory for `count` floats, 64-byte aligned and zeroed. Move-only.
class AlignedFloats {
 public:
  AlignedFloats() = default;
  explicit AlignedFloats(uint64_t count);
  float* data() const { return data_.get(); }
  uint64_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> data_;
  uint64_t size_ = 0;
};

class CpuModelRunner final : public ModelRunner {
 public:
  // INVALID_ARGUMENT for a zero block_tokens, num_blocks or max_batch_tokens, or pools too large
  // to address. Allocates every buffer a forward pass needs now (forward() allocates nothing).
  static Result<std::unique_ptr<CpuModelRunner>> create(std::shared_ptr<const LlamaWeights> weights,
                                                        const RunnerConfig& config);

  const model::LlamaParams& params() const override { return params_; }
  const KvGeometry& kvGeometry() const override { return geometry_; }
  uint32_t maxBatchTokens() const override { return max_batch_tokens_; }
  uint32_t maxSequenceTokens() const override { return max_sequence_tokens_; }
  KvPoolRegion keyPool(uint32_t layer) override;
  KvPoolRegion valuePool(uint32_t layer) override;
  Status forward(std::span<const SequenceChunk> chunks, std::span<float> logits,
                 const LayerDoneCallback& on_layer_done = nullptr) override;
  // forward() into a scratch buffer, then engine::Sampler::pick per chunk.
  Status forwardSampled(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
                        std::span<model::TokenId> tokens,
                        const LayerDoneCallback& on_layer_done = nullptr) override;

  Isa isa() const { return isa_; }
  uint32_t threads() const { return pool_.size(); }

 private:
  CpuModelRunner(std::shared_ptr<const LlamaWeights> weights, const RunnerConfig& config);

  // Checks the batch and lays its tokens out in token_* arrays; returns the token count.
  Result<uint32_t> prepare(std::span<const SequenceChunk> chunks, size_t logits_floats);
  void attentionLayer(uint32_t layer, uint32_t tokens);
  // y (tokens × w.rows()) = x (tokens × w.cols()) · wᵀ, rows split over the pool.
  void matmul(const float* x, uint32_t tokens, const Matrix& w, float* y);
  // Runs fn(token) for each token, split over the pool when there are enough of them.
  template <typename Fn>
  void forEachToken(uint32_t tokens, Fn&& fn);

  const std::shared_ptr<const LlamaWeights> weights_;
  const model::LlamaParams params_;
  const KvGeometry geometry_;
  const uint32_t max_batch_tokens_;
  const uint32_t max_sequence_tokens_;
  const uint32_t q_dim_;    // head_count × head_dim (embedding_length, unless head_dim differs)
  const uint32_t kv_dim_;   // head_count_kv × head_dim
  const uint32_t qkv_dim_;  // q_dim + 2 × kv_dim: one row of the fused QKV output
  const Isa isa_;

  std::vector<AlignedFloats> key_pools_;    // per layer
  std::vector<AlignedFloats> value_pools_;  // per layer

  // Per-token layout of the batch being run (max_batch_tokens entries each).
  std::vector<model::TokenId> token_ids_;
  std::vector<uint32_t> token_positions_;
  std::vector<const uint32_t*> token_block_tables_;
  std::vector<uint32_t> logit_tokens_;  // tokens whose logits are wanted, in chunk order
  uint64_t attended_positions_ = 0;     // Σ (position + 1): the batch's attention work per head
  // Activations, max_batch_tokens rows each.
  AlignedFloats x_;              // residual stream, × dim
  AlignedFloats xn_;             // normalized input of a sub-layer, × dim
  AlignedFloats qkv_;            // × qkv_dim
  AlignedFloats attn_;           // attention output, × q_dim
  AlignedFloats proj_;           // output of Wo and W_down before the residual add, × dim
  AlignedFloats gate_up_;        // × 2·ff
  AlignedFloats hidden_;         // SwiGLU output, × ff
  std::vector<float> inv_freq_;  // RoPE: base^(-2k / rope_dims)
  AlignedFloats rope_cos_;       // × rope_dims / 2
  AlignedFloats rope_sin_;
  std::vector<AlignedFloats> scores_;  // attention scores: a max_sequence_tokens row per thread
  std::vector<float> sampled_logits_;  // forwardSampled's logits (grown on first use)
  Sampler sampler_;

  ThreadPool pool_;  // last: its workers stop before the buffers they use go
};

}  // namespace kvferry::engine::cpu
