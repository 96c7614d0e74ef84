// PrefixIndex: which KV blocks each node holds, kept exact from the nodes' KV events.
//
// Every node publishes batches of events (block stored / block evicted, named by chained block
// hashes, model/block_hash.h) numbered 1, 2, 3, … per node. Batches that arrive early are held
// until the missing ones come (up to kReorderWindow of them); a duplicate or stale batch is
// dropped. When more than kReorderWindow batches wait behind a hole, the hole is a gap: the node
// is marked as needing a full resync, later batches are ignored, and resync() replaces its set.
// The index keeps answering from what it had meanwhile (slightly stale beats nothing).
//
// Not thread-safe: the orchestrator's scheduling thread owns it (routesim: the simulator loop).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvferry::scheduler {

using NodeId = uint32_t;

// How many leading hashes of a chain satisfy `contains`: a prefix stops at its first miss.
// Shared by every cache-like structure that answers "how much of this prompt is here".
template <typename Contains>
uint32_t leadingBlocks(std::span<const uint64_t> block_hashes, Contains contains) {
  uint32_t count = 0;
  while (count < block_hashes.size() && contains(block_hashes[count])) ++count;
  return count;
}

enum class KvEventKind { kStored, kEvicted };

struct KvEvent {
  KvEventKind kind = KvEventKind::kStored;
  std::vector<uint64_t> block_hashes;
};

// One numbered batch from one node (a heartbeat's worth of events).
struct KvEventBatch {
  NodeId node = 0;
  uint64_t sequence = 0;  // 1 for the first batch after registration / resync at 0
  std::vector<KvEvent> events;
};

enum class ApplyOutcome {
  kApplied,      // this batch (and any held batches it unblocked) is in the index
  kDuplicate,    // already applied or already held: dropped
  kHeld,         // arrived early: held until the batches before it come
  kGap,          // a hole too old to wait for: the node needs a resync (batch dropped)
  kUnknownNode,  // the node is not registered (or died): dropped
};

class PrefixIndex {
 public:
  static constexpr size_t kReorderWindow = 16;

  // Registers `node` with an empty set; its next batch is number 1. Re-adding resets it.
  void addNode(NodeId node) { resync(node, 0, {}); }

  // Replaces the node's set with `blocks`, a snapshot taken after batch `sequence`; batches
  // numbered after it are applied next (held ones included). Registers the node if unknown.
  void resync(NodeId node, uint64_t sequence, std::span<const uint64_t> blocks);

  // The node died or left: its entries go.
  void removeNode(NodeId node) { nodes_.erase(node); }

  ApplyOutcome apply(KvEventBatch batch);

  bool needsResync(NodeId node) const;
  std::vector<NodeId> nodesNeedingResync() const;  // ascending ids
  bool hasNode(NodeId node) const { return nodes_.contains(node); }
  size_t blockCount(NodeId node) const;

  // How many leading blocks of the chain `block_hashes` are cached on `node` (0 if unknown).
  uint32_t cachedPrefixBlocks(NodeId node, std::span<const uint64_t> block_hashes) const;

 private:
  struct NodeEntry {
    std::unordered_set<uint64_t> blocks;
    uint64_t last_applied = 0;
    std::map<uint64_t, KvEventBatch> held;  // early batches by sequence
    bool needs_resync = false;
  };

  static void applyEvents(NodeEntry& entry, const KvEventBatch& batch);

  std::unordered_map<NodeId, NodeEntry> nodes_;
};

}  // namespace kvferry::scheduler
