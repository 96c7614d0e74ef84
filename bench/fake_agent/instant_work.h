// A node agent's engine side with zero compute (docs/control_plane.md, "Orchestrator → agent"):
// every call answers at once, as if the model took no time. Generate and decode stream
// `max_new_tokens` tokens from a fixed cycle and finish with "length" (a stop token of the
// request ends the stream early with "stop"); prefill answers with the next token of the cycle
// and writes nothing; reserve grants a lease on blocks that hold nothing. Heartbeats report a
// pool of `kv_blocks` free blocks and no KV events.
//
// For the fake agent (bench/fake_agent/main.cc), which puts this behind the agent's own control
// API and membership, so the orchestrator talks to it exactly as to a real `both` agent: the
// orchestrator's own cost is then all that separates its answers from the agent's.
//
// Thread: whichever thread runs the "engine" executor the control API posts to (the fake agent's
// io thread); not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "model/token_id.h"
#include "node_agent/engine/model_runner.h"
#include "node_agent/engine_work.h"

namespace kvferry::bench {

class InstantWork final : public agent::EngineWork {
 public:
  // `tokens`: the cycle every answer is drawn from (not empty); `geometry`: the KV pool it
  // reports and reserves from (blocks of block_tokens, K and V regions of each layer);
  // `backlog`: the control API's count of prefills handed over, which this takes at once.
  InstantWork(std::vector<model::TokenId> tokens, engine::KvGeometry geometry,
              agent::PrefillBacklog& backlog);

  agent::Reply reserve(const wire::ReserveRequest& request) override;
  void prefill(wire::PrefillRequest request, std::shared_ptr<agent::ReplyChannel> reply,
               std::shared_ptr<const agent::StopFlag> stop) override;
  void decode(wire::DecodeRequest request, std::shared_ptr<agent::Stream> stream) override;
  void generate(wire::GenerateRequest request, std::shared_ptr<agent::Stream> stream,
                std::shared_ptr<const agent::StopFlag> stop) override;
  void release(uint64_t lease_id, bool writer_done) override;
  void cancel(uint64_t request_id) override;
  void forgotten() override {}
  bool idle() const override { return true; }
  agent::NodeReport report(bool snapshot) override;

  // The i-th token of the cycle.
  model::TokenId tokenAt(uint64_t i) const { return tokens_[i % tokens_.size()]; }

 private:
  // Emits `count` tokens of the cycle from `from` (the first with `cached_tokens` when set), then
  // the finish line: "stop" at the first of `stop_tokens`, else "length".
  void streamTokens(agent::Stream& stream, uint64_t from, uint32_t count,
                    const std::vector<int32_t>& stop_tokens,
                    std::optional<uint32_t> cached_tokens) const;

  const std::vector<model::TokenId> tokens_;
  const engine::KvGeometry geometry_;
  agent::PrefillBacklog& backlog_;
  uint64_t next_lease_ = 1;
  uint64_t kv_sequence_ = 0;  // reservations granted
};

}  // namespace kvferry::bench
