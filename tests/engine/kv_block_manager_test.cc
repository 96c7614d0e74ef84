#include "node_agent/engine/kv_block_manager.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kvferry::engine
