#include "node_agent/engine/kv_block_manager.h"

#include <cassert>
#include <string>

namespace kvferry::engine {

KvBlockManager::KvBlockManager(uint32_t num_blocks, uint32_t max_pending_events)
    : ref_counts_(num_blocks, 0),
      hashes_(num_blocks, 0),
      indexed_(num_blocks, false),
      lru_prev_(num_blocks, kNone),
      lru_next_(num_blocks, kNone),
      max_pending_events_(max_pending_events) {
  free_.reserve(num_blocks);
  for (uint32_t block = num_blocks; block-- > 0;) free_.push_back(block);
  index_.reserve(num_blocks);
}

Result<uint32_t> KvBlockManager::allocate() {
  uint32_t block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (lru_head_ != kNone) {
    block = lru_head_;
    unlinkEvictable(block);
    index_.erase(hashes_[block]);
    indexed_[block] = false;
    recordEvent(KvBlockEvent::Kind::kEvicted, hashes_[block]);
  } else {
    return resourceExhausted("all " + std::to_string(numBlocks()) + " KV blocks are in use");
  }
  ref_counts_[block] = 1;
  return block;
}

std::optional<uint32_t> KvBlockManager::acquireCached(uint64_t hash) {
  const auto it = index_.find(hash);
  if (it == index_.end()) return std::nullopt;
  const uint32_t block = it->second;
  if (ref_counts_[block]++ == 0) unlinkEvictable(block);
  return block;
}

bool KvBlockManager::publish(uint32_t block, uint64_t hash) {
  assert(ref_counts_[block] > 0 && "publishing a block nobody holds");
  if (indexed_[block] || !index_.emplace(hash, block).second) return false;
  hashes_[block] = hash;
  indexed_[block] = true;
  recordEvent(KvBlockEvent::Kind::kStored, hash);
  return true;
}

void KvBlockManager::release(uint32_t block) {
  assert(ref_counts_[block] > 0 && "releasing a block with no references");
  if (--ref_counts_[block] > 0) return;
  if (!indexed_[block]) {
    free_.push_back(block);
    return;
  }
  lru_prev_[block] = lru_tail_;
  lru_next_[block] = kNone;
  if (lru_tail_ != kNone) {
    lru_next_[lru_tail_] = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++evictable_count_;
}

bool KvBlockManager::drainEvents(std::vector<KvBlockEvent>& out) {
  out.insert(out.end(), events_.begin(), events_.end());
  events_.clear();
  const bool overflowed = overflowed_;
  overflowed_ = false;
  return overflowed;
}

void KvBlockManager::cachedHashes(std::vector<uint64_t>& out) const {
  out.reserve(out.size() + index_.size());
  for (const auto& entry : index_) out.push_back(entry.first);
}

void KvBlockManager::recordEvent(KvBlockEvent::Kind kind, uint64_t hash) {
  if (overflowed_) return;  // the caller resyncs from a snapshot anyway
  if (events_.size() >= max_pending_events_) {
    events_.clear();
    overflowed_ = true;
    return;
  }
  events_.push_back({kind, hash});
}

void KvBlockManager::unlinkEvictable(uint32_t block) {
  const uint32_t prev = lru_prev_[block];
  const uint32_t next = lru_next_[block];
  if (prev != kNone) {
    lru_next_[prev] = next;
  } else {
    lru_head_ = next;
  }
  if (next != kNone) {
    lru_prev_[next] = prev;
  } else {
    lru_tail_ = prev;
  }
  lru_prev_[block] = lru_next_[block] = kNone;
  --evictable_count_;
}

}  // namespace kvferry::engine
