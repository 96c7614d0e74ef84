// Token sampling from logits: greedy, temperature, top-k and top-p (nucleus), reproducible from
// a seed. The random stream is std::mt19937_64, whose output the C++ standard fixes, turned into
// floats by hand (the standard distributions differ between libraries), so one seed gives the
// same tokens on any platform whose expf agrees on the logits' probabilities.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "common/status.h"
#include "model/token_id.h"
#include "node_agent/engine/model_runner.h"

namespace kvferry::engine {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax); otherwise logits are divided by it
  uint32_t top_k = 0;        // keep the k most likely tokens; 0: all
  float top_p = 1.0f;        // keep the most likely tokens up to this probability mass; 1: all
  uint64_t seed = 0;
};

// temperature finite and ≥ 0, top_p in (0, 1].
Status validateSamplingParams(const SamplingParams& params);

// The index of the largest logit, the lowest one on ties.
model::TokenId argmax(std::span<const float> logits);

// One sequence's random stream. Cheap to move; each sequence owns its own, so a sequence's tokens
// do not depend on which others share its batch.
class SamplingRng {
 public:
  explicit SamplingRng(uint64_t seed) : engine_(seed) {}
  // Uniform in [0, 1), 24 random bits.
  float uniform() {
    ++draws_;
    return static_cast<float>(engine_() >> 40) * 0x1p-24f;
  }
  // Advances the stream as `draws` calls of uniform() would (linear in `draws`), so another
  // agent can go on with a stream this one started: SamplingRng(seed) then discard(draws()).
  void discard(uint64_t draws) {
    engine_.discard(draws);
    draws_ += draws;
  }
  // uniform() calls so far, discarded ones included.
  uint64_t draws() const { return draws_; }

 private:
  std::mt19937_64 engine_;
  uint64_t draws_ = 0;
};

// The draw for a sequence's next token: takes the next uniform from `rng` unless the params are
// greedy (temperature 0 or top_k 1), which leave it alone.
TokenDraw drawFor(const SamplingParams& params, SamplingRng& rng);

// Holds the scratch a draw needs (one entry per vocabulary token), so sample() allocates nothing.
// Not thread-safe: one per sampling thread, shared by the sequences it serves.
class Sampler {
 public:
  explicit Sampler(uint32_t vocab_size);

  // A token drawn from softmax(logits / temperature) restricted to the top-k, then to the
  // smallest set of most likely tokens whose probability reaches top_p (renormalized). Greedy
  // when temperature is 0 or top_k is 1; `rng` is not advanced then. Ties in probability rank by
  // lower token id. logits.size() must be the vocabulary size; params must be valid.
  model::TokenId sample(std::span<const float> logits, const SamplingParams& params,
                        SamplingRng& rng) {
    return pick(logits, drawFor(params, rng));
  }
  // The same with the random number already drawn: draw.uniform picks in the sorted candidates.
  model::TokenId pick(std::span<const float> logits, const TokenDraw& draw);

 private:
  struct Candidate {
    float probability;  // unnormalized: exp((logit - max) / temperature)
    model::TokenId token;
  };
  std::vector<Candidate> candidates_;
};

}  // namespace kvferry::engine
