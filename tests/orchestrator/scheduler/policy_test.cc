#include "orchestrator/scheduler/policy.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace kvferry::scheduler {
namespace {

constexpr uint32_t kBlockTokens = 512;
constexpr uint64_t kBlockBytes = 1 << 20;
constexpr double kLinkBytesPerS = 1e9;  // 1 ms per block

// Nodes 0 and 1 prefill, 2 and 3 decode; t(n) = 10 ms + 0.1 ms/token.
class PolicyTest : public ::testing::Test {
 protected:
  PolicyTest() {
    for (NodeId id = 0; id < 4; ++id) {
      NodeState node;
      node.role = id < 2 ? NodeRole::kPrefill : NodeRole::kDecode;
      node.total_kv_blocks = node.free_kv_blocks = 100;
      node.prefill_model = {0.010, 1e-4, 0};
      nodes_.push_back(node);
      index_.addNode(id);
    }
  }

  ClusterView view() const {
    return ClusterView(nodes_, kBlockTokens, kBlockBytes, kLinkBytesPerS, index_);
  }

  void cache(NodeId node, std::vector<uint64_t> hashes) {
    KvEventBatch batch{node, ++sequences_[node], {KvEvent{KvEventKind::kStored, hashes}}};
    ASSERT_EQ(index_.apply(std::move(batch)), ApplyOutcome::kApplied);
  }

  Decision choose(Policy& policy, const Request& request) const {
    Result<Decision> decision = policy.choose(request, view());
    EXPECT_TRUE(decision.isOk()) << decision.status().toString();
    return decision.isOk() ? *decision : Decision{};
  }

  std::unique_ptr<Policy> make(std::string_view name) {
    Result<std::unique_ptr<Policy>> policy = makePolicy(name, config_, 1);
    EXPECT_TRUE(policy.isOk()) << policy.status().toString();
    return std::move(policy).value();
  }

  std::vector<NodeState> nodes_;
  PrefixIndex index_;
  uint64_t sequences_[4] = {};
  config::SchedulerConfig config_;
};

// 4 full blocks of 512 tokens, 16 output tokens.
const std::vector<uint64_t> kPromptA = {1, 2, 3, 4};
const std::vector<uint64_t> kPromptB = {1, 2, 3, 5};
const std::vector<uint64_t> kPromptC = {9, 8, 7, 6};
Request request(const std::vector<uint64_t>& hashes) {
  return Request{0, static_cast<uint32_t>(hashes.size() * kBlockTokens), 16, hashes};
}

TEST_F(PolicyTest, FactoryKnowsEveryPolicyAndRejectsOthers) {
  for (std::string_view name : policyNames()) EXPECT_EQ(make(name)->name(), name);
  Result<std::unique_ptr<Policy>> bad = makePolicy("random", config_, 1);
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("known: round_robin, least_loaded"), std::string::npos);
}

TEST_F(PolicyTest, FailsWithoutLiveNodes) {
  nodes_[0].alive = nodes_[1].alive = false;
  for (std::string_view name : policyNames()) {
    Result<Decision> decision = make(name)->choose(request(kPromptA), view());
    ASSERT_FALSE(decision.isOk()) << name;
    EXPECT_EQ(decision.status().code(), StatusCode::kFailedPrecondition);
  }
}

TEST_F(PolicyTest, WithoutAPrefillNodeTheRequestRunsColocatedOnADecodeNodeWithRoom) {
  nodes_[0].alive = nodes_[1].alive = false;
  EXPECT_FALSE(anyPrefillNode(view()));
  // Node 2 decodes fewer sequences but has no room for the sequence: node 3 it is.
  nodes_[2].free_kv_blocks = 2;
  nodes_[3].active_decode_seqs = 5;
  Result<Decision> decision = chooseColocated(request(kPromptA), view());
  ASSERT_TRUE(decision.isOk()) << decision.status().toString();
  EXPECT_EQ(decision->prefill, 3u);
  EXPECT_EQ(decision->decode, 3u);
  EXPECT_TRUE(decision->colocated);
  // With room nowhere, the least loaded still takes it (its reservation decides).
  nodes_[3].free_kv_blocks = 1;
  EXPECT_EQ(chooseColocated(request(kPromptA), view())->decode, 2u);
  nodes_[2].alive = nodes_[3].alive = false;
  EXPECT_FALSE(chooseColocated(request(kPromptA), view()).isOk());
  nodes_[0].alive = true;
  EXPECT_TRUE(anyPrefillNode(view()));
}

TEST_F(PolicyTest, RoundRobinRotatesEachSideAndSkipsDeadNodes) {
  auto policy = make("round_robin");
  Decision first = choose(*policy, request(kPromptA));
  Decision second = choose(*policy, request(kPromptA));
  EXPECT_EQ(first.prefill, 0u);
  EXPECT_EQ(first.decode, 2u);
  EXPECT_EQ(second.prefill, 1u);
  EXPECT_EQ(second.decode, 3u);
  nodes_[0].alive = false;
  EXPECT_EQ(choose(*policy, request(kPromptA)).prefill, 1u);
}

TEST_F(PolicyTest, LeastLoadedPicksShortestQueueAndFewestSequences) {
  nodes_[0].queued_prefill_tokens = 5000;
  nodes_[1].queued_prefill_tokens = 100;
  nodes_[2].active_decode_seqs = 3;
  nodes_[3].active_decode_seqs = 8;
  cache(0, kPromptA);  // least_loaded ignores the cache
  Decision d = choose(*make("least_loaded"), request(kPromptA));
  EXPECT_EQ(d.prefill, 1u);
  EXPECT_EQ(d.decode, 2u);
  EXPECT_FALSE(d.colocated);
}

