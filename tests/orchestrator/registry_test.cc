// NodeRegistry (pure: time is passed in) and the cluster-identity helpers both binaries share.
#include "orchestrator/registry.h"

#include <gtest/gtest.h>

#include <string>

#include "model/cluster_identity.h"
#include "model/hash.h"

namespace kvferry::orchestrator {
namespace {

using namespace std::chrono_literals;
using scheduler::NodeRole;

ClusterIdentity identity() {
  ClusterIdentity id;
  id.model_fingerprint = "00000000000000aa";
  id.tokenizer_hash = "00000000000000bb";
  id.block_tokens = 16;
  id.hash_seed_id = "00000000000000cc";
  id.layers = 2;
  id.kv_heads = 4;
  id.head_dim = 8;
  return id;
}

wire::RegisterRequest agent(std::string role, uint16_t port) {
  wire::RegisterRequest r;
  r.name = "agent-" + std::to_string(port);
  r.role = std::move(role);
  r.control_address = "127.0.0.1:" + std::to_string(port);
  r.model_fingerprint = "00000000000000aa";
  r.tokenizer_hash = "00000000000000bb";
  r.hash_seed_id = "00000000000000cc";
  r.block_tokens = 16;
  r.kv_layout = {"f32", 2, 4, 8, 16 * 4 * 8 * 4};
  r.transport = "tcp";
  r.transport_blob = "AAAA";
  r.kv_blocks = 100;
  r.max_sequence_tokens = 1024;
  r.prefill_model = {0.01, 0.001, 0};
  return r;
}

class RegistryTest : public ::testing::Test {
 protected:
  NodeId add(std::string role, uint16_t port) {
    auto r = registry_.registerNode(agent(std::move(role), port), t0_);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r.isOk() ? r->id : 0;
  }
  // A heartbeat from node `id` with the token of its registration, nothing else filled in.
  wire::HeartbeatRequest heartbeatFrom(NodeId id) {
    wire::HeartbeatRequest hb;
    hb.node_id = id;
    hb.node_token = registry_.node(id)->token;
    return hb;
  }
  Status refusal(const wire::RegisterRequest& request) {
    auto r = registry_.registerNode(request, t0_);
    return r.isOk() ? Status::ok() : r.status();
  }

  const Clock::time_point t0_ = Clock::time_point() + 1h;
  NodeRegistry registry_{identity(), 5000ms, 1e9};
};

TEST_F(RegistryTest, RefusesAnotherClusterNamingFieldAndBothValues) {
  wire::RegisterRequest r = agent("prefill", 9000);
  r.block_tokens = 32;
  Status s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "block_tokens 32 differs from the cluster's 16");

  r = agent("prefill", 9000);
  r.model_fingerprint = "0000000000000001";
  s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "model_fingerprint 0000000000000001 differs from the cluster's "
            "00000000000000aa");

  r = agent("prefill", 9000);
  r.tokenizer_hash = "0000000000000002";
  s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("tokenizer_hash 0000000000000002"), std::string::npos);
  EXPECT_NE(s.message().find("00000000000000bb"), std::string::npos);

  r = agent("prefill", 9000);
  r.hash_seed_id = "";
  s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("hash_seed_id (empty) is not the cluster's"), std::string::npos);
  EXPECT_EQ(s.message().find("00000000000000cc"), std::string::npos)
      << "the cluster's seed id told";

  r = agent("prefill", 9000);
  r.kv_layout.layers = 3;
  s = refusal(r);
  EXPECT_EQ(s.message(), "kv_layout.layers 3 differs from the cluster's 2");

  EXPECT_TRUE(registry_.nodes().empty());
}

