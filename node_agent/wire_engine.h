// The control plane's request fields as the model runtime takes them: sampling parameters,
// token lists, and the bound on a resumed answer's random draws (docs/control_plane.md,
// "Sampling across the split"). Engine thread; pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/control_wire.h"
#include "common/status.h"
#include "model/token_id.h"
#include "node_agent/engine/logit_processor.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::agent {

inline engine::SamplingParams samplingOf(const wire::Sampling& s) {
  engine::SamplingParams params;
  params.temperature = s.temperature;
  params.top_p = s.top_p;
  params.seed = s.seed;
  return params;
}

// The request's logit processors (engine/logit_processor.h); `stop_tokens` are what min_tokens
// masks.
inline engine::LogitParams logitParamsOf(const wire::Sampling& s,
                                         const std::vector<int32_t>& stop_tokens) {
  engine::LogitParams params;
  params.repetition_penalty = s.repetition_penalty;
  params.presence_penalty = s.presence_penalty;
  params.frequency_penalty = s.frequency_penalty;
  for (const wire::LogitBias& b : s.logit_bias) params.logit_bias.emplace_back(b.token, b.bias);
  params.min_tokens = s.min_tokens;
  params.stop_tokens.assign(stop_tokens.begin(), stop_tokens.end());
  params.logprobs = s.logprobs;
  return params;
}

inline std::vector<model::TokenId> tokensOf(const std::vector<int32_t>& ids) {
  return std::vector<model::TokenId>(ids.begin(), ids.end());
}

// A resumed answer's random draws: at most one per token of a sequence (and discard() is linear,
// so a huge value would stall the engine thread).
inline Status checkRngDraws(uint64_t draws, uint32_t max_sequence_tokens) {
  if (draws <= max_sequence_tokens) return Status::ok();
  return invalidArgument("rng_draws " + std::to_string(draws) + " is more than the " +
                         std::to_string(max_sequence_tokens) + " tokens a sequence can have");
}

}  // namespace kvferry::agent