TEST_F(PolicyTest, SglangFollowsItsOwnHistoryNotTheRealCache) {
  auto policy = make("sglang_cache_aware");
  cache(1, kPromptA);  // the real cache: invisible to SGLang's router
  // Empty trees: the smallest tree wins (ties to the lowest id).
  EXPECT_EQ(choose(*policy, request(kPromptA)).prefill, 0u);
  // B shares 3 of 4 blocks with A's history on node 0: match 0.75 > 0.3.
  EXPECT_EQ(choose(*policy, request(kPromptB)).prefill, 0u);
  // C matches nothing: the smallest tree (node 1) wins.
  EXPECT_EQ(choose(*policy, request(kPromptC)).prefill, 1u);
  // Imbalance (abs > 64 and rel > 1.5) overrides the cache: the least-loaded worker wins.
  nodes_[0].queued_prefill_requests = 100;
  nodes_[1].queued_prefill_requests = 10;
  EXPECT_EQ(choose(*policy, request(kPromptA)).prefill, 1u);
  // Above the relative threshold but within the absolute one: still cache-aware.
  nodes_[0].queued_prefill_requests = 70;
  nodes_[1].queued_prefill_requests = 10;
  EXPECT_EQ(choose(*policy, request(kPromptB)).prefill, 0u);
}

TEST_F(PolicyTest, DynamoPicksLowestKvCost) {
  auto policy = make("dynamo_kv_cost");
  cache(1, kPromptA);
  // Node 1: 1 × (0 + 4 − 4) + 0 = 0; node 0: 4.
  Decision d = choose(*policy, request(kPromptA));
  EXPECT_EQ(d.prefill, 1u);
  EXPECT_EQ(d.predicted_cached_blocks, 4u);
  // 10 active prefill blocks on node 1 outweigh its 4-block overlap.
  nodes_[1].queued_prefill_tokens = 10 * kBlockTokens;
  EXPECT_EQ(choose(*policy, request(kPromptA)).prefill, 0u);
  // Decode side: the node with fewer blocks in use.
  nodes_[2].free_kv_blocks = 40;
  nodes_[3].free_kv_blocks = 90;
  EXPECT_EQ(choose(*policy, request(kPromptC)).decode, 3u);
}

TEST_F(PolicyTest, EstimatePairAddsQueueComputeAndTransfer) {
  cache(0, {1, 2});
  cache(3, {1});
  nodes_[0].queued_prefill_s = 0.5;
  PairEstimate e = estimatePair(request(kPromptA), view(), 0, 3);
  EXPECT_EQ(e.cached_blocks, 2u);
  EXPECT_EQ(e.transfer_blocks, 3u);  // node 3 already holds block 1
  EXPECT_TRUE(e.fits);
  // 0.5 wait + (10 ms + 1024 × 0.1 ms) + 3 × 1 MiB / 1 GB/s.
  EXPECT_NEAR(e.ttft_s, 0.5 + 0.010 + 0.1024 + 3.0 * kBlockBytes / kLinkBytesPerS, 1e-9);
}

TEST_F(PolicyTest, KvferryTradesCacheHitsAgainstQueueWait) {
  auto policy = make("kvferry");
  cache(1, kPromptA);
  Decision d = choose(*policy, request(kPromptA));
  EXPECT_EQ(d.prefill, 1u);  // 4 cached blocks: only one token to compute
  EXPECT_EQ(d.predicted_cached_blocks, 4u);
  EXPECT_FALSE(d.colocated);
  // A queue on node 1 longer than the whole prefill elsewhere (0.215 s) sends it to node 0.
  nodes_[1].queued_prefill_s = 0.3;
  d = choose(*policy, request(kPromptA));
  EXPECT_EQ(d.prefill, 0u);
  EXPECT_NEAR(d.predicted_ttft_s, 0.010 + 2048 * 1e-4 + 4 * kBlockBytes / kLinkBytesPerS, 1e-9);
}

TEST_F(PolicyTest, KvferryTreatsDecodeRoomAsAHardConstraint) {
  auto policy = make("kvferry");
  nodes_[2].free_kv_blocks = 3;  // the sequence needs 5 blocks
  nodes_[3].active_decode_seqs = 50;
  EXPECT_EQ(choose(*policy, request(kPromptC)).decode, 3u);
  // With room on both, equal TTFTs go to the decode node with fewer sequences.
  nodes_[2].free_kv_blocks = 100;
  EXPECT_EQ(choose(*policy, request(kPromptC)).decode, 2u);
}

TEST_F(PolicyTest, KvferryColocatesShortSuffixesAndUnderDeepQueues) {
  auto policy = make("kvferry");
  cache(3, kPromptA);
  // Node 3 holds the whole prompt: prefilling there computes one token and moves nothing.
  Decision d = choose(*policy, request(kPromptA));
  EXPECT_TRUE(d.colocated);
  EXPECT_EQ(d.prefill, 3u);
  EXPECT_EQ(d.decode, 3u);
  // A long uncached prompt goes to a prefill node while queues are shallow…
  d = choose(*policy, request(kPromptC));
  EXPECT_FALSE(d.colocated);
  // …and to a decode node once every prefill queue is deeper than kvferry_colocate_queue_s.
  nodes_[0].queued_prefill_s = nodes_[1].queued_prefill_s = 5.0;
  d = choose(*policy, request(kPromptC));
  EXPECT_TRUE(d.colocated);
}

}  // namespace
}  // namespace kvferry::scheduler
