// One prompt's prefill, for the two parts that start sequences: the KV sender (/agent/prefill,
// whose per-layer callback posts the transfer) and the batch loop (/agent/generate). It runs the
// engine's chunked prefill, stopped before a chunk when the request is cancelled, samples the
// first token with the request's seed (after a resumed answer's draws) — on the runner's side
// (the device, for CUDA) unless the request's logit processors need the logits on the host —
// and keeps the prefill metrics and the per-token cost model the heartbeats carry.
//
// Thread: the engine thread owns it (it drives the Engine).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/control_wire.h"
#include "common/status.h"
#include "node_agent/channels.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/logit_processor.h"
#include "node_agent/engine/sampler.h"
#include "node_agent/metrics.h"

namespace kvferry::agent {

class PrefillRunner {
 public:
  PrefillRunner(engine::Engine& engine, AgentMetrics& metrics);

  struct Prefilled {
    engine::SequenceId seq = 0;  // the caller releases it
    uint32_t cached_tokens = 0;
    engine::LogitProcessor::PickedToken first;  // and its logprobs, when asked
    engine::SamplingRng rng{0};  // the request's stream after the first token's draws
    double prefill_ms = 0;
  };

  // The request's sampling parameters, logit processors and random draws, checked before any
  // work (INVALID_ARGUMENT).
  Status check(const engine::SamplingParams& sampling, const engine::LogitParams& logits,
               uint64_t rng_draws) const;

  // Engine::prefill of `tokens` with `on_layer`, stopped before its next chunk once `stop` or
  // `also_stop` (either may be null) is raised: CANCELLED then. The first token is picked
  // through `processor` (built over `tokens`), which accepts it. Everything must have passed
  // check().
  Result<Prefilled> run(std::span<const model::TokenId> tokens,
                        const engine::SamplingParams& sampling, engine::LogitProcessor& processor,
                        uint64_t rng_draws, const engine::LayerDoneCallback& on_layer,
                        const StopFlag* stop, const StopFlag* also_stop);

  // Seconds per computed prompt token (a running average): the scheduler's linear term.
  const wire::PrefillModel& costModel() const { return cost_model_; }

 private:
  void noteTime(uint64_t tokens, double seconds);

  engine::Engine& engine_;
  AgentMetrics& metrics_;
  wire::PrefillModel cost_model_;
  // The host path of the first token (a request whose logit processors are active).
  engine::Sampler sampler_;
  std::vector<float> logits_;
};

}  // namespace kvferry::agent
