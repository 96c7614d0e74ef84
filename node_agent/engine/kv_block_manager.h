// Bookkeeping of the paged KV cache's blocks: reference counts, the prefix-cache index (block hash
// → block, DESIGN.md §2) and LRU eviction. It holds no KV memory, so every backend shares it.
//
// A block is in exactly one of three states:
//   free       — refcount 0, not indexed, on the free list;
//   in use     — refcount > 0 (indexed or not: a full block of a sequence is indexed once its KV
//                is complete, and then any sequence with the same prefix may share it);
//   evictable  — refcount 0 but indexed: its KV is kept for a later prompt with the same prefix
//                until allocate() runs out of free blocks and takes the least recently released.
// Only full blocks are indexed and a full block is never written again, so sharing needs no
// copy-on-write.
//
// Every change to the index is also recorded as a KvBlockEvent, so the orchestrator can keep an
// exact copy of it (DESIGN.md §2): publish() adds kStored, allocate() taking an evictable block
// adds kEvicted. Nothing else changes the index.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace kvferry::engine {

// A change to the prefix-cache index, named by block hash.
struct KvBlockEvent {
  enum class Kind : uint8_t { kStored, kEvicted };
  Kind kind;
  uint64_t hash;

  bool operator==(const KvBlockEvent&) const = default;
};

// Not thread-safe: owned by the engine's thread. Allocation-free after construction but for
// publish(), which adds an entry to the hash index (its buckets are reserved up front), and the
// growth of the pending-event list (amortized; its capacity is kept across drains).
class KvBlockManager {
 public:
  static constexpr uint32_t kDefaultMaxPendingEvents = 65536;

  // `max_pending_events` bounds the events kept between two drainEvents() calls.
  explicit KvBlockManager(uint32_t num_blocks,
                          uint32_t max_pending_events = kDefaultMaxPendingEvents);

  uint32_t numBlocks() const { return static_cast<uint32_t>(ref_counts_.size()); }
  uint32_t freeBlocks() const { return static_cast<uint32_t>(free_.size()); }
  uint32_t evictableBlocks() const { return evictable_count_; }
  // What allocate() can still hand out: free plus evictable blocks.
  uint32_t availableBlocks() const { return freeBlocks() + evictable_count_; }
  uint32_t usedBlocks() const { return numBlocks() - availableBlocks(); }
  uint32_t cachedBlocks() const { return static_cast<uint32_t>(index_.size()); }  // indexed
  uint32_t refCount(uint32_t block) const { return ref_counts_[block]; }
  bool isCached(uint64_t hash) const { return index_.contains(hash); }

  // A block for new KV with one reference, not indexed: a free block (lowest id first on a fresh
  // manager), else the least recently released evictable block, which leaves the index.
  // RESOURCE_EXHAUSTED when every block is in use.
  Result<uint32_t> allocate();

  // The block that holds the prefix ending with the block hashed `hash`, with one more reference
  // (an evictable block is in use again); nullopt when no block holds it.
  std::optional<uint32_t> acquireCached(uint64_t hash);

  // Indexes `block` (in use, full, its KV complete) under `hash`. Returns false and changes
  // nothing when the block is indexed already or another block holds that hash (two sequences
  // computed the same prefix): this one then stays private and is freed on release.
  bool publish(uint32_t block, uint64_t hash);

  // Drops one reference. At zero the block becomes evictable (most recently released) when
  // indexed, free otherwise. Releasing a block with no references is a bug (asserted).
  void release(uint32_t block);

  // Appends the index changes since the last drain to `out`, oldest first, and forgets them.
  // Returns true when more than max_pending_events piled up meanwhile: the pending events were
  // then dropped (and later ones not kept until this drain), so the events this call appended are
  // incomplete and the caller must resync from cachedHashes(), taken before the next call that
  // changes the manager; events of later drains apply on top of that snapshot.
  bool drainEvents(std::vector<KvBlockEvent>& out);

  // Appends the hash of every indexed block to `out`, in no particular order: the snapshot that
  // replaces the events after an overflow.
  void cachedHashes(std::vector<uint64_t>& out) const;

 private:
  static constexpr uint32_t kNone = UINT32_MAX;

  void unlinkEvictable(uint32_t block);
  void recordEvent(KvBlockEvent::Kind kind, uint64_t hash);

  std::vector<uint32_t> ref_counts_;
  std::vector<uint32_t> free_;  // a stack; the lowest id on top at first
  // Hash of each indexed block (meaningful when indexed_[block]).
  std::vector<uint64_t> hashes_;
  std::vector<bool> indexed_;
  std::unordered_map<uint64_t, uint32_t> index_;
  // Evictable blocks as an intrusive doubly-linked list, least recently released at the head.
  std::vector<uint32_t> lru_prev_;
  std::vector<uint32_t> lru_next_;
  uint32_t lru_head_ = kNone;
  uint32_t lru_tail_ = kNone;
  uint32_t evictable_count_ = 0;
  // Index changes not drained yet; none are kept while overflowed_.
  const uint32_t max_pending_events_;
  std::vector<KvBlockEvent> events_;
  bool overflowed_ = false;
};

}  // namespace kvferry::engine
