#include "node_agent/engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace kvferry::engine {
namespace {

TEST(KvBlockManagerTest, AllocatesEveryBlockOnceThenRunsOut) {
  KvBlockManager blocks(4);
  for (uint32_t expected = 0; expected < 4; ++expected) {
    Result<uint32_t> block = blocks.allocate();
    ASSERT_TRUE(block.isOk());
    EXPECT_EQ(*block, expected);
    EXPECT_EQ(blocks.refCount(*block), 1u);
  }
  EXPECT_EQ(blocks.allocate().status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(blocks.usedBlocks(), 4u);
  blocks.release(2);  // not indexed: straight back to the free list
  EXPECT_EQ(blocks.freeBlocks(), 1u);
  EXPECT_EQ(blocks.evictableBlocks(), 0u);
  EXPECT_EQ(*blocks.allocate(), 2u);
}

TEST(KvBlockManagerTest, CachedBlocksAreSharedByReference) {
  KvBlockManager blocks(4);
  const uint32_t block = *blocks.allocate();
  EXPECT_FALSE(blocks.acquireCached(0xabc).has_value());
  EXPECT_TRUE(blocks.publish(block, 0xabc));
  EXPECT_FALSE(blocks.publish(block, 0xdef));  // indexed already
  const uint32_t other = *blocks.allocate();
  EXPECT_FALSE(blocks.publish(other, 0xabc));  // the hash belongs to `block`
  EXPECT_EQ(blocks.cachedBlocks(), 1u);

  EXPECT_EQ(blocks.acquireCached(0xabc), block);
  EXPECT_EQ(blocks.refCount(block), 2u);
  blocks.release(block);
  blocks.release(block);
  // Unreferenced but kept for reuse: evictable, still found, and revived by a hit.
  EXPECT_EQ(blocks.evictableBlocks(), 1u);
  EXPECT_EQ(blocks.availableBlocks(), 3u);
  EXPECT_TRUE(blocks.isCached(0xabc));
  EXPECT_EQ(blocks.acquireCached(0xabc), block);
  EXPECT_EQ(blocks.evictableBlocks(), 0u);
  EXPECT_EQ(blocks.refCount(block), 1u);
  blocks.release(block);
  blocks.release(other);  // never indexed: free
  EXPECT_EQ(blocks.freeBlocks(), 3u);
  EXPECT_EQ(blocks.usedBlocks(), 0u);
}

// Eviction happens only when no block is free, and takes the least recently released first; a
// hit moves a block out of the queue, and releasing it again puts it at the back.
TEST(KvBlockManagerTest, EvictsUnreferencedCachedBlocksInLruOrder) {
  KvBlockManager blocks(4);
  std::vector<uint32_t> ids;
  for (uint64_t hash = 1; hash <= 4; ++hash) {
    ids.push_back(*blocks.allocate());
    ASSERT_TRUE(blocks.publish(ids.back(), hash));
  }
  // Released in the order 3, 1, 4, 2 (hashes).
  for (uint64_t hash : {3, 1, 4, 2}) blocks.release(ids[hash - 1]);
  EXPECT_EQ(blocks.evictableBlocks(), 4u);
  EXPECT_EQ(blocks.freeBlocks(), 0u);

  // A hit on hash 1 takes it out of the queue; its release puts it last: 4, 2, 1 remain after 3.
  ASSERT_TRUE(blocks.acquireCached(1).has_value());
  blocks.release(ids[0]);

  EXPECT_EQ(*blocks.allocate(), ids[2]);  // hash 3
  EXPECT_FALSE(blocks.isCached(3));
  EXPECT_EQ(*blocks.allocate(), ids[3]);  // hash 4
  EXPECT_EQ(*blocks.allocate(), ids[1]);  // hash 2
  EXPECT_TRUE(blocks.isCached(1));
  EXPECT_EQ(*blocks.allocate(), ids[0]);  // hash 1
  EXPECT_EQ(blocks.cachedBlocks(), 0u);
  EXPECT_EQ(blocks.allocate().status().code(), StatusCode::kResourceExhausted);
  for (uint32_t id : ids) {
    EXPECT_EQ(blocks.refCount(id), 1u);
    blocks.release(id);
  }
  EXPECT_EQ(blocks.freeBlocks(), 4u);
}

TEST(KvBlockManagerTest, FreeBlocksGoBeforeCachedOnes) {
  KvBlockManager blocks(3);
  const uint32_t cached = *blocks.allocate();
  ASSERT_TRUE(blocks.publish(cached, 7));
  blocks.release(cached);
  EXPECT_NE(*blocks.allocate(), cached);
  EXPECT_NE(*blocks.allocate(), cached);
  EXPECT_TRUE(blocks.isCached(7));
  EXPECT_EQ(*blocks.allocate(), cached);
  EXPECT_FALSE(blocks.isCached(7));
}

using Kind = KvBlockEvent::Kind;

std::vector<KvBlockEvent> drain(KvBlockManager& blocks) {
  std::vector<KvBlockEvent> out;
  EXPECT_FALSE(blocks.drainEvents(out));
  return out;
}

// The orchestrator's copy of the index hears of every block that enters it (publish) and every
// block that leaves it (eviction), by hash and in order; hits and releases change nothing.
TEST(KvBlockManagerTest, EventsNameEveryIndexChange) {
  KvBlockManager blocks(2);
  const uint32_t a = *blocks.allocate();
  const uint32_t b = *blocks.allocate();
  ASSERT_TRUE(blocks.publish(a, 0xa));
  EXPECT_FALSE(blocks.publish(a, 0xc));  // indexed already
  EXPECT_FALSE(blocks.publish(b, 0xa));  // another block holds the hash
  ASSERT_TRUE(blocks.publish(b, 0xb));
  EXPECT_EQ(drain(blocks), (std::vector<KvBlockEvent>{{Kind::kStored, 0xa}, {Kind::kStored, 0xb}}));
  EXPECT_TRUE(drain(blocks).empty());  // drained

  blocks.release(b);
  blocks.release(a);
  ASSERT_EQ(blocks.acquireCached(0xb), b);  // a hit: no change to the index
  blocks.release(b);
  EXPECT_TRUE(drain(blocks).empty());

  // Pressure: a, then b (released last) leave the index.
  EXPECT_EQ(*blocks.allocate(), a);
  ASSERT_TRUE(blocks.publish(a, 0xd));
  EXPECT_EQ(*blocks.allocate(), b);
  blocks.release(b);  // never indexed again: free, no event
  EXPECT_EQ(*blocks.allocate(), b);
  std::vector<KvBlockEvent> out = {{Kind::kStored, 0x1}};  // drainEvents appends
  EXPECT_FALSE(blocks.drainEvents(out));
  EXPECT_EQ(out, (std::vector<KvBlockEvent>{{Kind::kStored, 0x1},
                                            {Kind::kEvicted, 0xa},
                                            {Kind::kStored, 0xd},
                                            {Kind::kEvicted, 0xb}}));
  std::vector<uint64_t> hashes;
  blocks.cachedHashes(hashes);
  EXPECT_EQ(hashes, std::vector<uint64_t>{0xd});
}

// More events than the bound between two drains: they are dropped, the next drain says so once,
// and recording starts over after it.
TEST(KvBlockManagerTest, OverflowIsReportedOnceAndThenEventsResume) {
  KvBlockManager blocks(8, 3);
  for (uint64_t hash = 1; hash <= 3; ++hash) ASSERT_TRUE(blocks.publish(*blocks.allocate(), hash));
  EXPECT_EQ(drain(blocks).size(), 3u);  // exactly the bound: no overflow

  for (uint64_t hash = 4; hash <= 8; ++hash) ASSERT_TRUE(blocks.publish(*blocks.allocate(), hash));
  std::vector<KvBlockEvent> out;
  EXPECT_TRUE(blocks.drainEvents(out));
  EXPECT_TRUE(out.empty());
  std::vector<uint64_t> hashes;
  blocks.cachedHashes(hashes);
  std::ranges::sort(hashes);
  EXPECT_EQ(hashes, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));

  for (uint32_t block = 0; block < 8; ++block) blocks.release(block);
  (void)*blocks.allocate();  // evicts hash 1, released first
  EXPECT_EQ(drain(blocks), (std::vector<KvBlockEvent>{{Kind::kEvicted, 1}}));

  KvBlockManager none(2, 0);  // a bound of 0: every change overflows
  ASSERT_TRUE(none.publish(*none.allocate(), 9));
  EXPECT_TRUE(none.drainEvents(out));
  EXPECT_FALSE(none.drainEvents(out));
}

// A random workload with a small bound: applying the drained events to a copy of the index, and
// replacing the copy with a snapshot after each overflow, always reproduces the index.
TEST(KvBlockManagerTest, EventsAndSnapshotsKeepACopyOfTheIndexExact) {
  KvBlockManager blocks(16, 12);
  std::vector<uint32_t> held;  // one entry per reference this test holds
  std::set<uint64_t> copy;
  uint64_t state = 3;
  const auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  int overflows = 0;
  int clean_drains = 0;
  for (int op = 0; op < 20000; ++op) {
    switch (next(41) / 10) {  // a drain every 41 operations on average
      case 0: {
        Result<uint32_t> block = blocks.allocate();
        if (block.isOk()) held.push_back(*block);
        break;
      }
      case 1:
        if (!held.empty()) (void)blocks.publish(held[next(held.size())], next(40));
        break;
      case 2: {
        const std::optional<uint32_t> block = blocks.acquireCached(next(40));
        if (block) held.push_back(*block);
        break;
      }
      case 3:
        if (!held.empty()) {
          const size_t i = next(held.size());
          blocks.release(held[i]);
          held.erase(held.begin() + static_cast<long>(i));
        }
        break;
      default: {
        std::vector<KvBlockEvent> events;
        if (blocks.drainEvents(events)) {
          ++overflows;
          std::vector<uint64_t> snapshot;
          blocks.cachedHashes(snapshot);
          copy = std::set<uint64_t>(snapshot.begin(), snapshot.end());
          EXPECT_EQ(copy.size(), snapshot.size());  // no duplicates
        } else {
          ++clean_drains;
          for (const KvBlockEvent& event : events) {
            if (event.kind == Kind::kStored) {
              EXPECT_TRUE(copy.insert(event.hash).second) << "stored twice: " << event.hash;
            } else {
              EXPECT_EQ(copy.erase(event.hash), 1u) << "evicted but not stored: " << event.hash;
            }
          }
        }
        std::vector<uint64_t> hashes;
        blocks.cachedHashes(hashes);
        ASSERT_EQ(copy, std::set<uint64_t>(hashes.begin(), hashes.end())) << "op " << op;
        ASSERT_EQ(copy.size(), blocks.cachedBlocks());
      }
    }
  }
  EXPECT_GT(overflows, 0);
  EXPECT_GT(clean_drains, 0);
}

}  // namespace
}  // namespace kvferry::engine
