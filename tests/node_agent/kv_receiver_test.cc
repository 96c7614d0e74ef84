// The KV receiver: leases, the immediates that land their layers, the hand-over of a landed
// lease, expiry, and the quarantine that keeps a lease's blocks from late writes.
#include "node_agent/kv_transfer/kv_receiver.h"

#include <gtest/gtest.h>

#include "node_agent/kv_transfer/immediate.h"
#include "tests/node_agent/agent_test_util.h"

namespace kvferry::agent::kv_transfer {
namespace {

using namespace agent::testing;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kLayers = 3;
constexpr auto kQuarantine = 500ms;

class KvReceiverTest : public ::testing::Test {
 protected:
  KvReceiverTest()
      : engine_(makeFakeEngine(fakeEngineConfig(4, 32), FakeShape{.layers = kLayers}, {})),
        receiver_(*engine_, {10, 11, 12, 13, 14, 15}, kQuarantine, metrics_.metrics,
                  [this](KvReceiver::Landed landed) { landed_.push_back(std::move(landed)); }) {}

  // Reserves blocks for a prompt of `tokens` tokens counting up from `first` (mod 50); the
  // response.
  wire::ReserveResponse reserve(uint64_t request_id, size_t tokens, uint32_t lease_ms = 60000,
                                int32_t first = 3) {
    wire::ReserveRequest request;
    request.request_id = request_id;
    for (size_t i = 0; i < tokens; ++i) {
      request.tokens.push_back(static_cast<int32_t>(first + i % 50));
    }
    request.lease_ms = lease_ms;
    Reply reply = receiver_.reserve(request);
    EXPECT_EQ(reply.status, 200u) << reply.body;
    auto response = wire::decode<wire::ReserveResponse>(reply.body);
    EXPECT_TRUE(response.isOk());
    return response.isOk() ? *response : wire::ReserveResponse{};
  }
  std::shared_ptr<Stream> decode(const wire::ReserveResponse& lease, uint64_t request_id) {
    wire::DecodeRequest request;
    request.request_id = request_id;
    request.lease_id = lease.lease_id;
    request.first_token = 7;
    request.max_new_tokens = 4;
    auto stream = newStream(io_, request_id);
    receiver_.decode(request, stream);
    return stream;
  }
  void land(uint32_t slot, uint32_t layer) {
    receiver_.onImmediate(rdma::ImmediateEvent{1, encodeImmediate(slot, layer)});
  }
  uint32_t usedBlocks() const { return engine_->blocks().usedBlocks(); }