TEST_F(RegistryTest, RefusesMalformedRegistrations) {
  wire::RegisterRequest r = agent("gpu", 9000);
  Status s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("role 'gpu'"), std::string::npos);

  r = agent("decode", 9000);
  r.transport_blob.clear();
  s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("transport_blob"), std::string::npos);

  for (std::string address : {"", "localhost:80", "127.0.0.1", "127.0.0.1:99999", "1.2.3.4:0"}) {
    r = agent("decode", 9000);
    r.control_address = address;
    s = refusal(r);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << address;
    EXPECT_NE(s.message().find("control_address"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(registry_.nodes().empty());
}

TEST_F(RegistryTest, RefusesAKvDtypeOtherThanTheLiveNodes) {
  add("prefill", 9000);
  wire::RegisterRequest r = agent("decode", 9001);
  r.kv_layout.dtype = "f16";
  Status s = refusal(r);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "kv_layout.dtype f16 differs from the cluster's f32");
}

TEST_F(RegistryTest, IdsAreNeverReused) {
  EXPECT_EQ(add("prefill", 9000), 0u);
  EXPECT_EQ(add("decode", 9001), 1u);
  ASSERT_TRUE(registry_.leave(0, registry_.node(0)->token).isOk());
  EXPECT_EQ(add("prefill", 9000), 2u);
  EXPECT_EQ(registry_.nodes().size(), 3u);
  EXPECT_EQ(registry_.node(0)->liveness, NodeLiveness::kLeft);
  EXPECT_EQ(registry_.leave(7, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(registry_.leave(1, registry_.node(1)->token + 1).code(), StatusCode::kNotFound);
  EXPECT_TRUE(registry_.leave(0, registry_.node(0)->token).isOk());  // idempotent
}

TEST_F(RegistryTest, ARestartedAgentReplacesItsOldRecord) {
  add("both", 9000);
  auto again = registry_.registerNode(agent("both", 9000), t0_ + 1s);
  ASSERT_TRUE(again.isOk());
  EXPECT_EQ(again->id, 1u);
  ASSERT_TRUE(again->replaced.has_value());
  EXPECT_EQ(*again->replaced, 0u);
  EXPECT_EQ(registry_.node(0)->liveness, NodeLiveness::kDead);
  EXPECT_EQ(registry_.livePrefillNodes(), 1u);
}

TEST_F(RegistryTest, HeartbeatUpdatesLoadAndAppliesKvEventsInOrder) {
  NodeId id = add("prefill", 9000);
  wire::HeartbeatRequest hb = heartbeatFrom(id);
  hb.load.queued_prefill_tokens = 1000;
  hb.load.queued_prefill_requests = 2;
  hb.load.free_kv_blocks = 40;
  hb.load.total_kv_blocks = 100;
  hb.prefill_model = {0.5, 0.001, 0};
  hb.kv_events = {{1, {11, 12, 13}, {}}, {2, {14}, {13}}};
  auto answer = registry_.heartbeat(hb, t0_ + 1s);
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_FALSE(answer->resync);
  EXPECT_EQ(registry_.cachedBlocks(id), 3u);  // 11, 12, 14
  std::vector<uint64_t> chain = {11, 12, 13};
  EXPECT_EQ(registry_.index().cachedPrefixBlocks(id, chain), 2u);
  EXPECT_EQ(registry_.node(id)->last_heartbeat, t0_ + 1s);

  scheduler::ClusterView view = registry_.view();
  const scheduler::NodeState& s = view.node(id);
  EXPECT_EQ(s.queued_prefill_tokens, 1000u);
  EXPECT_EQ(s.queued_prefill_requests, 2u);
  EXPECT_DOUBLE_EQ(s.queued_prefill_s, 0.5 + 1.0);
  EXPECT_EQ(s.free_kv_blocks, 40u);
  EXPECT_EQ(s.total_kv_blocks, 100u);

  // A resent batch is ignored.
  hb.kv_events = {{2, {14}, {13}}};
  ASSERT_TRUE(registry_.heartbeat(hb, t0_ + 2s).isOk());
  EXPECT_EQ(registry_.cachedBlocks(id), 3u);
}

TEST_F(RegistryTest, AGapAsksForASnapshotWhichReplacesTheSet) {
  NodeId id = add("decode", 9000);
  wire::HeartbeatRequest hb = heartbeatFrom(id);
  hb.kv_events = {{1, {1, 2}, {}}};
  ASSERT_FALSE(registry_.heartbeat(hb, t0_)->resync);
  // Batch 2 is lost; 3 .. 3 + window wait behind the hole until it counts as a gap.
  hb.kv_events.clear();
  for (uint64_t seq = 3; seq <= 3 + scheduler::PrefixIndex::kReorderWindow; ++seq) {
    hb.kv_events.push_back({seq, {100 + seq}, {}});
  }
  auto answer = registry_.heartbeat(hb, t0_ + 1s);
  ASSERT_TRUE(answer.isOk());
  EXPECT_TRUE(answer->resync);

  hb.kv_events.clear();
  hb.kv_snapshot = wire::KvEventBatchWire{40, {7, 8, 9}, {}};
  answer = registry_.heartbeat(hb, t0_ + 2s);
  ASSERT_TRUE(answer.isOk());
  EXPECT_FALSE(answer->resync);
  EXPECT_EQ(registry_.cachedBlocks(id), 3u);
  hb.kv_snapshot.reset();
  hb.kv_events = {{41, {10}, {7}}};
  ASSERT_FALSE(registry_.heartbeat(hb, t0_ + 3s)->resync);
  EXPECT_EQ(registry_.cachedBlocks(id), 3u);  // 8, 9, 10
}

TEST_F(RegistryTest, ExpiryKillsSilentNodesAndDropsTheirIndexEntries) {
  NodeId quiet = add("prefill", 9000);
  NodeId chatty = add("decode", 9001);
  wire::HeartbeatRequest hb = heartbeatFrom(quiet);
  hb.kv_events = {{1, {5, 6}, {}}};
  ASSERT_TRUE(registry_.heartbeat(hb, t0_ + 1s).isOk());
  EXPECT_EQ(registry_.cachedBlocks(quiet), 2u);

  EXPECT_TRUE(registry_.expire(t0_ + 5s).empty());
  hb = heartbeatFrom(chatty);
  ASSERT_TRUE(registry_.heartbeat(hb, t0_ + 5s).isOk());
  // quiet's last heartbeat was at 1 s: dead past 6 s; chatty's (5 s) not yet.
  EXPECT_TRUE(registry_.expire(t0_ + 6s).empty());
  std::vector<NodeId> died = registry_.expire(t0_ + 6s + 1ms);
  ASSERT_EQ(died, std::vector<NodeId>{quiet});
  EXPECT_EQ(registry_.node(quiet)->liveness, NodeLiveness::kDead);
  EXPECT_FALSE(registry_.index().hasNode(quiet));
  EXPECT_EQ(registry_.cachedBlocks(quiet), 0u);
  EXPECT_TRUE(registry_.expire(t0_ + 6s + 2ms).empty());  // reported once

  hb = heartbeatFrom(quiet);  // a node now dead
  auto answer = registry_.heartbeat(hb, t0_ + 7s);
  EXPECT_EQ(answer.status().code(), StatusCode::kNotFound);
  EXPECT_NE(answer.status().message().find("register again"), std::string::npos);
  hb.node_id = 42;
  EXPECT_EQ(registry_.heartbeat(hb, t0_ + 7s).status().code(), StatusCode::kNotFound);
}

// Dead and departed nodes are forgotten after the grace period; alive ones never are, and a
// forgotten id is not handed out again.
TEST(RegistryForgetTest, DeadAndDepartedNodesAreForgottenAfterTheGracePeriod) {
  const Clock::time_point t0 = Clock::time_point() + 1h;
  NodeRegistry registry(identity(), 5000ms, 1e9, 60000ms);
  auto dies = registry.registerNode(agent("prefill", 9000), t0);
  auto leaves = registry.registerNode(agent("decode", 9001), t0);
  auto stays = registry.registerNode(agent("both", 9002), t0);
  ASSERT_TRUE(dies.isOk() && leaves.isOk() && stays.isOk());
  ASSERT_TRUE(registry.leave(leaves->id, leaves->token).isOk());
  wire::HeartbeatRequest hb;
  hb.node_id = stays->id;
  hb.node_token = stays->token;
  for (auto t = t0 + 1s; t < t0 + 60s; t += 1s) {
    ASSERT_TRUE(registry.heartbeat(hb, t).isOk());
    registry.expire(t);
  }
  EXPECT_EQ(registry.node(dies->id)->liveness, NodeLiveness::kDead);
  EXPECT_FALSE(registry.node(dies->id)->forgotten);  // 59 s after its last heartbeat at t0
  registry.expire(t0 + 60s + 1ms);
  EXPECT_TRUE(registry.node(dies->id)->forgotten);
  EXPECT_TRUE(registry.node(leaves->id)->forgotten);
  EXPECT_FALSE(registry.node(stays->id)->forgotten);
  EXPECT_TRUE(registry.node(dies->id)->registration.control_address.empty());
  auto next = registry.registerNode(agent("prefill", 9000), t0 + 61s);
  ASSERT_TRUE(next.isOk());
  EXPECT_EQ(next->id, 3u);
}

TEST_F(RegistryTest, ViewMapsRolesAndAliveness) {
  NodeId prefill = add("prefill", 9000);
  NodeId decode = add("decode", 9001);
  NodeId both = add("both", 9002);
  NodeId draining = add("both", 9003);
  NodeId gone = add("decode", 9004);
  wire::HeartbeatRequest hb = heartbeatFrom(draining);
  hb.draining = true;
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  ASSERT_TRUE(registry_.leave(gone, registry_.node(gone)->token).isOk());

  scheduler::ClusterView view = registry_.view();
  ASSERT_EQ(view.nodes().size(), 5u);
  EXPECT_EQ(view.node(prefill).role, NodeRole::kPrefill);
  EXPECT_EQ(view.node(decode).role, NodeRole::kDecode);
  EXPECT_EQ(view.node(both).role, NodeRole::kBoth);
  EXPECT_TRUE(view.node(prefill).alive);
  EXPECT_TRUE(view.node(both).alive);
  EXPECT_FALSE(view.node(draining).alive);
  EXPECT_FALSE(view.node(gone).alive);
  EXPECT_EQ(view.blockTokens(), 16u);
  EXPECT_EQ(view.blockBytes(), uint64_t{16 * 4 * 8 * 4} * 2 * 2);  // K and V of 2 layers
  EXPECT_EQ(view.node(decode).total_kv_blocks, 100u);  // from the registration until a heartbeat
  EXPECT_EQ(registry_.livePrefillNodes(), 2u);
  EXPECT_EQ(registry_.liveDecodeNodes(), 2u);
  EXPECT_EQ(registry_.minMaxSequenceTokens(), 1024u);
}

TEST_F(RegistryTest, LocalAccountingCoversWorkTheHeartbeatsHaveNotShownYet) {
  NodeId id = add("both", 9000);
  NodeRegistry::WorkTicket prefill = registry_.startPrefill(id, 300);
  NodeRegistry::WorkTicket decode = registry_.startDecode(id);
  scheduler::ClusterView view = registry_.view();
  EXPECT_EQ(view.node(id).queued_prefill_tokens, 300u);
  EXPECT_EQ(view.node(id).queued_prefill_requests, 1u);
  EXPECT_EQ(view.node(id).active_decode_seqs, 1u);
  wire::HeartbeatRequest hb = heartbeatFrom(id);
  hb.load.active_decode_seqs = 5;
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  EXPECT_EQ(registry_.view().node(id).active_decode_seqs, 5u);  // the larger of the two
  prefill.end();
  decode.end();
  decode.end();  // a ticket ends once
  EXPECT_EQ(registry_.view().node(id).queued_prefill_tokens, 0u);
  EXPECT_EQ(registry_.node(id)->local_decode_seqs, 0u);
}

TEST_F(RegistryTest, AWorkTicketCountsUntilItGoesAndFollowsAPrefillIntoItsDecode) {
  NodeId id = add("both", 9000);
  {
    NodeRegistry::WorkTicket work = registry_.startPrefill(id, 120);
    EXPECT_EQ(registry_.node(id)->local_prefill_tokens, 120u);
    EXPECT_EQ(registry_.node(id)->local_prefill_requests, 1u);
    work.decoding();
    EXPECT_EQ(registry_.node(id)->local_prefill_tokens, 0u);
    EXPECT_EQ(registry_.node(id)->local_prefill_requests, 0u);
    EXPECT_EQ(registry_.node(id)->local_decode_seqs, 1u);
    work.decoding();  // already decoding: no second sequence
    EXPECT_EQ(registry_.node(id)->local_decode_seqs, 1u);
    NodeRegistry::WorkTicket moved = std::move(work);
    EXPECT_EQ(registry_.node(id)->local_decode_seqs, 1u);
    NodeRegistry::WorkTicket other = registry_.startPrefill(id, 7);
    other = std::move(moved);  // ends the prefill it counted, takes over the sequence
    EXPECT_EQ(registry_.node(id)->local_prefill_tokens, 0u);
    EXPECT_EQ(registry_.node(id)->local_decode_seqs, 1u);
  }
  EXPECT_EQ(registry_.node(id)->local_decode_seqs, 0u);  // an early exit cannot leak a count
  EXPECT_EQ(registry_.view().node(id).active_decode_seqs, 0u);
}

TEST_F(RegistryTest, KvRoomCountsWhatRequestsTookAndGaveBackSinceTheLastReport) {
  const NodeId decode = add("decode", 9000);
  add("prefill", 9001);  // not a decode node: no room of its own
  ASSERT_EQ(registry_.decodeKvRoom().size(), 1u);
  EXPECT_EQ(registry_.decodeKvRoom()[0].available, 100u);  // the registered capacity
  wire::HeartbeatRequest hb = heartbeatFrom(decode);
  hb.load.total_kv_blocks = 100;
  hb.load.free_kv_blocks = 60;
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  {
    NodeRegistry::KvHold hold = registry_.holdKv(decode, 25);
    EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 35u);
    EXPECT_EQ(registry_.view().node(decode).free_kv_blocks, 35u);
    // A report taken with the hold in place shows it; the count starts again from there.
    hb.load.free_kv_blocks = 35;
    ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
    EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 35u);
  }
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 60u);  // given back
  // A node that refused for want of room fits nothing until it reports again.
  registry_.noteKvFull(decode);
  EXPECT_EQ(registry_.decodeKvRoom()[0].available, 0u);
  EXPECT_EQ(registry_.decodeKvRoom()[0].total, 100u);
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  EXPECT_EQ(registry_.decodeKvRoom()[0].available, 35u);
}

