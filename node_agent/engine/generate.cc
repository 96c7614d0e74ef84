#include "node_agent/engine/generate.h"

#include <algorithm>

namespace kvferry::engine {

Result<GenerateResult> generate(Engine& engine, std::span<const model::TokenId> prompt,
                                const GenerateOptions& options, const TokenCallback& on_token) {
  RETURN_IF_ERROR(validateSamplingParams(options.sampling));
  std::vector<float> logits(engine.vocabSize());
  ASSIGN_OR_RETURN(const PrefillResult prefill, engine.prefill(prompt, logits));
  Sampler sampler(engine.vocabSize());
  SamplingRng rng(options.sampling.seed);
  GenerateResult result;
  result.cached_prompt_tokens = prefill.cached_tokens;
  Status status;
  size_t length = prompt.size();
  while (true) {
    if (result.tokens.size() >= options.max_new_tokens) {
      result.finish_reason = FinishReason::kLength;
      break;
    }
    const model::TokenId token = sampler.sample(logits, options.sampling, rng);
    if (std::ranges::find(options.stop_tokens, token) != options.stop_tokens.end()) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    result.tokens.push_back(token);
    if (on_token && !on_token(token)) {
      result.finish_reason = FinishReason::kCancelled;
      break;
    }
    // The token's KV is only needed to sample another one.
    if (result.tokens.size() >= options.max_new_tokens) continue;
    if (length >= engine.maxSequenceTokens()) {
      result.finish_reason = FinishReason::kContextFull;
      break;
    }
    status = engine.decode({&prefill.id, 1}, {&token, 1}, logits);
    if (!status.isOk()) break;
    ++length;
  }
  RETURN_IF_ERROR(engine.release(prefill.id));
  RETURN_IF_ERROR(status);
  return result;
}

}  // namespace kvferry::engine
