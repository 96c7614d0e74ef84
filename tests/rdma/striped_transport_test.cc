// Several rails per endpoint (rdma/striped/): how a batch is cut, that the bytes spread over the
// rails, that a rail whose connection is cut loses no batch, and a peer with one NIC. The typed
// suite (transport_suite_test.cc, tcp_two_rails) holds the striped transport to every guarantee
// of a backend; the Soft-RoCE VM runs it over two verbs rails (verbs_test.cc).
#include "rdma/striped/striped_transport.h"

#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>
#include <set>

#include "rdma/factory.h"
#include "rdma/fault/fault_transport.h"
#include "rdma/kv_layout.h"
#include "rdma/tcp/tcp_transport.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;

uint64_t totalBytes(std::span<const TransferOp> ops) {
  uint64_t n = 0;
  for (const TransferOp& op : ops) n += op.length;
  return n;
}

TEST(SliceOpsTest, PiecesCoverTheOpsInOrderCutAtTheShares) {
  const std::vector<TransferOp> ops{{1, 0, 2, 100, 10}, {1, 50, 2, 500, 30}, {3, 7, 4, 9, 5}};
  const std::vector<uint64_t> shares{12, 25, 8};
  const std::vector<std::vector<TransferOp>> pieces = sliceOps(ops, shares);
  ASSERT_EQ(pieces.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(totalBytes(pieces[i]), shares[i]);
  // Piece 0: all of op 0, the first 2 bytes of op 1.
  ASSERT_EQ(pieces[0].size(), 2u);
  EXPECT_EQ(pieces[0][1].local_offset, 50u);
  EXPECT_EQ(pieces[0][1].length, 2u);
  // Piece 1: 25 bytes of op 1 from its byte 2 on (both offsets moved alike); piece 2 its last 3
  // bytes and all of op 2.
  ASSERT_EQ(pieces[1].size(), 1u);
  EXPECT_EQ(pieces[1][0].local_offset, 52u);
  EXPECT_EQ(pieces[1][0].remote_offset, 502u);
  EXPECT_EQ(pieces[1][0].length, 25u);
  ASSERT_EQ(pieces[2].size(), 2u);
  EXPECT_EQ(pieces[2][0].local_offset, 77u);
  EXPECT_EQ(pieces[2][0].length, 3u);
  EXPECT_EQ(pieces[2][1].local_region, 3u);
  // Byte for byte, the pieces concatenated are the ops.
  std::vector<std::pair<uint64_t, uint64_t>> bytes_in, bytes_out;
  for (const TransferOp& op : ops) {
    for (uint64_t b = 0; b < op.length; ++b)
      bytes_in.push_back({op.local_offset + b, op.remote_offset + b});
  }
  for (const auto& piece : pieces) {
    for (const TransferOp& op : piece) {
      for (uint64_t b = 0; b < op.length; ++b)
        bytes_out.push_back({op.local_offset + b, op.remote_offset + b});
    }
  }
  EXPECT_EQ(bytes_in, bytes_out);
}

class StripedTransportTest : public ScatteredPairTest {
 protected:
  static constexpr uint64_t kBlockBytes = 64 * 1024;
  static constexpr uint64_t kBlocks = 64;
  static constexpr uint32_t kInFlight = 8;  // batches; each lands in a part of the target's own
  static constexpr uint32_t kBatchBlocks = 16;

  config::TransportConfig tcpConfig() const {
    config::TransportConfig c;
    c.kind = config::TransportKind::kTcp;
    c.listen_address = "127.0.0.1:0";
    c.queue_depth = railQueueDepth(32, 2);
    c.max_batch_ops = 4096 + 2;
    c.connect_timeout_ms = 2000;
    c.connect_retries = 0;
    c.op_timeout_ms = 3000;
    return c;
  }
  // The striped transport's own settings (its rails get tcpConfig()'s).
  config::TransportConfig options() const {
    config::TransportConfig o = tcpConfig();
    o.queue_depth = 32;
    o.max_batch_ops = 4096;
    o.stripe_min_bytes = 64 * 1024;
    o.rail_cooldown_ms = 50;
    return o;
  }
  std::unique_ptr<Transport> tcp() {
    Result<std::unique_ptr<Transport>> t = makeTcpTransport(tcpConfig());
    EXPECT_TRUE(t.isOk()) << t.status().toString();
    return t.isOk() ? std::move(t).value() : nullptr;
  }
  std::unique_ptr<Transport> striped(std::vector<std::unique_ptr<Transport>> rails) {
    Result<std::unique_ptr<Transport>> t = makeStripedTransport(std::move(rails), options());
    EXPECT_TRUE(t.isOk()) << t.status().toString();
    return t.isOk() ? std::move(t).value() : nullptr;
  }
  std::vector<std::unique_ptr<Transport>> tcpRails(size_t n) {
    std::vector<std::unique_ptr<Transport>> rails;
    for (size_t i = 0; i < n; ++i) rails.push_back(tcp());
    return rails;
  }

  void connectPair() {
    ScatteredPairTest::connectPair(kBlockBytes, kBlocks, kInFlight * kBatchBlocks, 7);
  }

  // `batches` batches of 16 scattered blocks (1 MiB), up to 8 in flight, each with an
  // immediate; every one must complete OK, every immediate arrive, every block land intact.
  void writeAndCheck(int batches) {
    ScatteredBatches run;
    run.batches = batches;
    run.batch_blocks = kBatchBlocks;
    run.in_flight = kInFlight;
    runScatteredBatches(*initiator_, peer_, initiator_pool_, initiator_mem_, *target_, target_pool_,
                        target_mem_, run);
  }
};

TEST_F(StripedTransportTest, BytesSpreadOverEveryRail) {
  target_ = striped(tcpRails(2));
  initiator_ = striped(tcpRails(2));
  connectPair();
  writeAndCheck(40);
  const std::vector<RailStats> stats = railStats(*initiator_);
  ASSERT_EQ(stats.size(), 2u);
  const uint64_t total = stats[0].bytes + stats[1].bytes;
  EXPECT_EQ(total, 40u * kBatchBlocks * kBlockBytes);
  for (size_t r = 0; r < 2; ++r) {
    EXPECT_GT(stats[r].bytes, total / 10) << "rail " << r << " carried almost nothing";
    EXPECT_EQ(stats[r].failures, 0u);
  }
}

// Rail 1's connection is cut every third batch handed to it (the fault wrapper): its slices go
// to rail 0, it reconnects after its cooldown, and no batch fails.
TEST_F(StripedTransportTest, ARailCutMidRunLosesNoBatch) {
  target_ = striped(tcpRails(2));
  std::vector<std::unique_ptr<Transport>> rails;
  rails.push_back(tcp());
  config::TransportConfig cut = tcpConfig();
  cut.faults.cut_every_batches = 3;
  Result<std::unique_ptr<Transport>> wrapped = wrapWithFaults(tcp(), cut);
  ASSERT_TRUE(wrapped.isOk()) << wrapped.status().toString();
  rails.push_back(std::move(wrapped).value());
  initiator_ = striped(std::move(rails));
  connectPair();
  writeAndCheck(40);
  const std::vector<RailStats> stats = railStats(*initiator_);
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_GT(stats[1].failures, 0u) << "the cut never happened: the test tested nothing";
  EXPECT_GT(stats[1].bytes, 0u) << "rail 1 never came back after its cooldown";
  EXPECT_EQ(stats[0].failures, 0u);
}

// Every rail of the peer gone: the batches in flight fail (typed), none hangs.
TEST_F(StripedTransportTest, ABatchFailsWhenNoRailIsLeft) {
  target_ = striped(tcpRails(2));
  initiator_ = striped(tcpRails(2));
  connectPair();
  target_.reset();
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(initiator_pool_, target_pool_, std::vector<uint32_t>{1, 2, 3},
                             std::vector<uint32_t>{4, 5, 6}, ops)
                  .isOk());
  Status posted = initiator_->postWrite(peer_, ops, 7u, 1);
  if (posted.isOk()) {
    const Status s = waitOne(*initiator_, 1);
    EXPECT_FALSE(s.isOk());
    EXPECT_TRUE(s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kCancelled ||
                s.code() == StatusCode::kDeadlineExceeded)
        << s.toString();
  } else {
    EXPECT_EQ(posted.code(), StatusCode::kUnavailable) << posted.toString();
  }
}

