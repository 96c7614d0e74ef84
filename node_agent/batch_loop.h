// The continuous batching loop (DESIGN.md §2, step 5): the engine thread's main loop, the
// sequences being decoded and the streams their tokens go to. A sequence joins from
// /agent/generate (prefilled here) or as an imported lease whose KV has landed (admitImported,
// which the KV receiver's callback calls); each turn runs the work other threads posted, then
// one batched decode step over at most max_batch_sequences sequences, rotating when more decode.
// The runner picks each step's tokens where the logits are (on the device, for CUDA), unless a
// sequence of the step has logit processors or logprobs (engine/logit_processor.h): that step's
// logits come to the host and every token of it is picked here.
//
// Thread: the engine thread owns it; run() is that thread's body.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "common/control_wire.h"
#include "node_agent/channels.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/logit_processor.h"
#include "node_agent/engine/sampler.h"
#include "node_agent/engine_work.h"
#include "node_agent/metrics.h"
#include "node_agent/prefill_runner.h"

namespace kvferry::agent {

class BatchLoop {
 public:
  BatchLoop(engine::Engine& engine, PrefillRunner& prefills, AgentMetrics& metrics,
            uint32_t max_batch_sequences);

  // The engine thread's body, until `stop`: runs the handlers posted to `work`, then
  // `each_turn` (the other parts' periodic work: lease expiry, refused posts), then one decode
  // step while a sequence decodes; with none, it waits up to 20 ms for posted work. It never
  // sleeps otherwise: a turn is as long as the handlers and the step it runs.
  void run(boost::asio::io_context& work, const std::atomic<bool>& stop,
           const std::function<void()>& each_turn);

  // /agent/generate once it is due to run (a cancelled one is refused before): prefill, the
  // first token, then the sequence decodes. `stop` (may be null) stops the prefill.
  void generate(const wire::GenerateRequest& request, std::shared_ptr<Stream> stream,
                const StopFlag* stop);
  // A sequence whose imported KV is committed: decodes from decode.first_token with the
  // request's sampling (after its random draws). Takes ownership of `seq`.
  void admitImported(engine::SequenceId seq, const wire::DecodeRequest& decode,
                     std::shared_ptr<Stream> stream);
  // Ends the request's sequences with a "cancelled" error line; true when there was one.
  bool cancel(uint64_t request_id);

  size_t decoding() const { return decoding_.size(); }
  // The engine's share of a heartbeat: decoding sequences, KV blocks, prefix-index events.
  void report(bool snapshot, NodeReport& out);

 private:
  struct Decoding {
    uint64_t request_id = 0;
    engine::SequenceId seq = 0;
    std::shared_ptr<Stream> stream;
    engine::SamplingParams sampling;
    engine::SamplingRng rng{0};
    engine::LogitProcessor logits;  // penalties, logit_bias, min_tokens, logprobs
    model::TokenId next = 0;        // fed at the next step; -1 after a stop token
    uint32_t remaining = 0;         // tokens the stream may still add
    std::vector<model::TokenId> stop;
  };

  void decodeStep();
  // Sends the finish line (unless the reader left), releases the sequence, drops it.
  void finish(size_t index, std::string_view reason, std::string_view message = {},
              std::string_view code = {});
  void publishGauges();

  engine::Engine& engine_;
  PrefillRunner& prefills_;
  AgentMetrics& metrics_;
  const uint32_t max_batch_sequences_;
  std::vector<Decoding> decoding_;
  // Reused by every step, so a step allocates nothing once they have grown.
  std::vector<engine::TokenDraw> step_draws_;
  std::vector<model::TokenId> step_next_;
  std::vector<float> step_logits_;  // a step picked on the host: ids.size() × vocab
  engine::Sampler sampler_;
  std::vector<engine::SequenceId> step_ids_;
  std::vector<model::TokenId> step_tokens_;
  std::vector<size_t> step_done_;
  std::vector<engine::KvBlockEvent> events_;
};

}  // namespace kvferry::agent
