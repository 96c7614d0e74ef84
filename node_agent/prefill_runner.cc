#include "node_agent/prefill_runner.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "node_agent/fault_point.h"
#include "node_agent/wire_engine.h"

namespace kvferry::agent {

using Clock = std::chrono::steady_clock;

PrefillRunner::PrefillRunner(engine::Engine& engine, AgentMetrics& metrics)
    : engine_(engine), metrics_(metrics), sampler_(engine.vocabSize()) {}

Status PrefillRunner::check(const engine::SamplingParams& sampling,
                            const engine::LogitParams& logits, uint64_t rng_draws) const {
  RETURN_IF_ERROR(engine::validateSamplingParams(sampling));
  RETURN_IF_ERROR(engine::validateLogitParams(logits, engine_.vocabSize()));
  return checkRngDraws(rng_draws, engine_.maxSequenceTokens());
}

Result<PrefillRunner::Prefilled> PrefillRunner::run(
    std::span<const model::TokenId> tokens, const engine::SamplingParams& sampling,
    engine::LogitProcessor& processor, uint64_t rng_draws,
    const engine::LayerDoneCallback& on_layer, const StopFlag* stop, const StopFlag* also_stop) {
  // The first token's draw is the stream's next one (a resumed answer's stream goes on where it
  // stopped); the engine picks the token where the logits are, unless the processors need them
  // here.
  faultPoint(config::FaultPhase::kBeforePrefill);
  engine::SamplingRng rng(sampling.seed);
  rng.discard(rng_draws);
  const engine::TokenDraw draw = engine::drawFor(sampling, rng);
  engine::LogitProcessor::PickedToken first;
  const Clock::time_point start = Clock::now();
  auto stop_requested = [stop, also_stop] {
    return (stop != nullptr && stop->load(std::memory_order_relaxed)) ||
           (also_stop != nullptr && also_stop->load(std::memory_order_relaxed));
  };
  const bool on_host = processor.active();
  if (on_host) logits_.resize(engine_.vocabSize());
  Result<engine::PrefillResult> prefilled =
      on_host ? engine_.prefill(tokens, logits_, on_layer, stop_requested)
              : engine_.prefill(tokens, draw, first.token, on_layer, stop_requested);
  ASSIGN_OR_RETURN(engine::PrefillResult result, std::move(prefilled));
  if (on_host) {
    first = processor.pick(logits_, sampler_, draw);
  } else {
    processor.accept(first.token);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const uint64_t computed = tokens.size() - result.cached_tokens;
  noteTime(computed, seconds);
  metrics_.prefill_seconds.Observe(seconds);
  metrics_.prefill_tokens.Increment(static_cast<double>(computed));
  metrics_.prefill_cached_tokens.Increment(result.cached_tokens);

  Prefilled out;
  out.seq = result.id;
  out.cached_tokens = result.cached_tokens;
  out.rng = std::move(rng);
  out.first = std::move(first);
  out.prefill_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  spdlog::debug("node agent: prefill of {} tokens ({} cached) in {:.2f} ms", tokens.size(),
                result.cached_tokens, out.prefill_ms);
  return out;
}

void PrefillRunner::noteTime(uint64_t tokens, double seconds) {
  if (tokens == 0) return;
  // A running per-token cost (the scheduler's linear term); the fixed and quadratic terms stay 0
  // until there is a fit worth the name.
  const double per_token = seconds / static_cast<double>(tokens);
  cost_model_.per_token_s =
      cost_model_.per_token_s == 0 ? per_token : 0.9 * cost_model_.per_token_s + 0.1 * per_token;
}

}  // namespace kvferry::agent