  boost::asio::io_context io_;
  std::unique_ptr<engine::Engine> engine_;
  std::vector<KvReceiver::Landed> landed_;
  TestMetrics metrics_;
  KvReceiver receiver_;
};

TEST(ImmediateTest, SlotAndLayerRoundTrip) {
  for (uint32_t slot : {0u, 1u, 4095u, kSlotCount - 1}) {
    for (uint32_t layer : {0u, 1u, kMaxLayers - 1}) {
      const SlotLayer decoded = decodeImmediate(encodeImmediate(slot, layer));
      EXPECT_EQ(decoded.slot, slot);
      EXPECT_EQ(decoded.layer, layer);
    }
  }
}

TEST_F(KvReceiverTest, AReserveNamesBlocksRegionsAndADistinctSlot) {
  const wire::ReserveResponse a = reserve(1, 10);
  const wire::ReserveResponse b = reserve(2, 10);
  EXPECT_EQ(a.block_ids.size(), 3u);
  EXPECT_EQ(a.cached_blocks, 0u);
  EXPECT_EQ(a.regions, (std::vector<uint32_t>{10, 11, 12, 13, 14, 15}));
  EXPECT_NE(a.slot, b.slot);
  EXPECT_NE(a.lease_id, b.lease_id);
  EXPECT_EQ(receiver_.leaseCount(), 2u);
  EXPECT_EQ(receiver_.leasedBlocks(), 6u);
  // Numbered in the order granted; the count is what a heartbeat's load reports.
  EXPECT_EQ(a.kv_sequence, 1u);
  EXPECT_EQ(b.kv_sequence, 2u);
  EXPECT_EQ(receiver_.reservationsGranted(), 2u);
}

TEST_F(KvReceiverTest, AFullPoolIsA503) {
  reserve(1, 20 * 4);  // 20 of the 32 blocks
  wire::ReserveRequest request;
  request.request_id = 2;
  request.tokens.assign(20 * 4, 5);
  request.lease_ms = 1000;
  Reply reply = receiver_.reserve(request);
  EXPECT_EQ(reply.status, 503u) << reply.body;
  EXPECT_EQ(receiver_.leaseCount(), 1u);
  EXPECT_EQ(receiver_.reservationsGranted(), 1u);  // a refusal takes no number
}

TEST_F(KvReceiverTest, TheLeaseIsHandedOnWhenEveryLayerLandedAndTheDecodeCame) {
  const wire::ReserveResponse lease = reserve(1, 10);
  for (uint32_t layer = 0; layer < kLayers; ++layer) land(lease.slot, layer);
  EXPECT_TRUE(landed_.empty());  // no /agent/decode yet
  auto stream = decode(lease, 1);
  ASSERT_EQ(landed_.size(), 1u);
  EXPECT_EQ(landed_[0].decode.first_token, 7);
  EXPECT_EQ(landed_[0].stream, stream);
  auto view = engine_->sequence(landed_[0].seq);
  ASSERT_TRUE(view.isOk());
  EXPECT_TRUE(view->ready);  // committed
  EXPECT_EQ(receiver_.leaseCount(), 0u);
}

// A decode request whose checksums do not match the model's layers is refused, but it is not
// corrupt KV: no kv_corrupt code (which would blame the prefill side), nothing counted.
TEST_F(KvReceiverTest, AWrongNumberOfChecksumsIsAnErrorNotCorruptKv) {
  const wire::ReserveResponse lease = reserve(1, 10);
  for (uint32_t layer = 0; layer < kLayers; ++layer) land(lease.slot, layer);
  wire::DecodeRequest request;
  request.request_id = 1;
  request.lease_id = lease.lease_id;
  request.max_new_tokens = 4;
  request.kv_checksums = {1};
  auto stream = newStream(io_, 1);
  receiver_.decode(request, stream);
  std::vector<wire::StreamLine> lines = readStream(*stream, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "error");
  EXPECT_EQ(lines[0].code, "");
  EXPECT_NE(lines[0].message.find("carries 1 KV checksums for 3 layers"), std::string::npos)
      << lines[0].message;
  EXPECT_TRUE(landed_.empty());
  EXPECT_EQ(receiver_.leaseCount(), 0u);
  EXPECT_EQ(metrics_.metrics.kv_checksum_failures.Value(), 0);
}

TEST_F(KvReceiverTest, ADecodeThatCameFirstWaitsForTheLastLayer) {
  const wire::ReserveResponse lease = reserve(1, 10);
  auto stream = decode(lease, 1);
  land(lease.slot, 2);
  land(lease.slot, 0);
  EXPECT_TRUE(landed_.empty());
  land(lease.slot, 0);  // a repeated layer counts once
  EXPECT_TRUE(landed_.empty());
  land(lease.slot, 1);
  EXPECT_EQ(landed_.size(), 1u);
}

TEST_F(KvReceiverTest, APromptCachedHereWaitsForNoLayer) {
  // A prompt whose blocks this engine already caches (computed here before) has nothing to land.
  std::vector<model::TokenId> prompt;
  for (int i = 0; i < 9; ++i) prompt.push_back(3 + i);
  std::vector<float> logits(engine_->vocabSize());
  auto done = engine_->prefill(prompt, logits);
  ASSERT_TRUE(done.isOk());
  ASSERT_TRUE(engine_->release(done->id).isOk());
  const wire::ReserveResponse lease = reserve(1, 8);  // two full blocks, both cached
  EXPECT_EQ(lease.cached_blocks, 2u);
  decode(lease, 1);
  EXPECT_EQ(landed_.size(), 1u);
}

TEST_F(KvReceiverTest, AnExpiredLeaseEndsItsStreamAndFreesItsBlocks) {
  const wire::ReserveResponse lease = reserve(1, 10, /*lease_ms=*/50);
  for (uint32_t layer = 0; layer < kLayers; ++layer) land(lease.slot, layer);  // all landed
  EXPECT_EQ(usedBlocks(), 3u);
  receiver_.expire(Clock::now());
  EXPECT_EQ(receiver_.leaseCount(), 1u);  // not yet
  receiver_.expire(Clock::now() + 100ms);
  EXPECT_EQ(receiver_.leaseCount(), 0u);
  EXPECT_EQ(usedBlocks(), 0u);
  auto stream = decode(lease, 1);  // too late
  auto lines = readStream(*stream, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "error");
  EXPECT_NE(lines[0].message.find("unknown or expired lease"), std::string::npos);
}

TEST_F(KvReceiverTest, AStreamWaitingOnAnExpiredLeaseIsToldWhatLanded) {
  const wire::ReserveResponse lease = reserve(1, 10, /*lease_ms=*/50);
  auto stream = decode(lease, 1);
  land(lease.slot, 0);
  receiver_.expire(Clock::now() + 100ms);
  auto lines = readStream(*stream, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "error");
  EXPECT_NE(lines[0].message.find("1 of 3 layers landed"), std::string::npos) << lines[0].message;
  EXPECT_TRUE(landed_.empty());
}

TEST_F(KvReceiverTest, AReleasedLeaseKeepsItsBlocksUntilTheLateWritesLand) {
  const wire::ReserveResponse lease = reserve(1, 10);
  land(lease.slot, 0);
  receiver_.release(lease.lease_id, /*writer_done=*/false);
  // Quarantined: a prefill agent may still be writing into the blocks.
  EXPECT_EQ(usedBlocks(), 3u);
  EXPECT_EQ(receiver_.leaseCount(), 1u);
  auto stream = decode(lease, 1);
  auto lines = readStream(*stream, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].message.find("has ended"), std::string::npos);
  receiver_.release(lease.lease_id, /*writer_done=*/false);  // idempotent
  land(lease.slot, 1);
  EXPECT_EQ(usedBlocks(), 3u);
  land(lease.slot, 2);  // the last late write: the blocks are free again
  EXPECT_EQ(usedBlocks(), 0u);
  EXPECT_EQ(receiver_.leaseCount(), 0u);
  EXPECT_TRUE(landed_.empty());
}

TEST_F(KvReceiverTest, AReleaseWhoseWriterIsDoneFreesTheBlocksAtOnce) {
  const wire::ReserveResponse lease = reserve(1, 10);
  land(lease.slot, 0);
  // The prefill agent says its writes settled: nothing can land late, so no quarantine.
  receiver_.release(lease.lease_id, /*writer_done=*/true);
  EXPECT_EQ(usedBlocks(), 0u);
  EXPECT_EQ(receiver_.leaseCount(), 0u);
}

TEST_F(KvReceiverTest, AWriterDoneReleaseEndsAQuarantineEarly) {
  const wire::ReserveResponse lease = reserve(1, 10);
  land(lease.slot, 0);
  receiver_.release(lease.lease_id, /*writer_done=*/false);
  EXPECT_EQ(usedBlocks(), 3u);
  receiver_.release(lease.lease_id, /*writer_done=*/true);
  EXPECT_EQ(usedBlocks(), 0u);
  EXPECT_EQ(receiver_.leaseCount(), 0u);
}

TEST_F(KvReceiverTest, AQuarantineEndsAfterTheWritersTimeoutAndLaterImmediatesAreDropped) {
  const wire::ReserveResponse lease = reserve(1, 10);
  land(lease.slot, 0);
  receiver_.release(lease.lease_id, /*writer_done=*/false);
  receiver_.expire(Clock::now() + kQuarantine / 2);
  EXPECT_EQ(usedBlocks(), 3u);
  receiver_.expire(Clock::now() + kQuarantine + 50ms);
  EXPECT_EQ(usedBlocks(), 0u);
  EXPECT_EQ(receiver_.leaseCount(), 0u);
  // Writes that arrive after the quarantine name a slot with no lease: dropped.
  land(lease.slot, 1);
  land(lease.slot, 2);
  EXPECT_EQ(usedBlocks(), 0u);
  // The next lease takes another slot, so no late write can be counted for it.
  const wire::ReserveResponse next = reserve(2, 10);
  EXPECT_NE(next.slot, lease.slot);
}

TEST_F(KvReceiverTest, AnImmediateForAnUnknownSlotOrLayerChangesNothing) {
  const wire::ReserveResponse lease = reserve(1, 10);
  land(lease.slot + 7, 0);
  land(lease.slot, kLayers);  // past the model's layers
  auto stream = decode(lease, 1);
  EXPECT_TRUE(landed_.empty());
  for (uint32_t layer = 0; layer < kLayers; ++layer) land(lease.slot, layer);
  EXPECT_EQ(landed_.size(), 1u);
}

TEST_F(KvReceiverTest, ACancelEndsTheRequestsLeasesOnly) {
  const wire::ReserveResponse mine = reserve(1, 10);
  const wire::ReserveResponse other = reserve(2, 10);
  for (uint32_t layer = 0; layer < kLayers; ++layer) land(mine.slot, layer);
  auto stream = decode(mine, 1);  // landed and handed on: not a lease any more
  const wire::ReserveResponse waiting = reserve(1, 4, 60000, /*first=*/30);  // nothing cached
  auto waiting_stream = decode(waiting, 1);
  EXPECT_TRUE(receiver_.cancel(1));
  auto lines = readStream(*waiting_stream, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].message, "cancelled");
  // `other`, and the cancelled one, quarantined: none of its layers has landed yet.
  EXPECT_EQ(receiver_.leaseCount(), 2u);
  receiver_.expire(Clock::now() + kQuarantine + 50ms);  // the quarantine ends; `other` stays
  EXPECT_EQ(receiver_.leaseCount(), 1u);
  EXPECT_FALSE(receiver_.cancel(3));
}

