// NodeRegistry: the orchestrator's record of the node agents (DESIGN.md §3,
// docs/control_plane.md): registration checked against the cluster's identity, heartbeats with
// load and KV events, leave, expiry of silent nodes, and the scheduler's ClusterView built from
// what is alive.
//
// Pure: no sockets and no clock reads; the caller passes `now`. Not thread-safe: the
// orchestrator's io_context thread owns it.
//
// Node ids are 0, 1, 2, … in registration order and never reused: an agent that registers again
// (after a restart, or after a 404 heartbeat) gets a new id, and its old record stays in the
// table, dead. The id is the index into the ClusterView's nodes, so dead nodes appear there with
// alive = false.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/control_wire.h"
#include "common/http.h"
#include "common/status.h"
#include "orchestrator/scheduler/cluster_view.h"
#include "orchestrator/scheduler/prefix_index.h"

namespace kvferry::orchestrator {

using Clock = std::chrono::steady_clock;
using scheduler::NodeId;

// What every agent of the cluster must share with the orchestrator; the orchestrator's own model
// file and config define it. Texts are model::hex64 values.
struct ClusterIdentity {
  std::string model_fingerprint;
  std::string tokenizer_hash;
  uint32_t block_tokens = 0;
  std::string hash_seed_id;
  // The KV geometry the model implies (layers, KV heads, head dimension); an agent must report
  // the same. 0 skips that check.
  uint32_t layers = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
};

enum class NodeLiveness {
  kAlive,
  kDead,  // missed its heartbeat deadline, or replaced by a newer registration
  kLeft,  // said goodbye (POST /v1/agents/leave)
};
std::string_view livenessName(NodeLiveness liveness);

// One registration, as the registry keeps it.
struct NodeRecord {
  NodeId id = 0;
  uint64_t token = 0;  // this registration's RegisterResponse::node_token
  wire::RegisterRequest registration;
  scheduler::NodeRole role = scheduler::NodeRole::kBoth;
  http::tcp::endpoint control_endpoint;
  NodeLiveness liveness = NodeLiveness::kAlive;
  bool draining = false;  // alive, finishing its work, not to be chosen
  wire::Load load;
  wire::PrefillModel prefill_model;
  Clock::time_point registered_at;
  Clock::time_point last_heartbeat;  // registration counts as the first one
  // The orchestrator's own count of work it sent this node that has not finished yet, so the
  // view does not lag a heartbeat behind a burst of requests.
  uint64_t local_prefill_tokens = 0;
  uint32_t local_prefill_requests = 0;
  uint32_t local_decode_seqs = 0;
  // KV blocks the orchestrator's own requests took (reservations, colocated prompts) that the
  // node's reports do not show yet, and blocks they gave back since its last heartbeat; and
  // whether the node refused a request for want of KV room since then (its estimate is 0 until
  // it reports again). A reservation's take carries the agent's number for it
  // (ReserveResponse::kv_sequence) and stays until a report at or past that number arrives: a
  // heartbeat gathered before the reservation but delivered after it does not erase it. Takes
  // without a number (colocated prompts, agents that do not number) go at the next heartbeat.
  struct KvTake {
    uint64_t hold = 0;  // KvHold's id
    uint64_t blocks = 0;
    uint64_t sequence = 0;  // 0: not numbered
  };
  std::vector<KvTake> kv_takes;
  uint64_t kv_returned_since_report = 0;
  bool kv_full_until_report = false;
  // Dead or departed for longer than the registry's forget_after: its registration is dropped
  // (the id stays taken, so no later node is mistaken for it), /v1/nodes no longer lists it and
  // its metric series are gone.
  bool forgotten = false;

  bool schedulable() const { return liveness == NodeLiveness::kAlive && !draining; }
  // KV blocks the node can hand out now, as far as the orchestrator can tell: its last report
  // (free and cached blocks) less what was taken since, plus what was given back, within 0..total.
  uint64_t availableKvBlocks() const;
};

// A node's KV blocks in the four states of wire::Load, from its last heartbeat (before the
// first one: all free). They sum to `total`. /v1/nodes and kvferry_node_kv_blocks show these.
struct KvBlockStates {
  uint64_t in_use = 0;  // sequences prefilling or decoding
  uint64_t leased = 0;  // reservations not decoding yet
  uint64_t cached = 0;  // unused, holding a reusable prefix (evictable)
  uint64_t free = 0;    // empty
  uint64_t total = 0;
};
KvBlockStates kvBlockStates(const NodeRecord& node);

class NodeRegistry {
 public:
  NodeRegistry(ClusterIdentity identity, std::chrono::milliseconds heartbeat_timeout,
               double link_bandwidth_bytes_per_s,
               std::chrono::milliseconds forget_after = std::chrono::minutes(5));

  struct Registered {
    NodeId id = 0;
    uint64_t token = 0;
    // An alive node at the same control address that this registration replaces (the agent
    // restarted before its old record expired); it is now dead.
    std::optional<NodeId> replaced;
  };
  // FAILED_PRECONDITION (HTTP 409) when the agent's model fingerprint, tokenizer hash,
  // block_tokens, hash seed id or KV layout differs from the cluster's, naming the field and both
  // values; INVALID_ARGUMENT (HTTP 400) for a role other than prefill|decode|both, an empty
  // transport_blob or a control_address that is not an IP "host:port".
  Result<Registered> registerNode(const wire::RegisterRequest& request, Clock::time_point now);

  // NOT_FOUND for an unknown, dead or departed node id (the agent registers again). Applies the
  // snapshot (if any) and then the event batches in order; the answer asks for a snapshot when
  // the prefix index saw a gap.
  Result<wire::HeartbeatResponse> heartbeat(const wire::HeartbeatRequest& request,
                                            Clock::time_point now);