// A heartbeat gathered before a reservation but delivered after it must not erase the
// reservation's take: the agent numbers its reservations and its reports, and a take stays until
// a report at or past its number arrives.
TEST_F(RegistryTest, AReportThatPredatesAReservationKeepsItsTake) {
  const NodeId decode = add("decode", 9000);
  wire::HeartbeatRequest hb = heartbeatFrom(decode);
  hb.load.total_kv_blocks = 100;
  hb.load.free_kv_blocks = 60;
  hb.load.kv_sequence = 4;
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  NodeRegistry::KvHold first = registry_.holdKv(decode, 25, /*sequence=*/5);
  NodeRegistry::KvHold colocated = registry_.holdKv(decode, 5);  // not numbered
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 30u);
  // Gathered before reservation 5 (and before the colocated prompt started): 60 free still.
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 35u)
      << "the stale report erased reservation 5's take";
  {
    // Reservation 6 is given back before any report shows it: it simply goes.
    NodeRegistry::KvHold second = registry_.holdKv(decode, 10, 6);
    EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 25u);
  }
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 35u);
  // A report past reservation 6 shows reservation 5's and the prompt's blocks taken (and 6's
  // back): from here on they count as given back when they end.
  hb.load.free_kv_blocks = 30;
  hb.load.kv_sequence = 6;
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 30u);
  first.end();
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 55u);
  colocated.end();
  EXPECT_EQ(registry_.node(decode)->availableKvBlocks(), 60u);
}

