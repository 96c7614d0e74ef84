#include "node_agent/engine/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <string>

namespace kvferry::engine {

namespace {

std::string shortFloat(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", static_cast<double>(value));
  return text;
}

}  // namespace

Status validateSamplingParams(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return invalidArgument("temperature " + shortFloat(params.temperature) +
                           " must be finite and >= 0");
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return invalidArgument("top_p " + shortFloat(params.top_p) + " must be in (0, 1]");
  }
  return Status::ok();
}

model::TokenId argmax(std::span<const float> logits) {
  return static_cast<model::TokenId>(std::max_element(logits.begin(), logits.end()) -
                                     logits.begin());
}

TokenDraw drawFor(const SamplingParams& params, SamplingRng& rng) {
  TokenDraw draw{params.temperature, params.top_k, params.top_p, 0.0f};
  if (!draw.greedy()) draw.uniform = rng.uniform();
  return draw;
}

Sampler::Sampler(uint32_t vocab_size) { candidates_.reserve(vocab_size); }

model::TokenId Sampler::pick(std::span<const float> logits, const TokenDraw& params) {
  assert(logits.size() <= candidates_.capacity() && "logits longer than the vocabulary");
  if (params.greedy() || logits.size() == 1) return argmax(logits);

  const float max_logit = *std::max_element(logits.begin(), logits.end());
  candidates_.clear();
  float total = 0.0f;
  for (size_t token = 0; token < logits.size(); ++token) {
    const float p = std::exp((logits[token] - max_logit) / params.temperature);
    candidates_.push_back({p, static_cast<model::TokenId>(token)});
    total += p;
  }
  const auto more_likely = [](const Candidate& a, const Candidate& b) {
    return a.probability != b.probability ? a.probability > b.probability : a.token < b.token;
  };

  auto end = candidates_.end();
  if (params.top_k > 0 && params.top_k < candidates_.size()) {
    end = candidates_.begin() + params.top_k;
    std::nth_element(candidates_.begin(), end - 1, candidates_.end(), more_likely);
    std::sort(candidates_.begin(), end, more_likely);
    total = 0.0f;
    for (auto it = candidates_.begin(); it != end; ++it) total += it->probability;
  }
  if (params.top_p < 1.0f) {
    if (end == candidates_.end()) {
      // No token but the most likely one can be in the nucleus with less than
      // (1 - top_p) / (n - 1) of the mass (llama2.c's trick): drop those before sorting. The most
      // likely token (probability exp(0) = 1) always stays.
      const float cutoff = std::min(
          1.0f, (1.0f - params.top_p) / static_cast<float>(candidates_.size() - 1) * total);
      end = std::partition(candidates_.begin(), candidates_.end(),
                           [&](const Candidate& c) { return c.probability >= cutoff; });
      std::sort(candidates_.begin(), end, more_likely);
    }
    const float target = params.top_p * total;
    float mass = 0.0f;
    for (auto it = candidates_.begin(); it != end; ++it) {
      mass += it->probability;
      if (mass >= target) {
        end = it + 1;
        break;
      }
    }
    total = mass;
  }

  // Inverse transform over the kept candidates; rounding can leave u·total past the last
  // cumulative sum, which then picks the last candidate.
  const float u = params.uniform * total;
  float cumulative = 0.0f;
  for (auto it = candidates_.begin(); it != end; ++it) {
    cumulative += it->probability;
    if (u < cumulative) return it->token;
  }
  return (end - 1)->token;
}

}  // namespace kvferry::engine
