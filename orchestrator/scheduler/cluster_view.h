// ClusterView: the snapshot of the cluster a policy decides on. The caller (the orchestrator's
// node registry, or routesim) fills it from the agents' reports; policies only read it.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "orchestrator/scheduler/prefix_index.h"

namespace kvferry::scheduler {

enum class NodeRole { kPrefill, kDecode, kBoth };

inline bool canPrefill(NodeRole role) { return role != NodeRole::kDecode; }
inline bool canDecode(NodeRole role) { return role != NodeRole::kPrefill; }

// Prefill time of n new tokens: t(n) = fixed_s + per_token_s·n + per_token_squared_s·n² seconds
// (the quadratic term is attention), fitted per node from what its agent reports.
struct PrefillTimeModel {
  double fixed_s = 0;
  double per_token_s = 0;
  double per_token_squared_s = 0;

  double seconds(uint64_t tokens) const {
    double n = static_cast<double>(tokens);
    return fixed_s + per_token_s * n + per_token_squared_s * n * n;
  }
};

struct NodeState {
  NodeRole role = NodeRole::kBoth;
  bool alive = true;
  uint64_t queued_prefill_tokens = 0;    // new tokens waiting or running on the prefill queue
  uint32_t queued_prefill_requests = 0;  // requests waiting or running on the prefill queue
  double queued_prefill_s = 0;           // the agent's estimate of the work left on that queue
  uint32_t active_decode_seqs = 0;       // sequences in the decode batch or admitted to it
  uint64_t free_kv_blocks = 0;           // free or evictable
  uint64_t total_kv_blocks = 0;
  PrefillTimeModel prefill_model;
};

// Node ids are indexes into nodes(). Links default to one bandwidth; setLinkBandwidth overrides
// a pair. A node's link to itself is free (colocated prefill moves nothing).
class ClusterView {
 public:
  ClusterView(std::vector<NodeState> nodes, uint32_t block_tokens, uint64_t block_bytes,
              double default_link_bytes_per_s, const PrefixIndex& index)
      : nodes_(std::move(nodes)),
        block_tokens_(block_tokens),
        block_bytes_(block_bytes),
        link_bytes_per_s_(nodes_.size() * nodes_.size(), default_link_bytes_per_s),
        index_(&index) {}

  const std::vector<NodeState>& nodes() const { return nodes_; }
  std::vector<NodeState>& mutableNodes() { return nodes_; }
  const NodeState& node(NodeId id) const { return nodes_[id]; }
  uint32_t blockTokens() const { return block_tokens_; }
  uint64_t blockBytes() const { return block_bytes_; }
  const PrefixIndex& index() const { return *index_; }

  void setLinkBandwidth(NodeId from, NodeId to, double bytes_per_s) {
    link_bytes_per_s_[from * nodes_.size() + to] = bytes_per_s;
  }
  double linkBandwidth(NodeId from, NodeId to) const {
    return link_bytes_per_s_[from * nodes_.size() + to];
  }
  // Seconds to move `blocks` KV blocks from `from` to `to` (0 when from == to).
  double transferSeconds(NodeId from, NodeId to, uint64_t blocks) const {
    if (from == to || blocks == 0) return 0;
    return static_cast<double>(blocks * block_bytes_) / linkBandwidth(from, to);
  }

 private:
  std::vector<NodeState> nodes_;
  uint32_t block_tokens_;
  uint64_t block_bytes_;
  std::vector<double> link_bytes_per_s_;
  const PrefixIndex* index_;
};

}  // namespace kvferry::scheduler
