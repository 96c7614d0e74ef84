#include "orchestrator/registry.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "common/format.h"

namespace kvferry::orchestrator {
namespace {

Result<scheduler::NodeRole> parseRole(std::string_view role) {
  if (role == "prefill") return scheduler::NodeRole::kPrefill;
  if (role == "decode") return scheduler::NodeRole::kDecode;
  if (role == "both") return scheduler::NodeRole::kBoth;
  return invalidArgument("role '" + std::string(role) + "' is not prefill, decode or both");
}

// "field X differs from the cluster's Y" as a 409 reason.
Status mismatch(std::string_view field, std::string_view agent, std::string_view cluster) {
  return failedPrecondition(std::string(field) + " " + std::string(agent) +
                            " differs from the cluster's " + std::string(cluster));
}

Status checkU32(std::string_view field, uint32_t agent, uint32_t cluster) {
  if (cluster == 0 || agent == cluster) return Status::ok();
  return mismatch(field, std::to_string(agent), std::to_string(cluster));
}

Status checkText(std::string_view field, const std::string& agent, const std::string& cluster) {
  if (agent == cluster) return Status::ok();
  return mismatch(field, agent.empty() ? "(empty)" : agent, cluster);
}

scheduler::KvEventBatch toBatch(NodeId node, const wire::KvEventBatchWire& batch) {
  scheduler::KvEventBatch out;
  out.node = node;
  out.sequence = batch.sequence;
  if (!batch.stored.empty()) {
    out.events.push_back({scheduler::KvEventKind::kStored, batch.stored});
  }
  if (!batch.evicted.empty()) {
    out.events.push_back({scheduler::KvEventKind::kEvicted, batch.evicted});
  }
  return out;
}

uint64_t saturatingSub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

std::string_view livenessName(NodeLiveness liveness) {
  switch (liveness) {
    case NodeLiveness::kAlive:
      return "alive";
    case NodeLiveness::kDead:
      return "dead";
    case NodeLiveness::kLeft:
      return "left";
  }
  return "dead";
}

NodeRegistry::NodeRegistry(ClusterIdentity identity, std::chrono::milliseconds heartbeat_timeout,
                           double link_bandwidth_bytes_per_s,
                           std::chrono::milliseconds forget_after)
    : identity_(std::move(identity)),
      heartbeat_timeout_(heartbeat_timeout),
      link_bandwidth_bytes_per_s_(link_bandwidth_bytes_per_s),
      forget_after_(forget_after) {}

Result<NodeRegistry::Registered> NodeRegistry::registerNode(const wire::RegisterRequest& request,
                                                            Clock::time_point now) {
  // Malformed registrations first (400), then identity (409).
  ASSIGN_OR_RETURN(scheduler::NodeRole role, parseRole(request.role));
  if (request.transport_blob.empty()) return invalidArgument("transport_blob is empty");
  ASSIGN_OR_RETURN(http::tcp::endpoint endpoint,
                   http::parseEndpoint(request.control_address, "control_address"));
  if (endpoint.port() == 0) {
    return invalidArgument("control_address '" + request.control_address + "' has port 0");
  }

  RETURN_IF_ERROR(
      checkText("model_fingerprint", request.model_fingerprint, identity_.model_fingerprint));
  RETURN_IF_ERROR(checkText("tokenizer_hash", request.tokenizer_hash, identity_.tokenizer_hash));
  RETURN_IF_ERROR(checkU32("block_tokens", request.block_tokens, identity_.block_tokens));
  // Not told: the cluster's seed id would be what a forged registration needs to be admitted.
  if (request.hash_seed_id != identity_.hash_seed_id) {
    return failedPrecondition("hash_seed_id " +
                              (request.hash_seed_id.empty() ? "(empty)" : request.hash_seed_id) +
                              " is not the cluster's: the agent's model.hash_seed must be the "
                              "orchestrator's");
  }
  RETURN_IF_ERROR(checkU32("kv_layout.layers", request.kv_layout.layers, identity_.layers));
  RETURN_IF_ERROR(checkU32("kv_layout.kv_heads", request.kv_layout.kv_heads, identity_.kv_heads));
  RETURN_IF_ERROR(checkU32("kv_layout.head_dim", request.kv_layout.head_dim, identity_.head_dim));
  // KV moves between any two nodes as raw bytes: every live node must store it alike.
  for (const NodeRecord& other : nodes_) {
    if (other.liveness != NodeLiveness::kAlive || other.control_endpoint == endpoint) continue;
    const wire::KvLayout& theirs = other.registration.kv_layout;
    if (request.kv_layout.dtype != theirs.dtype) {
      return mismatch("kv_layout.dtype", request.kv_layout.dtype, theirs.dtype);
    }
    if (request.kv_layout.block_bytes != theirs.block_bytes) {
      return mismatch("kv_layout.block_bytes", std::to_string(request.kv_layout.block_bytes),
                      std::to_string(theirs.block_bytes));
    }
    break;
  }

  Registered out;
  for (NodeRecord& other : nodes_) {
    if (other.liveness == NodeLiveness::kAlive && other.control_endpoint == endpoint) {
      out.replaced = other.id;
      retire(other, NodeLiveness::kDead);
    }
  }
  NodeRecord& node = nodes_.emplace_back();
  node.id = static_cast<NodeId>(nodes_.size() - 1);
  node.token = randomNonZeroId();  // never 0: a request without one never matches
  node.registration = request;
  node.role = role;
  node.control_endpoint = endpoint;
  node.load.free_kv_blocks = request.kv_blocks;
  node.load.total_kv_blocks = request.kv_blocks;
  node.prefill_model = request.prefill_model;
  node.registered_at = now;
  node.last_heartbeat = now;
  index_.addNode(node.id);
  out.id = node.id;
  out.token = node.token;
  return out;
}

NodeRecord* NodeRegistry::liveNode(NodeId id) {
  if (id >= nodes_.size() || nodes_[id].liveness != NodeLiveness::kAlive) return nullptr;
  return &nodes_[id];
}

void NodeRegistry::retire(NodeRecord& node, NodeLiveness liveness) {
  node.liveness = liveness;
  index_.removeNode(node.id);
}

Result<wire::HeartbeatResponse> NodeRegistry::heartbeat(const wire::HeartbeatRequest& request,
                                                        Clock::time_point now) {
  NodeRecord* node = liveNode(request.node_id);
  if (node != nullptr && node->token != request.node_token) {
    return notFound("node " + std::to_string(request.node_id) +
                    " is another registration (the orchestrator restarted, or the node registered "
                    "again): register again");
  }
  if (node == nullptr) {
    if (request.node_id < nodes_.size()) {
      return notFound("node " + std::to_string(request.node_id) + " is " +
                      std::string(livenessName(nodes_[request.node_id].liveness)) +
                      ": register again");
    }
    return notFound("node " + std::to_string(request.node_id) + " is not registered");
  }
  node->load = request.load;
  node->prefill_model = request.prefill_model;
  node->draining = request.draining;
  node->last_heartbeat = now;
  // The report shows every block given back so far, the takes it numbers (at or below its
  // kv_sequence) and, as far as anyone can tell, the unnumbered ones.
  const uint64_t shown = request.load.kv_sequence;
  std::erase_if(node->kv_takes, [shown](const NodeRecord::KvTake& take) {
    return take.sequence == 0 || take.sequence <= shown;
  });
  node->kv_returned_since_report = 0;
  node->kv_full_until_report = false;
  if (request.kv_snapshot) {
    index_.resync(node->id, request.kv_snapshot->sequence, request.kv_snapshot->stored);
  }
  for (const wire::KvEventBatchWire& batch : request.kv_events) {
    index_.apply(toBatch(node->id, batch));  // duplicates and held batches are the index's job
  }
  wire::HeartbeatResponse response;
  response.resync = index_.needsResync(node->id);
  return response;
}

Status NodeRegistry::leave(NodeId id, uint64_t token) {
  if (id >= nodes_.size() || nodes_[id].token != token) {
    return notFound("node " + std::to_string(id) + " is not registered");
  }
  if (nodes_[id].liveness == NodeLiveness::kAlive) retire(nodes_[id], NodeLiveness::kLeft);
  return Status::ok();
}

std::vector<NodeId> NodeRegistry::expire(Clock::time_point now) {
  std::vector<NodeId> died;
  for (NodeRecord& node : nodes_) {
    if (node.liveness == NodeLiveness::kAlive && now - node.last_heartbeat > heartbeat_timeout_) {
      retire(node, NodeLiveness::kDead);
      died.push_back(node.id);
    }
    if (node.liveness != NodeLiveness::kAlive && !node.forgotten &&
        now - node.last_heartbeat > forget_after_) {
      node.forgotten = true;
      const std::string name = std::move(node.registration.name);
      node.registration = wire::RegisterRequest{};
      node.registration.name = name;  // for the logs of requests that still name it
      node.load = wire::Load{};
    }
  }
  return died;
}

NodeRegistry::WorkTicket& NodeRegistry::WorkTicket::operator=(WorkTicket&& other) noexcept {
  if (this != &other) {
    end();
    registry_ = std::exchange(other.registry_, nullptr);
    node_ = other.node_;
    phase_ = std::exchange(other.phase_, Phase::kNone);
    prefill_tokens_ = other.prefill_tokens_;
  }
  return *this;
}

void NodeRegistry::WorkTicket::decoding() {
  if (phase_ != Phase::kPrefill) return;
  registry_->uncountPrefill(node_, prefill_tokens_);
  registry_->countDecode(node_);
  phase_ = Phase::kDecode;
}

void NodeRegistry::WorkTicket::end() {
  if (phase_ == Phase::kPrefill) registry_->uncountPrefill(node_, prefill_tokens_);
  if (phase_ == Phase::kDecode) registry_->uncountDecode(node_);
  phase_ = Phase::kNone;
}

KvBlockStates kvBlockStates(const NodeRecord& node) {
  KvBlockStates states;
  if (node.load.total_kv_blocks == 0) {  // no heartbeat yet: its capacity, all free
    states.total = states.free = node.registration.kv_blocks;
    return states;
  }
  const wire::Load& load = node.load;
  states.total = load.total_kv_blocks;
  states.cached = std::min(load.cached_kv_blocks, load.free_kv_blocks);
  states.free = load.free_kv_blocks - states.cached;
  const uint64_t held = states.total - std::min(load.free_kv_blocks, load.total_kv_blocks);
  states.leased = std::min<uint64_t>(load.leased_blocks, held);
  states.in_use = held - states.leased;
  return states;
}

uint64_t NodeRecord::availableKvBlocks() const {
  if (kv_full_until_report) return 0;
  const uint64_t reported = uint64_t{load.free_kv_blocks} + kv_returned_since_report;
  uint64_t taken = 0;
  for (const KvTake& take : kv_takes) taken += take.blocks;
  const uint64_t available = reported > taken ? reported - taken : 0;
  return std::min<uint64_t>(available, load.total_kv_blocks);
}

NodeRegistry::KvHold& NodeRegistry::KvHold::operator=(KvHold&& other) noexcept {
  if (this != &other) {
    end();
    registry_ = std::exchange(other.registry_, nullptr);
    node_ = other.node_;
    id_ = other.id_;
    blocks_ = std::exchange(other.blocks_, 0);
  }
  return *this;
}

void NodeRegistry::KvHold::end() {
  if (registry_ == nullptr) return;
  if (node_ < registry_->nodes_.size()) {
    // A take no report has shown yet just goes; one a report showed comes back to the count.
    NodeRecord& node = registry_->nodes_[node_];
    if (std::erase_if(node.kv_takes, [&](const NodeRecord::KvTake& t) { return t.hold == id_; }) ==
        0) {
      node.kv_returned_since_report += blocks_;
    }
  }
  registry_ = nullptr;
  blocks_ = 0;
}

NodeRegistry::KvHold NodeRegistry::holdKv(NodeId id, uint64_t blocks, uint64_t sequence) {
  if (id >= nodes_.size()) return KvHold();
  const uint64_t hold = next_hold_++;
  nodes_[id].kv_takes.push_back({hold, blocks, sequence});
  return KvHold(this, id, hold, blocks);
}

void NodeRegistry::noteKvFull(NodeId id) {
  if (id < nodes_.size()) nodes_[id].kv_full_until_report = true;
}

std::vector<NodeRegistry::KvRoom> NodeRegistry::decodeKvRoom() const {
  std::vector<KvRoom> out;
  for (const NodeRecord& node : nodes_) {
    if (node.schedulable() && scheduler::canDecode(node.role)) {
      out.push_back({node.availableKvBlocks(), node.load.total_kv_blocks});
    }
  }
  return out;
}

NodeRegistry::WorkTicket NodeRegistry::startPrefill(NodeId id, uint64_t tokens) {
  countPrefill(id, tokens);
  return WorkTicket(this, id, WorkTicket::Phase::kPrefill, tokens);
}

NodeRegistry::WorkTicket NodeRegistry::startDecode(NodeId id) {
  countDecode(id);
  return WorkTicket(this, id, WorkTicket::Phase::kDecode, 0);
}

void NodeRegistry::countPrefill(NodeId id, uint64_t tokens) {
  if (id >= nodes_.size()) return;
  nodes_[id].local_prefill_tokens += tokens;
  nodes_[id].local_prefill_requests += 1;
}

void NodeRegistry::uncountPrefill(NodeId id, uint64_t tokens) {
  if (id >= nodes_.size()) return;
  NodeRecord& node = nodes_[id];
  node.local_prefill_tokens = saturatingSub(node.local_prefill_tokens, tokens);
  node.local_prefill_requests =
      static_cast<uint32_t>(saturatingSub(node.local_prefill_requests, 1));
}

void NodeRegistry::countDecode(NodeId id) {
  if (id < nodes_.size()) nodes_[id].local_decode_seqs += 1;
}

void NodeRegistry::uncountDecode(NodeId id) {
  if (id >= nodes_.size()) return;
  nodes_[id].local_decode_seqs =
      static_cast<uint32_t>(saturatingSub(nodes_[id].local_decode_seqs, 1));
}

scheduler::ClusterView NodeRegistry::view() const {
  std::vector<scheduler::NodeState> states;
  states.reserve(nodes_.size());
  for (const NodeRecord& node : nodes_) {
    scheduler::NodeState& s = states.emplace_back();
    s.role = node.role;
    s.alive = node.schedulable();
    s.queued_prefill_tokens = std::max(node.load.queued_prefill_tokens, node.local_prefill_tokens);
    s.queued_prefill_requests =
        std::max(node.load.queued_prefill_requests, node.local_prefill_requests);
    s.prefill_model = {node.prefill_model.fixed_s, node.prefill_model.per_token_s,
                       node.prefill_model.per_token_squared_s};
    s.queued_prefill_s =
        s.queued_prefill_tokens == 0 ? 0 : s.prefill_model.seconds(s.queued_prefill_tokens);
    s.active_decode_seqs = std::max(node.load.active_decode_seqs, node.local_decode_seqs);
    s.free_kv_blocks = node.availableKvBlocks();
    s.total_kv_blocks = node.load.total_kv_blocks;
  }
  return scheduler::ClusterView(std::move(states), identity_.block_tokens, transferBlockBytes(),
                                link_bandwidth_bytes_per_s_, index_);
}

size_t NodeRegistry::livePrefillNodes() const {
  return std::count_if(nodes_.begin(), nodes_.end(), [](const NodeRecord& n) {
    return n.schedulable() && scheduler::canPrefill(n.role);
  });
}

size_t NodeRegistry::liveDecodeNodes() const {
  return std::count_if(nodes_.begin(), nodes_.end(), [](const NodeRecord& n) {
    return n.schedulable() && scheduler::canDecode(n.role);
  });
}

uint32_t NodeRegistry::minMaxSequenceTokens() const {
  uint32_t least = std::numeric_limits<uint32_t>::max();
  for (const NodeRecord& node : nodes_) {
    uint32_t tokens = node.registration.max_sequence_tokens;
    if (node.schedulable() && tokens > 0) least = std::min(least, tokens);
  }
  return least == std::numeric_limits<uint32_t>::max() ? 0 : least;
}

uint64_t NodeRegistry::transferBlockBytes() const {
  for (const NodeRecord& node : nodes_) {
    if (!node.schedulable()) continue;
    const wire::KvLayout& layout = node.registration.kv_layout;
    // block_bytes is one block of one pool (one layer's K or V, rdma/kv_layout.h).
    return layout.block_bytes * 2 * layout.layers;
  }
  return 0;
}

}  // namespace kvferry::orchestrator
