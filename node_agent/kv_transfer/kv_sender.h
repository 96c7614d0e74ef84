// The prefill side of a KV transfer (DESIGN.md §2, step 4): for each /agent/prefill, the
// connection to the decode agent named in its target, the prompt's prefill, and after each layer
// of the last chunk that layer's K and V writes of the blocks the target lacks, as one batch
// ending with the immediate (slot, layer). It answers once the first token is sampled and every
// write has completed, so a failed transfer is an error before the client's first byte.
//
// A peer met for the first time is connected on the spot, and a post the transport refuses as
// full (RESOURCE_EXHAUSTED) is tried again until op_timeout: both wait on the engine thread.
//
// Thread: the engine thread owns it; the agent posts each polled completion to onCompletion().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/control_wire.h"
#include "node_agent/channels.h"
#include "node_agent/engine/engine.h"
#include "node_agent/metrics.h"
#include "node_agent/prefill_runner.h"
#include "rdma/kv_layout.h"
#include "rdma/transport.h"

namespace kvferry::agent::kv_transfer {

class KvSender {
 public:
  using Clock = std::chrono::steady_clock;

  // `pools` are this agent's registered KV pools (K0, V0, K1, V1, …).
  KvSender(engine::Engine& engine, PrefillRunner& prefills, rdma::Transport& transport,
           std::vector<rdma::KvPool> pools, AgentMetrics& metrics,
           std::chrono::milliseconds op_timeout);

  // /agent/prefill once it is due (a cancelled one is refused before). `reply` gets one Reply:
  // 200 PrefillResponse, 400 bad target or sampling, 409 stopped by a cancel, 502 the transfer
  // failed, 503 the transport stayed full.
  void prefill(wire::PrefillRequest request, std::shared_ptr<ReplyChannel> reply,
               std::shared_ptr<const StopFlag> stop);
  void onCompletion(const rdma::Completion& completion);
  // True when the request has a prefill here (it finishes on its own).
  bool cancel(uint64_t request_id);
  bool idle() const { return pending_.empty(); }

 private:
  struct Pending {
    wire::PrefillRequest request;
    engine::SamplingParams sampling;
    std::shared_ptr<ReplyChannel> reply;
    std::shared_ptr<const StopFlag> stop;
    AgentMetrics::Peer metrics;  // the target's transfer counters
    rdma::PeerId peer = 0;
    bool computed = false;  // prefill returned; the first token is known
    std::optional<engine::SequenceId> seq;
    uint32_t outstanding = 0;  // writes posted, not completed
    Status error;
    bool posted = false;
    Clock::time_point first_post;
    wire::PrefillResponse response;
  };
  Result<rdma::PeerId> peerFor(const std::string& blob_base64);
  void compute(uint64_t key);
  void onLayer(uint64_t key, Pending& p, uint32_t layer);
  // Posts ops_ as one batch.
  void post(uint64_t key, Pending& p, uint32_t imm);
  void finishIfDone(uint64_t key);
  void finish(uint64_t key);
  AgentMetrics::Peer peerMetrics(uint32_t node_id);

  engine::Engine& engine_;
  PrefillRunner& prefills_;
  rdma::Transport& transport_;
  const std::vector<rdma::KvPool> pools_;
  AgentMetrics& metrics_;
  const std::chrono::milliseconds op_timeout_;

  std::unordered_map<uint64_t, Pending> pending_;  // by key: the completions' cookie
  uint64_t next_key_ = 1;
  std::unordered_map<std::string, rdma::PeerId> peers_;            // by base64 blob
  std::unordered_map<uint32_t, AgentMetrics::Peer> peer_metrics_;  // by decode node id
  std::vector<rdma::TransferOp> ops_;                              // one layer's batch, reused
};

}  // namespace kvferry::agent::kv_transfer
