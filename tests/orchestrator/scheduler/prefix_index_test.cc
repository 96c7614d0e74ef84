#include "orchestrator/scheduler/prefix_index.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvferry::scheduler {
namespace {

KvEventBatch batch(NodeId node, uint64_t sequence, KvEventKind kind, std::vector<uint64_t> hashes) {
  return KvEventBatch{node, sequence, {KvEvent{kind, std::move(hashes)}}};
}

const std::vector<uint64_t> kChain = {11, 12, 13, 14};

TEST(PrefixIndexTest, InOrderEventsBuildTheSetAndPrefixStopsAtFirstMiss) {
  PrefixIndex index;
  index.addNode(0);
  EXPECT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11, 12, 13})), ApplyOutcome::kApplied);
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 3u);
  EXPECT_EQ(index.apply(batch(0, 2, KvEventKind::kEvicted, {12})), ApplyOutcome::kApplied);
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 1u);  // 13 is cached but 12 is not: prefix is 1
  EXPECT_EQ(index.blockCount(0), 2u);
  EXPECT_EQ(index.cachedPrefixBlocks(7, kChain), 0u);  // unknown node
}

TEST(PrefixIndexTest, OutOfOrderBatchesAreHeldThenApplied) {
  PrefixIndex index;
  index.addNode(0);
  EXPECT_EQ(index.apply(batch(0, 2, KvEventKind::kEvicted, {11})), ApplyOutcome::kHeld);
  EXPECT_EQ(index.apply(batch(0, 3, KvEventKind::kStored, {11})), ApplyOutcome::kHeld);
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 0u);
  EXPECT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11, 12})), ApplyOutcome::kApplied);
  // 1 stored {11,12}, 2 evicted 11, 3 stored 11 again: the order of the sequence numbers wins.
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 2u);
  EXPECT_FALSE(index.needsResync(0));
}

TEST(PrefixIndexTest, DuplicatesAreDropped) {
  PrefixIndex index;
  index.addNode(0);
  ASSERT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11})), ApplyOutcome::kApplied);
  ASSERT_EQ(index.apply(batch(0, 2, KvEventKind::kEvicted, {11})), ApplyOutcome::kApplied);
  // A replay of batch 1 must not resurrect block 11.
  EXPECT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11})), ApplyOutcome::kDuplicate);
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 0u);
  EXPECT_EQ(index.apply(batch(0, 4, KvEventKind::kStored, {11})), ApplyOutcome::kHeld);
  EXPECT_EQ(index.apply(batch(0, 4, KvEventKind::kStored, {11})), ApplyOutcome::kDuplicate);
}

TEST(PrefixIndexTest, GapMarksResyncAndResyncReplacesTheSet) {
  PrefixIndex index;
  index.addNode(0);
  index.addNode(1);
  ASSERT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11, 12})), ApplyOutcome::kApplied);
  // Batch 2 is lost: once more than the window waits behind it, the node needs a resync.
  ApplyOutcome last = ApplyOutcome::kHeld;
  for (uint64_t seq = 3; last == ApplyOutcome::kHeld; ++seq) {
    last = index.apply(batch(0, seq, KvEventKind::kStored, {99}));
    ASSERT_LE(seq, 3 + PrefixIndex::kReorderWindow);
  }
  EXPECT_EQ(last, ApplyOutcome::kGap);
  EXPECT_TRUE(index.needsResync(0));
  EXPECT_EQ(index.nodesNeedingResync(), std::vector<NodeId>{0});
  EXPECT_FALSE(index.needsResync(1));
  // Still answers from what it had; ignores batches until the resync.
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 2u);
  EXPECT_EQ(index.apply(batch(0, 2, KvEventKind::kStored, {13})), ApplyOutcome::kGap);

  const std::vector<uint64_t> snapshot = {11, 12, 13, 14};
  index.resync(0, 40, snapshot);
  EXPECT_FALSE(index.needsResync(0));
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 4u);
  EXPECT_EQ(index.apply(batch(0, 40, KvEventKind::kEvicted, {11})), ApplyOutcome::kDuplicate);
  EXPECT_EQ(index.apply(batch(0, 41, KvEventKind::kEvicted, {14})), ApplyOutcome::kApplied);
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 3u);
}

TEST(PrefixIndexTest, ResyncAppliesHeldBatchesNewerThanTheSnapshot) {
  PrefixIndex index;
  index.addNode(0);
  ASSERT_EQ(index.apply(batch(0, 6, KvEventKind::kStored, {12})), ApplyOutcome::kHeld);
  ASSERT_EQ(index.apply(batch(0, 4, KvEventKind::kStored, {77})), ApplyOutcome::kHeld);
  const std::vector<uint64_t> snapshot = {11};
  index.resync(0, 5, snapshot);  // covers 4; 6 follows it
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 2u);
  EXPECT_EQ(index.blockCount(0), 2u);
}

TEST(PrefixIndexTest, NodeDeathDropsItsEntries) {
  PrefixIndex index;
  index.addNode(0);
  index.addNode(1);
  ASSERT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11, 12})), ApplyOutcome::kApplied);
  ASSERT_EQ(index.apply(batch(1, 1, KvEventKind::kStored, {11})), ApplyOutcome::kApplied);
  index.removeNode(0);
  EXPECT_FALSE(index.hasNode(0));
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 0u);
  EXPECT_EQ(index.cachedPrefixBlocks(1, kChain), 1u);
  EXPECT_EQ(index.apply(batch(0, 2, KvEventKind::kStored, {11})), ApplyOutcome::kUnknownNode);
  index.addNode(0);  // rejoins empty, numbering from 1
  EXPECT_EQ(index.cachedPrefixBlocks(0, kChain), 0u);
  EXPECT_EQ(index.apply(batch(0, 1, KvEventKind::kStored, {11})), ApplyOutcome::kApplied);
}

}  // namespace
}  // namespace kvferry::scheduler
