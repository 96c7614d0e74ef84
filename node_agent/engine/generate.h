// Single-sequence generation on an Engine: prefill, then sample and decode until a stop token,
// the token limit or the end of the context. What kvferry-generate and the tests run; the agent's
// batching loop drives Engine::decode itself.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/status.h"
#include "model/token_id.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::engine {

struct GenerateOptions {
  SamplingParams sampling;
  uint32_t max_new_tokens = 64;
  // Generation ends when one of these is sampled; it is not part of the output.
  std::vector<model::TokenId> stop_tokens;
};

enum class FinishReason { kStop, kLength, kContextFull, kCancelled };

struct GenerateResult {
  std::vector<model::TokenId> tokens;  // the new tokens, the prompt not included
  FinishReason finish_reason = FinishReason::kLength;
  uint32_t cached_prompt_tokens = 0;
};

// Called with each new token as it is sampled; returning false ends generation (kCancelled).
using TokenCallback = std::function<bool(model::TokenId)>;

// Runs on the engine's thread; the sequence is released before returning, on success or error.
Result<GenerateResult> generate(Engine& engine, std::span<const model::TokenId> prompt,
                                const GenerateOptions& options,
                                const TokenCallback& on_token = nullptr);

}  // namespace kvferry::engine
