// Models, engines and greedy runs shared by the engine tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/llama_weights.h"
#include "node_agent/engine/sampler.h"
#include "tests/model/test_data.h"

namespace kvferry::engine::testing {

using model::testing::kOnceGolden;  // the stories260K goldens and path: tests/model/test_data.h
using model::testing::kZooGolden;
using model::testing::storiesPath;

// A tiny llama shape; tests vary the head counts and layers.
inline model::LlamaParams tinyParams(uint32_t layers, uint32_t heads, uint32_t kv_heads,
                                     uint32_t head_dim = 8, uint32_t rope_dims = 0) {
  model::LlamaParams p;
  p.vocab_size = 300;
  p.embedding_length = heads * head_dim;
  p.feed_forward_length = 3 * p.embedding_length - 5;  // not a multiple of 8: kernel tails
  p.block_count = layers;
  p.head_count = heads;
  p.head_count_kv = kv_heads;
  p.rope_dimension_count = rope_dims == 0 ? head_dim : rope_dims;
  p.rope_freq_base = 10000.0f;
  p.rms_epsilon = 1e-5f;
  p.context_length = 512;
  return p;
}

// A shape whose every row length is a multiple of 32, as Q8_0 needs.
inline model::LlamaParams q8Params(uint32_t layers, uint32_t heads, uint32_t kv_heads) {
  model::LlamaParams p = tinyParams(layers, heads, kv_heads, 64 / heads);  // dim 64
  p.feed_forward_length = 96;
  return p;
}

// The GGUF bytes of a random model (kept: GgufFile views point into them).
struct RandomModel {
  std::vector<uint8_t> bytes;
  model::GgufFile file;
  std::shared_ptr<const LlamaWeights> weights;
};

inline std::unique_ptr<RandomModel> randomModel(const model::LlamaParams& params, uint64_t seed,
                                                model::GgmlType type = model::GgmlType::kF32,
                                                bool tied = false) {
  Result<std::vector<uint8_t>> bytes = model::randomLlamaModel({params, type, tied}, seed);
  EXPECT_TRUE(bytes.isOk()) << bytes.status().toString();
  if (!bytes.isOk()) return nullptr;
  std::vector<uint8_t> owned = std::move(bytes).value();
  Result<model::GgufFile> file = model::GgufFile::parse(owned);
  EXPECT_TRUE(file.isOk()) << file.status().toString();
  if (!file.isOk()) return nullptr;
  Result<std::shared_ptr<const LlamaWeights>> weights = LlamaWeights::load(*file);
  EXPECT_TRUE(weights.isOk()) << weights.status().toString();
  if (!weights.isOk()) return nullptr;
  // The vector's buffer does not move when the vector does, so the file's views stay valid.
  return std::unique_ptr<RandomModel>(
      new RandomModel{std::move(owned), std::move(file).value(), std::move(weights).value()});
}

inline std::unique_ptr<Engine> makeEngine(std::shared_ptr<const LlamaWeights> weights,
                                          EngineConfig config) {
  Result<std::unique_ptr<Engine>> engine = Engine::create(std::move(weights), config);
  EXPECT_TRUE(engine.isOk()) << engine.status().toString();
  return engine.isOk() ? std::move(engine).value() : nullptr;
}

inline EngineConfig smallConfig(uint32_t block_tokens, uint32_t num_blocks = 64,
                                uint32_t threads = 2) {
  EngineConfig config;
  config.block_tokens = block_tokens;
  config.num_blocks = num_blocks;
  config.max_batch_tokens = 64;
  config.threads = threads;
  return config;
}

// Deterministic pseudo-random bytes (a KV block's stand-in for checksum tests).
inline std::vector<uint8_t> randomBytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> out(n);
  for (uint8_t& b : out) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    b = static_cast<uint8_t>(seed >> 56);
  }
  return out;
}

// Deterministic pseudo-random token ids in [3, vocab): no BOS/EOS inside prompts.
inline std::vector<model::TokenId> randomTokens(size_t n, uint32_t vocab, uint64_t seed) {
  std::vector<model::TokenId> out;
  uint64_t state = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (size_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    out.push_back(static_cast<model::TokenId>(3 + (state >> 33) % (vocab - 3)));
  }
  return out;
}

// A greedy continuation: the tokens chosen and the logits every step produced (the prefill's
// first), so runs can be compared bit for bit.
struct GreedyRun {
  std::vector<model::TokenId> tokens;
  std::vector<std::vector<float>> logits;
};

// Feeds argmax(logits) back for `steps` decode steps of sequence `id` on `engine`.
inline GreedyRun continueGreedy(Engine& engine, SequenceId id, std::vector<float> logits,
                                uint32_t steps) {
  GreedyRun run;
  run.logits.push_back(logits);
  for (uint32_t i = 0; i < steps; ++i) {
    const model::TokenId token = argmax(logits);
    run.tokens.push_back(token);
    const Status status = engine.decode({&id, 1}, {&token, 1}, logits);
    EXPECT_TRUE(status.isOk()) << status.toString();
    if (!status.isOk()) break;
    run.logits.push_back(logits);
  }
  return run;
}

// Prefill + greedy decode of one prompt; the sequence is released afterwards.
inline GreedyRun greedyRun(Engine& engine, std::span<const model::TokenId> prompt, uint32_t steps) {
  std::vector<float> logits(engine.vocabSize());
  Result<PrefillResult> prefill = engine.prefill(prompt, logits);
  EXPECT_TRUE(prefill.isOk()) << prefill.status().toString();
  if (!prefill.isOk()) return {};
  GreedyRun run = continueGreedy(engine, prefill->id, std::move(logits), steps);
  EXPECT_TRUE(engine.release(prefill->id).isOk());
  return run;
}

// Bitwise equality of float vectors (NaN payloads included), for determinism checks.
inline bool sameBits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline void expectSameRun(const GreedyRun& expected, const GreedyRun& actual) {
  EXPECT_EQ(expected.tokens, actual.tokens);
  ASSERT_EQ(expected.logits.size(), actual.logits.size());
  for (size_t i = 0; i < expected.logits.size(); ++i) {
    EXPECT_TRUE(sameBits(expected.logits[i], actual.logits[i])) << "logits of step " << i;
  }
}

}  // namespace kvferry::engine::testing
