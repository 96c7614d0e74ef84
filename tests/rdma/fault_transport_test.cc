// The fault-injecting wrapper (transport.faults): each fault does what the config says, on the
// loopback backend (in-process) and on tcp (a real connection cut mid-batch).
#include "rdma/fault/fault_transport.h"

#include <gtest/gtest.h>

#include "rdma/factory.h"
#include "rdma/loopback/loopback_transport.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kBlockBytes = 4096;
constexpr uint32_t kBlocks = 16;

class FaultTransportTest : public ::testing::Test {
 protected:
  // A target without faults and an initiator with `faults`, connected, pools registered.
  void makePair(const config::TransportFaults& faults,
                config::TransportKind kind = config::TransportKind::kLoopback) {
    config::TransportConfig c;
    c.kind = kind;
    c.queue_depth = 8;
    c.op_timeout_ms = 300;
    c.connect_timeout_ms = 2000;
    c.connect_retries = 0;
    target_ = std::move(makeTransport(c, fabric_)).value();
    c.faults = faults;
    auto initiator = makeTransport(c, fabric_);
    ASSERT_TRUE(initiator.isOk()) << initiator.status().toString();
    initiator_ = std::move(initiator).value();
    target_mem_.assign(kBlockBytes * kBlocks, 0);
    initiator_mem_.resize(kBlockBytes * kBlocks);
    fillRandom(initiator_mem_, 5);
    target_pool_ = registerPool(*target_, target_mem_, kBlockBytes);
    initiator_pool_ = registerPool(*initiator_, initiator_mem_, kBlockBytes);
    blob_ = std::move(target_->localBlob()).value();
    connect();
  }

  void connect() {
    Result<PeerId> peer = initiator_->connect(blob_);
    ASSERT_TRUE(peer.isOk()) << peer.status().toString();
    peer_ = *peer;
  }

  // Blocks 0..n-1 of the initiator into blocks 0..n-1 of the target, with an immediate.
  Status post(uint32_t n, uint64_t cookie) {
    std::vector<uint32_t> ids(n);
    for (uint32_t i = 0; i < n; ++i) ids[i] = i;
    ops_.clear();
    RETURN_IF_ERROR(appendBlockOps(initiator_pool_, target_pool_, ids, ids, ops_));
    return initiator_->postWrite(peer_, ops_, static_cast<uint32_t>(cookie), cookie);
  }

  size_t immediates(std::chrono::milliseconds wait) {
    ImmediateEvent events[8];
    return target_->pollImmediates(events, wait);
  }

  size_t bytesDiffering(uint32_t n) const {
    size_t differ = 0;
    for (size_t i = 0; i < n * kBlockBytes; ++i) differ += target_mem_[i] != initiator_mem_[i];
    return differ;
  }

  std::shared_ptr<LoopbackFabric> fabric_ = std::make_shared<LoopbackFabric>();
  std::unique_ptr<Transport> target_, initiator_;
  std::vector<uint8_t> target_mem_, initiator_mem_;
  KvPool target_pool_, initiator_pool_;
  EndpointBlob blob_;
  PeerId peer_ = 0;
  std::vector<TransferOp> ops_;
};

TEST_F(FaultTransportTest, NoFaultConfiguredMeansNoWrapper) {
  makePair({});
  EXPECT_EQ(dynamic_cast<LoopbackTransport*>(initiator_.get()) != nullptr, true);
  ASSERT_TRUE(post(4, 1).isOk());
  EXPECT_TRUE(waitOne(*initiator_, 1).isOk());
}

