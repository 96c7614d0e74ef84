#include "orchestrator/scheduler/prefix_index.h"

#include <algorithm>
#include <utility>

namespace kvferry::scheduler {

void PrefixIndex::resync(NodeId node, uint64_t sequence, std::span<const uint64_t> blocks) {
  NodeEntry& entry = nodes_[node];
  entry.blocks = std::unordered_set<uint64_t>(blocks.begin(), blocks.end());
  entry.last_applied = sequence;
  entry.needs_resync = false;
  // Held batches the snapshot already covers are stale; the rest may now apply in order.
  entry.held.erase(entry.held.begin(), entry.held.upper_bound(sequence));
  while (!entry.held.empty() && entry.held.begin()->first == entry.last_applied + 1) {
    applyEvents(entry, entry.held.begin()->second);
    entry.last_applied = entry.held.begin()->first;
    entry.held.erase(entry.held.begin());
  }
}

ApplyOutcome PrefixIndex::apply(KvEventBatch batch) {
  auto it = nodes_.find(batch.node);
  if (it == nodes_.end()) return ApplyOutcome::kUnknownNode;
  NodeEntry& entry = it->second;
  if (entry.needs_resync) return ApplyOutcome::kGap;
  if (batch.sequence <= entry.last_applied || entry.held.contains(batch.sequence)) {
    return ApplyOutcome::kDuplicate;
  }
  if (batch.sequence != entry.last_applied + 1) {
    if (entry.held.size() >= kReorderWindow) {
      entry.needs_resync = true;
      entry.held.clear();
      return ApplyOutcome::kGap;
    }
    uint64_t sequence = batch.sequence;
    entry.held.emplace(sequence, std::move(batch));
    return ApplyOutcome::kHeld;
  }
  applyEvents(entry, batch);
  entry.last_applied = batch.sequence;
  while (!entry.held.empty() && entry.held.begin()->first == entry.last_applied + 1) {
    applyEvents(entry, entry.held.begin()->second);
    entry.last_applied = entry.held.begin()->first;
    entry.held.erase(entry.held.begin());
  }
  return ApplyOutcome::kApplied;
}

void PrefixIndex::applyEvents(NodeEntry& entry, const KvEventBatch& batch) {
  for (const KvEvent& event : batch.events) {
    for (uint64_t hash : event.block_hashes) {
      if (event.kind == KvEventKind::kStored) {
        entry.blocks.insert(hash);
      } else {
        entry.blocks.erase(hash);
      }
    }
  }
}

bool PrefixIndex::needsResync(NodeId node) const {
  auto it = nodes_.find(node);
  return it != nodes_.end() && it->second.needs_resync;
}

std::vector<NodeId> PrefixIndex::nodesNeedingResync() const {
  std::vector<NodeId> out;
  for (const auto& [node, entry] : nodes_) {
    if (entry.needs_resync) out.push_back(node);
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t PrefixIndex::blockCount(NodeId node) const {
  auto it = nodes_.find(node);
  return it == nodes_.end() ? 0 : it->second.blocks.size();
}

uint32_t PrefixIndex::cachedPrefixBlocks(NodeId node,
                                         std::span<const uint64_t> block_hashes) const {
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return 0;
  const std::unordered_set<uint64_t>& blocks = it->second.blocks;
  return leadingBlocks(block_hashes, [&](uint64_t hash) { return blocks.contains(hash); });
}

}  // namespace kvferry::scheduler
