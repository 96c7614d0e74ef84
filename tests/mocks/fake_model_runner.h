// A ModelRunner without a model (node_agent/engine/model_runner.h), for tests of what drives an
// Engine: the agent's batch loop, KV sender and receiver. A tiny shape with host KV pools; the
// forward pass writes each token's K and V as a fixed function of (layer, token, position), so
// two engines agree byte for byte, and logits whose argmax is (last token + 1) % vocab, so greedy
// decoding counts up from the prompt's last token. `forward_delay` makes each pass take that
// long, like a real model's step.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "node_agent/engine/engine.h"
#include "node_agent/engine/model_runner.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::testing {

struct FakeShape {
  uint32_t layers = 2;
  uint32_t kv_heads = 1;
  uint32_t head_dim = 4;
  uint32_t vocab = 64;
  uint32_t context = 1024;
};

class FakeModelRunner final : public engine::ModelRunner {
 public:
  FakeModelRunner(const engine::RunnerConfig& config, const FakeShape& shape,
                  std::chrono::microseconds forward_delay)
      : config_(config), delay_(forward_delay) {
    params_.vocab_size = shape.vocab;
    params_.block_count = shape.layers;
    params_.head_count = shape.kv_heads;
    params_.head_count_kv = shape.kv_heads;
    params_.embedding_length = shape.kv_heads * shape.head_dim;
    params_.feed_forward_length = params_.embedding_length;
    params_.rope_dimension_count = shape.head_dim;
    params_.context_length = shape.context;
    geometry_ = {shape.layers, config.block_tokens, shape.kv_heads, shape.head_dim,
                 config.num_blocks};
    const size_t pool_floats = geometry_.poolBytes() / sizeof(float);
    for (uint32_t i = 0; i < 2 * shape.layers; ++i) pools_.emplace_back(pool_floats, 0.0f);
  }

  const model::LlamaParams& params() const override { return params_; }
  const engine::KvGeometry& kvGeometry() const override { return geometry_; }
  uint32_t maxBatchTokens() const override { return config_.max_batch_tokens; }
  uint32_t maxSequenceTokens() const override {
    return std::min(params_.context_length, geometry_.num_blocks * geometry_.block_tokens);
  }
  engine::KvPoolRegion keyPool(uint32_t layer) override { return region(2 * layer); }
  engine::KvPoolRegion valuePool(uint32_t layer) override { return region(2 * layer + 1); }

  Status forward(std::span<const engine::SequenceChunk> chunks, std::span<float> logits,
                 const engine::LayerDoneCallback& on_layer_done) override {
    ++forwards;
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    size_t tokens = 0;
    size_t rows = 0;
    for (const engine::SequenceChunk& chunk : chunks) {
      if (chunk.tokens.empty()) return invalidArgument("empty chunk");
      const uint32_t end = chunk.start_position + static_cast<uint32_t>(chunk.tokens.size());
      if (end > maxSequenceTokens()) return outOfRange("past the context");
      if ((end + geometry_.block_tokens - 1) / geometry_.block_tokens > chunk.block_table.size())
        return invalidArgument("block table too short");
      tokens += chunk.tokens.size();
      rows += chunk.want_logits ? 1 : 0;
    }
    if (tokens > config_.max_batch_tokens) return invalidArgument("batch too large");
    if (logits.size() != rows * params_.vocab_size) return invalidArgument("logits size");
    const uint64_t token_floats = geometry_.tokenElements();
    for (uint32_t layer = 0; layer < geometry_.layers; ++layer) {
      for (const engine::SequenceChunk& chunk : chunks) {
        for (size_t i = 0; i < chunk.tokens.size(); ++i) {
          const uint32_t position = chunk.start_position + static_cast<uint32_t>(i);
          const uint64_t slot = uint64_t{chunk.block_table[position / geometry_.block_tokens]} *
                                    geometry_.block_tokens +
                                position % geometry_.block_tokens;
          for (uint32_t kv = 0; kv < 2; ++kv) {
            float* out = pools_[2 * layer + kv].data() + slot * token_floats;
            for (uint64_t d = 0; d < token_floats; ++d) {
              out[d] = kvValue(layer, kv, chunk.tokens[i], position, d);
            }
          }
        }
      }
      if (on_layer_done) on_layer_done(layer);
    }
    size_t row = 0;
    for (const engine::SequenceChunk& chunk : chunks) {
      if (!chunk.want_logits) continue;
      std::span<float> out = logits.subspan(row++ * params_.vocab_size, params_.vocab_size);
      std::fill(out.begin(), out.end(), 0.0f);
      out[(chunk.tokens.back() + 1) % params_.vocab_size] = 1.0f;
    }
    return Status::ok();
  }

  // forward(), then the argmax of each row (the fake's logits are one-hot: draws do not matter).
  Status forwardSampled(std::span<const engine::SequenceChunk> chunks,
                        std::span<const engine::TokenDraw> draws, std::span<model::TokenId> tokens,
                        const engine::LayerDoneCallback& on_layer_done) override {
    if (draws.size() != tokens.size()) return invalidArgument("draws and tokens differ in size");
    std::vector<float> logits(tokens.size() * params_.vocab_size);
    RETURN_IF_ERROR(forward(chunks, logits, on_layer_done));
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = engine::argmax({logits.data() + i * params_.vocab_size, params_.vocab_size});
    }
    return Status::ok();
  }

  // What forward() writes: exact in float for the shapes tests use.
  static float kvValue(uint32_t layer, uint32_t kv, model::TokenId token, uint32_t position,
                       uint64_t d) {
    return static_cast<float>(layer * 100000 + kv * 50000 + position * 64 + token) +
           0.0625f * static_cast<float>(d);
  }

  std::atomic<uint64_t> forwards{0};

 private:
  engine::KvPoolRegion region(uint32_t index) {
    return {pools_[index].data(), pools_[index].size() * sizeof(float), -1};
  }

  const engine::RunnerConfig config_;
  const std::chrono::microseconds delay_;
  model::LlamaParams params_;
  engine::KvGeometry geometry_;
  std::vector<std::vector<float>> pools_;
};

// An Engine over a FakeModelRunner: `config` sets the cache, `shape` the model.
inline std::unique_ptr<engine::Engine> makeFakeEngine(const engine::EngineConfig& config,
                                                      const FakeShape& shape,
                                                      std::chrono::microseconds forward_delay) {
  const engine::RunnerConfig runner{config.block_tokens, config.num_blocks, config.max_batch_tokens,
                                    config.threads};
  auto engine = engine::Engine::create(
      std::make_unique<FakeModelRunner>(runner, shape, forward_delay), config);
  return engine.isOk() ? std::move(engine).value() : nullptr;
}

}  // namespace kvferry::testing