TEST_F(FaultTransportTest, ALostBatchLandsNothingAndTimesOut) {
  config::TransportFaults f;
  f.drop_rate = 1;
  makePair(f);
  ASSERT_TRUE(post(4, 7).isOk());
  Status s = waitOne(*initiator_, 7);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.toString();
  EXPECT_NE(s.message().find("injected"), std::string::npos) << s.toString();
  EXPECT_EQ(immediates(0ms), 0u);
  EXPECT_TRUE(
      std::all_of(target_mem_.begin(), target_mem_.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(faultCounts(*initiator_).dropped, 1u);
}

TEST_F(FaultTransportTest, ADelayedBatchArrivesWholeWithItsImmediate) {
  config::TransportFaults f;
  f.delay_ms = 20;
  f.delay_jitter_ms = 10;
  makePair(f);
  for (uint64_t cookie = 1; cookie <= 3; ++cookie) {
    ASSERT_TRUE(post(kBlocks, cookie).isOk());
    EXPECT_TRUE(waitOne(*initiator_, cookie).isOk());
  }
  EXPECT_EQ(bytesDiffering(kBlocks), 0u);
  size_t seen = 0;
  for (int i = 0; i < 20 && seen < 3; ++i) seen += immediates(50ms);
  EXPECT_EQ(seen, 3u);
  EXPECT_EQ(faultCounts(*initiator_).delayed, 3u);
}

TEST_F(FaultTransportTest, ADelayedBatchTheBackendRefusesEndsWithTheRefusal) {
  config::TransportFaults f;
  f.delay_ms = 1;
  makePair(f);
  TransferOp outside{initiator_pool_.region, 0, target_pool_.region, kBlockBytes * kBlocks, 16};
  ASSERT_TRUE(initiator_->postWrite(peer_, {&outside, 1}, std::nullopt, 9).isOk());
  Status s = waitOne(*initiator_, 9);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("delayed batch"), std::string::npos) << s.toString();
}

TEST_F(FaultTransportTest, ACorruptedBatchDiffersInAtMostSixteenBytesOfOneBlock) {
  config::TransportFaults f;
  f.corrupt_rate = 1;
  makePair(f);
  ASSERT_TRUE(post(4, 3).isOk());
  ASSERT_TRUE(waitOne(*initiator_, 3).isOk());
  EXPECT_EQ(immediates(1s), 1u);  // delivered: only a checksum can tell
  size_t first = SIZE_MAX, last = 0;
  for (size_t i = 0; i < 4 * kBlockBytes; ++i) {
    if (target_mem_[i] != initiator_mem_[i]) {
      first = std::min(first, i);
      last = i;
    }
  }
  ASSERT_NE(first, SIZE_MAX) << "no byte differs";
  EXPECT_LT(last - first, 16u);
  EXPECT_EQ(first / kBlockBytes, last / kBlockBytes);
  EXPECT_EQ(faultCounts(*initiator_).corrupted, 1u);
}

TEST_F(FaultTransportTest, AFailedConnectIsUnavailable) {
  config::TransportFaults f;
  f.connect_fail_rate = 1;
  config::TransportConfig c;
  c.kind = config::TransportKind::kLoopback;
  target_ = std::move(makeTransport(c, fabric_)).value();
  c.faults = f;
  initiator_ = std::move(makeTransport(c, fabric_)).value();
  Result<PeerId> peer = initiator_->connect(std::move(target_->localBlob()).value());
  EXPECT_EQ(peer.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(faultCounts(*initiator_).connects_failed, 1u);
}

TEST_F(FaultTransportTest, ACutConnectionFailsItsBatchAndTheNextConnectWorks) {
  config::TransportFaults f;
  f.cut_every_batches = 2;
  makePair(f, config::TransportKind::kTcp);
  ASSERT_TRUE(post(kBlocks, 1).isOk());
  ASSERT_TRUE(waitOne(*initiator_, 1).isOk());
  ASSERT_TRUE(post(kBlocks, 2).isOk());  // the second batch: cut under it
  Status s = waitOne(*initiator_, 2);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.toString();
  EXPECT_EQ(post(1, 3).code(), StatusCode::kUnavailable);  // until the caller disconnects
  EXPECT_TRUE(initiator_->disconnect(peer_).isOk());
  connect();
  ASSERT_TRUE(post(kBlocks, 4).isOk());
  EXPECT_TRUE(waitOne(*initiator_, 4).isOk());
  EXPECT_EQ(faultCounts(*initiator_).cuts, 1u);
}

TEST_F(FaultTransportTest, TheQueueDepthHoldsForHeldAndLostBatches) {
  config::TransportFaults f;
  f.drop_rate = 1;
  makePair(f);
  for (uint64_t cookie = 0; cookie < 8; ++cookie) ASSERT_TRUE(post(1, cookie).isOk());
  EXPECT_EQ(post(1, 8).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(drainCompletions(*initiator_, 8, 5s).size(), 8u);
  EXPECT_TRUE(post(1, 9).isOk());
}

}  // namespace
}  // namespace kvferry::rdma