TEST_F(RegistryTest, KvBlockStatesAreOneDefinitionThatSumsToTheTotal) {
  const NodeId id = add("decode", 9000);
  KvBlockStates states = kvBlockStates(*registry_.node(id));
  EXPECT_EQ(states.free, 100u);
  EXPECT_EQ(states.total, 100u);
  wire::HeartbeatRequest hb = heartbeatFrom(id);
  hb.load.total_kv_blocks = 100;
  hb.load.free_kv_blocks = 50;    // free or cached
  hb.load.cached_kv_blocks = 20;  // of those, cached
  hb.load.leased_blocks = 10;
  ASSERT_TRUE(registry_.heartbeat(hb, t0_).isOk());
  states = kvBlockStates(*registry_.node(id));
  EXPECT_EQ(states.free, 30u);
  EXPECT_EQ(states.cached, 20u);
  EXPECT_EQ(states.leased, 10u);
  EXPECT_EQ(states.in_use, 40u);
  EXPECT_EQ(states.free + states.cached + states.leased + states.in_use, states.total);
}

TEST(ClusterIdentityTest, Hex64) {
  EXPECT_EQ(model::hex64(0), "0000000000000000");
  EXPECT_EQ(model::hex64(0xdeadbeef), "00000000deadbeef");
  EXPECT_EQ(model::hex64(~uint64_t{0}), "ffffffffffffffff");
}