// The orchestrator forgot this node (EngineWork::forgotten): every lease ends, a waiting stream is
// told why, and blocks that may still receive writes stay quarantined until the writer's timeout.
TEST_F(KvReceiverTest, EndAllEndsEveryLeaseAndQuarantinesThoseStillOpenToWrites) {
  const wire::ReserveResponse complete = reserve(1, 10);
  for (uint32_t layer = 0; layer < kLayers; ++layer) land(complete.slot, layer);
  const wire::ReserveResponse waiting = reserve(2, 4, 60000, /*first=*/30);
  auto stream = decode(waiting, 2);
  reserve(3, 4, 60000, /*first=*/40);
  const uint32_t used = usedBlocks();
  EXPECT_EQ(receiver_.endAll("forgotten"), 3u);
  auto lines = readStream(*stream, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].message, "forgotten");
  // Every layer of `complete` landed: its lease is gone at once; the other two wait out the
  // quarantine, and a second call finds nothing left to end.
  EXPECT_EQ(receiver_.leaseCount(), 2u);
  EXPECT_LT(usedBlocks(), used);
  EXPECT_EQ(receiver_.endAll("again"), 0u);
  receiver_.expire(Clock::now() + kQuarantine + 50ms);
  EXPECT_EQ(receiver_.leaseCount(), 0u);
}

TEST_F(KvReceiverTest, ALeaseIsDecodedOnce) {
  const wire::ReserveResponse lease = reserve(1, 10);
  decode(lease, 1);
  auto second = decode(lease, 1);
  auto lines = readStream(*second, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].message.find("already being decoded"), std::string::npos);
}

}  // namespace
}  // namespace kvferry::agent::kv_transfer