  // The node leaves at once (its index entries go). NOT_FOUND for an id never registered; a
  // node already dead or gone is OK.
  Status leave(NodeId id, uint64_t token);

  // Marks dead every alive node whose last heartbeat is older than the timeout, drops its index
  // entries and returns those nodes' ids (ascending). Forgets (NodeRecord::forgotten) every dead
  // or departed node last heard from more than forget_after ago.
  std::vector<NodeId> expire(Clock::time_point now);

  // Work the orchestrator sent a node, counted while the ticket lives, so the view does not lag
  // a heartbeat behind a burst of requests (it uses the larger of this count and the node's own
  // report). A ticket counts a prefill of `tokens` tokens, or one decoding sequence; decoding()
  // turns a prefill into the sequence it became. Move-only; it must not outlive its registry.
  // Owner: the registry's thread.
  class WorkTicket {
   public:
    WorkTicket() = default;  // counts nothing
    WorkTicket(WorkTicket&& other) noexcept { *this = std::move(other); }
    WorkTicket& operator=(WorkTicket&& other) noexcept;
    WorkTicket(const WorkTicket&) = delete;
    WorkTicket& operator=(const WorkTicket&) = delete;
    ~WorkTicket() { end(); }

    // The prefill this ticket counts has produced its first token: count a decoding sequence.
    void decoding();
    // Stops counting (the destructor does it too).
    void end();

   private:
    friend class NodeRegistry;
    enum class Phase : uint8_t { kNone, kPrefill, kDecode };
    WorkTicket(NodeRegistry* registry, NodeId node, Phase phase, uint64_t prefill_tokens)
        : registry_(registry), node_(node), phase_(phase), prefill_tokens_(prefill_tokens) {}

    NodeRegistry* registry_ = nullptr;
    NodeId node_ = 0;
    Phase phase_ = Phase::kNone;
    uint64_t prefill_tokens_ = 0;
  };
  [[nodiscard]] WorkTicket startPrefill(NodeId id, uint64_t tokens);
  [[nodiscard]] WorkTicket startDecode(NodeId id);

  // KV blocks a request holds on a node (a reservation, a colocated sequence), counted against
  // the node's last report until its next heartbeat shows them (NodeRecord::availableKvBlocks).
  // Move-only; it must not outlive its registry. Owner: the registry's thread.
  class KvHold {
   public:
    KvHold() = default;  // holds nothing
    KvHold(KvHold&& other) noexcept { *this = std::move(other); }
    KvHold& operator=(KvHold&& other) noexcept;
    KvHold(const KvHold&) = delete;
    KvHold& operator=(const KvHold&) = delete;
    ~KvHold() { end(); }
    // The blocks are given back (the destructor does it too).
    void end();

   private:
    friend class NodeRegistry;
    KvHold(NodeRegistry* registry, NodeId node, uint64_t id, uint64_t blocks)
        : registry_(registry), node_(node), id_(id), blocks_(blocks) {}

    NodeRegistry* registry_ = nullptr;
    NodeId node_ = 0;
    uint64_t id_ = 0;
    uint64_t blocks_ = 0;
  };
  // `sequence`: the agent's number for the reservation (ReserveResponse::kv_sequence), 0 when
  // there is none (a colocated prompt).
  [[nodiscard]] KvHold holdKv(NodeId id, uint64_t blocks, uint64_t sequence = 0);
  // The node refused a request for want of KV room: nothing fits it until it reports again.
  void noteKvFull(NodeId id);

  // Each schedulable decode-capable node's KV room: what it can hand out now and its capacity.
  struct KvRoom {
    uint64_t available = 0;
    uint64_t total = 0;
  };
  std::vector<KvRoom> decodeKvRoom() const;

  // The scheduler's snapshot: one NodeState per id ever registered; alive only for alive,
  // non-draining nodes. Refers to this registry's prefix index: use it before the next change.
  scheduler::ClusterView view() const;

  const ClusterIdentity& identity() const { return identity_; }
  const std::vector<NodeRecord>& nodes() const { return nodes_; }
  const NodeRecord* node(NodeId id) const { return id < nodes_.size() ? &nodes_[id] : nullptr; }
  const scheduler::PrefixIndex& index() const { return index_; }
  size_t cachedBlocks(NodeId id) const { return index_.blockCount(id); }

  // Schedulable nodes that can prefill / decode.
  size_t livePrefillNodes() const;
  size_t liveDecodeNodes() const;
  // The smallest max_sequence_tokens over schedulable nodes (0 when none reports one).
  uint32_t minMaxSequenceTokens() const;
  // Bytes one KV block occupies across all layers, K and V (what a transfer moves), as the
  // schedulable nodes report it; 0 when none is.
  uint64_t transferBlockBytes() const;

 private:
  NodeRecord* liveNode(NodeId id);
  // What tickets count (NodeRecord::local_*); an end never takes a count below zero.
  void countPrefill(NodeId id, uint64_t tokens);
  void uncountPrefill(NodeId id, uint64_t tokens);
  void countDecode(NodeId id);
  void uncountDecode(NodeId id);
  void retire(NodeRecord& node, NodeLiveness liveness);

  const ClusterIdentity identity_;
  const std::chrono::milliseconds heartbeat_timeout_;
  const double link_bandwidth_bytes_per_s_;
  const std::chrono::milliseconds forget_after_;
  std::vector<NodeRecord> nodes_;
  uint64_t next_hold_ = 1;  // KvHold ids
  scheduler::PrefixIndex index_;
};

}  // namespace kvferry::orchestrator
