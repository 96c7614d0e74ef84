// Logit processors: the per-request adjustments OpenAI, vLLM and SGLang clients send — repetition,
// presence and frequency penalties, logit_bias, min_tokens — and the log-probabilities they may ask
// for, applied on the host to one sequence's logits row before its token is picked. The one place
// they live for every backend: a runner that samples on the device keeps doing so for sequences
// whose processor is not active() and brings the logits of the others to the host (the CPU runner
// has them there anyway).
//
// What each does (docs/api.md says the same to clients):
//  - repetition_penalty r (vLLM, HF transformers): every token of the prompt or the answer so far
//    has its logit divided by r when positive, multiplied by r when not;
//  - frequency_penalty f and presence_penalty p (OpenAI): a token the answer holds c > 0 times
//    loses f·c + p;
//  - logit_bias: added to the token's logit;
//  - min_tokens: the stop tokens' logits are −∞ while the answer has fewer tokens.
// Applied in that order. Logprobs are of the raw logits (their log-softmax, before any of the
// above and before temperature): what the model says, as vLLM reports by default.
//
// Thread: one sequence's, used by the thread that samples it (the agent's engine thread).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/token_id.h"
#include "node_agent/engine/model_runner.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::engine {

struct LogitParams {
  float repetition_penalty = 1.0f;                           // (0, 2]; 1: off
  float presence_penalty = 0.0f;                             // [-2, 2]
  float frequency_penalty = 0.0f;                            // [-2, 2]
  std::vector<std::pair<model::TokenId, float>> logit_bias;  // [-100, 100] each
  uint32_t min_tokens = 0;
  std::vector<model::TokenId> stop_tokens;  // what min_tokens masks
  // Report each token's log-probability and this many most likely tokens' (at most kMaxLogprobs).
  std::optional<uint32_t> logprobs;
};

inline constexpr uint32_t kMaxLogprobs = 20;

// Every range above, and token ids inside a vocabulary of `vocab_size`.
Status validateLogitParams(const LogitParams& params, uint32_t vocab_size);

// A token's log-probability and the most likely tokens' (most likely first, lower id on ties).
struct TokenLogprobs {
  float logprob = 0.0f;
  std::vector<std::pair<model::TokenId, float>> top;
};

// Log-probabilities below this are reported as this (−∞ has no JSON form; vLLM does the same).
inline constexpr float kMinLogprob = -9999.0f;

// log_softmax(logits) at `chosen`, and the `top` largest entries, into `out` (whose `top` keeps
// its capacity, so a reused `out` allocates nothing).
void computeLogprobs(std::span<const float> logits, model::TokenId chosen, uint32_t top,
                     TokenLogprobs& out);

class LogitProcessor {
 public:
  // Does nothing: every sequence that asked for none of the above.
  LogitProcessor() = default;
  // A sequence that holds `context` (the prompt, then the answer so far), whose last
  // `answer_tokens` tokens are the answer's (a resumed answer's; 0 for a fresh one). `params` must
  // be valid.
  LogitProcessor(LogitParams params, std::span<const model::TokenId> context,
                 uint32_t answer_tokens);

  // Whether this sequence's logits must reach the host: a processor changes them or logprobs are
  // reported.
  bool active() const { return changesLogits() || params_.logprobs.has_value(); }
  bool changesLogits() const;
  std::optional<uint32_t> logprobs() const { return params_.logprobs; }

  // Applies the processors to the sequence's next-token logits, in place.
  void apply(std::span<float> logits) const;
  // Counts `token` as the answer's next token.
  void accept(model::TokenId token);
  uint32_t answerTokens() const { return answer_tokens_; }

  // The host path of the sequence's next token: its logprobs from the raw row (when asked), the
  // processors (they change `logits`), the pick as `draw` says, and the token accepted.
  struct PickedToken {
    model::TokenId token = 0;
    std::optional<TokenLogprobs> logprobs;
  };
  PickedToken pick(std::span<float> logits, Sampler& sampler, const TokenDraw& draw);

 private:
  LogitParams params_;
  std::unordered_set<model::TokenId> seen_;              // prompt and answer (repetition)
  std::unordered_map<model::TokenId, uint32_t> counts_;  // answer (presence, frequency)
  uint32_t answer_tokens_ = 0;
  std::vector<float> raw_;  // the row before apply(), when logprobs are reported of it
};

}  // namespace kvferry::engine