TEST(ClusterIdentityTest, ParseHashSeedReadsBytesInOrderLittleEndian) {
  auto seed = model::parseHashSeed("000102030405060708090a0b0c0d0e0F");
  ASSERT_TRUE(seed.isOk()) << seed.status().toString();
  EXPECT_EQ(seed->k0, 0x0706050403020100ULL);
  EXPECT_EQ(seed->k1, 0x0f0e0d0c0b0a0908ULL);
  auto zero = model::parseHashSeed("");
  ASSERT_TRUE(zero.isOk());
  EXPECT_EQ(zero->k0, 0u);
  EXPECT_EQ(zero->k1, 0u);
  EXPECT_FALSE(model::parseHashSeed("abc").isOk());
  auto bad = model::parseHashSeed("000102030405060708090a0b0c0d0e0g");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("offset 31"), std::string::npos);
}

TEST(ClusterIdentityTest, HashSeedIdIsSipHashOfTheLabelUnderTheSeed) {
  const std::string label = "kvferry.seed-id";
  model::BlockHashSeed seed{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  uint64_t expected = model::sipHash24(
      seed.k0, seed.k1, std::span(reinterpret_cast<const uint8_t*>(label.data()), label.size()));
  EXPECT_EQ(model::hashSeedId(seed), model::hex64(expected));
  EXPECT_NE(model::hashSeedId(seed), model::hashSeedId(model::BlockHashSeed{}));
  EXPECT_EQ(model::hashSeedId(seed).size(), 16u);
}

}  // namespace
}  // namespace kvferry::orchestrator
