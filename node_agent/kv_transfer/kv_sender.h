// The prefill side of a KV transfer (DESIGN.md §2, step 4): for each /agent/prefill, the
// connection to the decode agent named in its target, the prompt's prefill, and after each layer
// of the last chunk that layer's K and V writes of the blocks the target lacks, as one batch
// ending with the immediate (slot, layer). It answers once the first token is sampled and every
// write has completed, so a failed transfer is an error before the client's first byte.
//
// The engine thread never waits on the network here:
// - a peer met for the first time is connected by the PeerConnector on its own threads; the
//   prefills for that peer wait (as state, not on a thread) and run when the result is posted
//   back; a failed connect answers them 502;
// - a post the transport refuses as full (RESOURCE_EXHAUSTED) is queued and posted again when a
//   completion frees room or on the next loop turn; one still refused after op_timeout fails
//   its prefill (503). Posts queue behind refused ones, so batches leave in order.
//
// With `kv_checksum` (agent.kv_checksum), each layer's K and V of the blocks it sends are hashed
// (kv_checksum.h) as the layer is posted, and the answer carries the hashes for the decode agent.
//
// Thread: the engine thread owns it; the agent posts each polled completion to onCompletion().
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/control_wire.h"
#include "node_agent/channels.h"
#include "node_agent/engine/engine.h"
#include "node_agent/kv_transfer/kv_checksum.h"
#include "node_agent/kv_transfer/peer_connector.h"
#include "node_agent/metrics.h"
#include "node_agent/prefill_runner.h"
#include "rdma/kv_layout.h"
#include "rdma/transport.h"

namespace kvferry::agent::kv_transfer {

class KvSender {
 public:
  using Clock = std::chrono::steady_clock;

  // `pools` are this agent's registered KV pools (K0, V0, K1, V1, …); `engine_executor` is the
  // engine thread's, where connect results come back.
  KvSender(engine::Engine& engine, PrefillRunner& prefills, rdma::Transport& transport,
           PeerConnector& connector, boost::asio::any_io_executor engine_executor,
           std::vector<rdma::KvPool> pools, AgentMetrics& metrics,
           std::chrono::milliseconds op_timeout, bool kv_checksum = false);

  // /agent/prefill once it is due (a cancelled one is refused before). `reply` gets one Reply:
  // 200 PrefillResponse, 400 bad target or sampling, 409 stopped by a cancel, 502 the transfer
  // failed, 503 the transport stayed full or no KV room (code kv_capacity). An error says
  // whether a write it posted may still land on the target (wire::AgentError::writes_settled).
  void prefill(wire::PrefillRequest request, std::shared_ptr<ReplyChannel> reply,
               std::shared_ptr<const StopFlag> stop);
  void onCompletion(const rdma::Completion& completion);
  // Posts again what the transport refused as full; fails what stayed refused past op_timeout.
  // Each loop turn.
  void retryRefused(Clock::time_point now);
  // A prefill of the request still waiting for its peer's connect is answered 409 now; one
  // computing or transferring finishes on its own. True when the request has a prefill here.
  bool cancel(uint64_t request_id);
  bool idle() const { return pending_.empty(); }

 private:
  struct Pending {
    wire::PrefillRequest request;
    engine::SamplingParams sampling;
    engine::LogitParams logits;
    std::shared_ptr<ReplyChannel> reply;
    std::shared_ptr<const StopFlag> stop;
    AgentMetrics::Peer metrics;  // the target's transfer counters
    bool waiting_for_peer = false;
    rdma::PeerId peer = 0;
    bool computed = false;  // prefill returned; the first token is known
    std::optional<engine::SequenceId> seq;
    uint32_t outstanding = 0;  // writes posted or refused-and-queued, not completed
    Status error;
    bool posted = false;
    bool write_failed = false;  // a posted batch failed: its bytes may still land on the target
    Clock::time_point first_post;
    Clock::time_point last_post;
    Clock::time_point computed_at;
    wire::PrefillResponse response;
  };
  // A peer is connecting (no id yet; prefills wait) or connected.
  struct Peer {
    std::optional<rdma::PeerId> id;
    std::vector<uint64_t> waiting;  // prefill keys
  };
  // A layer's batch the transport refused as full.
  struct Refused {
    uint64_t key = 0;
    rdma::PeerId peer = 0;
    uint32_t imm = 0;
    std::vector<rdma::TransferOp> ops;
    uint64_t bytes = 0;
    Clock::time_point give_up;
  };

  void onConnected(const std::string& blob, Result<rdma::PeerId> peer);
  void compute(uint64_t key);
  void onLayer(uint64_t key, Pending& p, uint32_t layer);
  // Posts ops_ as one batch, or queues it behind earlier refused ones.
  void post(uint64_t key, Pending& p, uint32_t imm);
  void countPosted(Pending& p, uint64_t bytes);
  // Drops the queued batches of a prefill whose transfer has failed or whose blocks are gone.
  void dropRefused(uint64_t key);
  void finishIfDone(uint64_t key);
  void finish(uint64_t key);
  // Answers a prefill that never computed (its connect failed, or it was cancelled) and forgets it.
  void answerWaiting(uint64_t key, Reply reply);
  AgentMetrics::Peer peerMetrics(uint32_t node_id);

  engine::Engine& engine_;
  PrefillRunner& prefills_;
  rdma::Transport& transport_;
  PeerConnector& connector_;
  const boost::asio::any_io_executor engine_executor_;
  const std::vector<rdma::KvPool> pools_;
  AgentMetrics& metrics_;
  const std::chrono::milliseconds op_timeout_;
  const bool kv_checksum_;
  KvChecksummer checksummer_{engine_};  // on the engine thread, per layer (onLayer)

  std::unordered_map<uint64_t, Pending> pending_;  // by key: the completions' cookie
  uint64_t next_key_ = 1;
  std::unordered_map<std::string, Peer> peers_;                    // by base64 blob
  std::unordered_map<uint32_t, AgentMetrics::Peer> peer_metrics_;  // by decode node id
  std::deque<Refused> refused_;
  std::vector<rdma::TransferOp> ops_;  // one layer's batch, reused
};

}  // namespace kvferry::agent::kv_transfer