// A peer with one NIC (a plain tcp blob): rail 0 reaches it.
TEST_F(StripedTransportTest, APeerWithOneNicIsReachedOnRailZero) {
  target_ = tcp();
  initiator_ = striped(tcpRails(2));
  connectPair();
  writeAndCheck(6);
  const std::vector<RailStats> stats = railStats(*initiator_);
  EXPECT_GT(stats[0].bytes, 0u);
  EXPECT_EQ(stats[1].bytes, 0u);
}

TEST_F(StripedTransportTest, RailsTooSmallForTheStripeAreRefused) {
  config::TransportConfig small = tcpConfig();
  small.queue_depth = 8;
  std::vector<std::unique_ptr<Transport>> rails;
  rails.push_back(makeTcpTransport(small).value());
  Result<std::unique_ptr<Transport>> t = makeStripedTransport(std::move(rails), options());
  ASSERT_FALSE(t.isOk());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("striping needs 64"), std::string::npos)
      << t.status().toString();
}

TEST(StripedConfigTest, RailsForALoopbackTransportAreRefused) {
  config::TransportConfig c;
  c.kind = config::TransportKind::kLoopback;
  c.rails = {"a", "b"};
  Result<std::unique_ptr<Transport>> t = makeTransport(c);
  ASSERT_FALSE(t.isOk());
  EXPECT_NE(t.status().message().find("only tcp and verbs"), std::string::npos)
      << t.status().toString();
}

// [auto] is resolved by the agent (it knows its GPU); one that reaches the factory is refused
// rather than taken for a device named "auto".
TEST(StripedConfigTest, UnresolvedAutoRailsAreRefused) {
  config::TransportConfig c;
  c.kind = config::TransportKind::kVerbs;
  c.rails = {"auto"};
  Result<std::unique_ptr<Transport>> t = makeTransport(c);
  ASSERT_FALSE(t.isOk());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("auto is resolved by the agent"), std::string::npos)
      << t.status().toString();

  c.rails = {"auto", "mlx5_0"};
  t = makeTransport(c);
  ASSERT_FALSE(t.isOk());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
}

TEST(StripedConfigTest, AutoRailsForTcpAreRefused) {
  config::TransportConfig c;
  c.kind = config::TransportKind::kTcp;
  c.rails = {"auto"};
  Result<std::unique_ptr<Transport>> t = makeTransport(c);
  ASSERT_FALSE(t.isOk());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("verbs only"), std::string::npos) << t.status().toString();
}

}  // namespace
}  // namespace kvferry::rdma
