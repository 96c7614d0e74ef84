// The typed suite every Transport backend must pass. A new backend adds one line to
// `Backends` below (verbs runs it under Soft-RoCE). tcp runs it three times: host memory, CUDA
// regions on both sides and CUDA → host, the "CUDA" regions host memory staged by a fake copier
// (tests/rdma/gpu/tcp_cuda_test.cc moves real device memory).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "rdma/loopback/loopback_transport.h"
#include "rdma/tcp/tcp_transport.h"
#include "tests/rdma/fake_staging_copier.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;

enum class Side { kTarget, kInitiator };

// What a backend may change: how its transports are made, where its regions live.
struct DefaultBackend {
  static std::string unavailableReason() { return ""; }
  static void configure(config::TransportConfig&, Side) {}
  static MemoryKind memory(Side) { return MemoryKind::host(); }
  static Result<std::unique_ptr<Transport>> make(const config::TransportConfig& c,
                                                 std::shared_ptr<LoopbackFabric> fabric) {
    return makeTransport(c, std::move(fabric));
  }
};
struct TcpBackend : DefaultBackend {
  static constexpr config::TransportKind kKind = config::TransportKind::kTcp;
  static std::string name() { return "tcp"; }
};
// tcp with regions flagged CUDA, staged through small chunks (ops span several, several share
// one) by a copier that memcpys.
struct TcpFakeGpuBackend : TcpBackend {
  static std::string name() { return "tcp_fake_gpu"; }
  static void configure(config::TransportConfig& c, Side) {
    c.gpu_staging_chunk_bytes = 16 * 1024;
    c.gpu_staging_chunks = 3;
  }
  static MemoryKind memory(Side) { return MemoryKind::cuda(0); }
  static Result<std::unique_ptr<Transport>> make(const config::TransportConfig& c,
                                                 std::shared_ptr<LoopbackFabric> fabric) {
    if (c.kind != config::TransportKind::kTcp) return makeTransport(c, std::move(fabric));
    return makeTcpTransport(c, fakeCopierFactory());
  }
};
// The initiator's regions CUDA, the target's host memory.
struct TcpFakeGpuToHostBackend : TcpFakeGpuBackend {
  static std::string name() { return "tcp_fake_gpu_to_host"; }
  static MemoryKind memory(Side side) {
    return side == Side::kInitiator ? MemoryKind::cuda(0) : MemoryKind::host();
  }
};
// tcp behind the fault-injecting wrapper with a fault that never fires: the wrapper must keep
// every guarantee of the backend it wraps.
struct TcpFaultWrappedBackend : TcpBackend {
  static std::string name() { return "tcp_fault_wrapped"; }
  static void configure(config::TransportConfig& c, Side) { c.faults.cut_every_batches = 1u << 30; }
};
// tcp over two rails (two listeners on 127.0.0.1, rdma/striped/): every batch of 4 KiB or more
// is sliced over both, a batch with an immediate sealed by its last bytes.
struct TcpTwoRailsBackend : TcpBackend {
  static std::string name() { return "tcp_two_rails"; }
  static void configure(config::TransportConfig& c, Side) {
    c.rails = {"127.0.0.1", "127.0.0.1"};
    c.stripe_min_bytes = 4096;
  }
};
struct LoopbackBackend : DefaultBackend {
  static constexpr config::TransportKind kKind = config::TransportKind::kLoopback;
  static std::string name() { return "loopback"; }
};
// Verbs runs on real RDMA devices: the two Soft-RoCE devices of the rxe VM (ctest -L rxe), or
// KVFERRY_VERBS_TARGET_DEV / _INITIATOR_DEV (+ _IP) on a host with RDMA NICs.
struct VerbsBackend : DefaultBackend {
  static constexpr config::TransportKind kKind = config::TransportKind::kVerbs;
  static std::string name() { return "verbs"; }
  static std::string unavailableReason() { return verbsTestUnavailableReason(); }
  static void configure(config::TransportConfig& c, Side side) {
    const VerbsTestEndpoint ep = verbsTestEndpoint(side == Side::kTarget);
    c.verbs.devices = {ep.device};
    c.listen_address = ep.ip + ":0";
  }
};

template <typename Backend>
class TransportSuite : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = Backend::unavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
  }

  config::TransportConfig baseConfig(Side side = Side::kTarget) const {
    config::TransportConfig c;
    c.kind = Backend::kKind;
    c.listen_address = "127.0.0.1:0";
    c.queue_depth = 32;
    c.connections_per_peer = 2;
    c.connect_timeout_ms = 2000;
    c.connect_retries = 0;
    c.op_timeout_ms = 3000;
    c.direct_receive_bytes = 8192;  // exercise both the staged and the direct receive paths
    Backend::configure(c, side);
    return c;
  }

  std::unique_ptr<Transport> make(const config::TransportConfig& c) {
    Result<std::unique_ptr<Transport>> t = Backend::make(c, fabric_);
    EXPECT_TRUE(t.isOk()) << t.status().toString();
    return t.isOk() ? std::move(t).value() : nullptr;
  }

  // Two endpoints, each with a pool of `blocks` × `block_bytes`, the initiator connected.
  void makePair(uint64_t block_bytes, uint64_t blocks,
                std::optional<config::TransportConfig> c = std::nullopt) {
    config::TransportConfig target_cfg = c.value_or(baseConfig());
    config::TransportConfig initiator_cfg = target_cfg;
    Backend::configure(target_cfg, Side::kTarget);
    Backend::configure(initiator_cfg, Side::kInitiator);
    target_ = make(target_cfg);
    initiator_ = make(initiator_cfg);
    ASSERT_TRUE(target_ && initiator_);
    target_mem_.assign(block_bytes * blocks, 0);
    initiator_mem_.resize(block_bytes * blocks);
    fillRandom(initiator_mem_, 42);
    target_pool_ = registerPool(*target_, target_mem_, block_bytes, Backend::memory(Side::kTarget));
    initiator_pool_ =
        registerPool(*initiator_, initiator_mem_, block_bytes, Backend::memory(Side::kInitiator));
    Result<EndpointBlob> blob = target_->localBlob();
    ASSERT_TRUE(blob.isOk()) << blob.status().toString();
    Result<PeerId> peer = initiator_->connect(*blob);
    ASSERT_TRUE(peer.isOk()) << peer.status().toString();
    peer_ = *peer;
  }

  // Copies initiator blocks src[i] → target blocks dst[i] in one batch and waits for it.
  Status writeBlocks(const std::vector<uint32_t>& src, const std::vector<uint32_t>& dst,
                     std::optional<uint32_t> imm, uint64_t cookie) {
    std::vector<TransferOp> ops;
    RETURN_IF_ERROR(appendBlockOps(initiator_pool_, target_pool_, src, dst, ops));
    RETURN_IF_ERROR(initiator_->postWrite(peer_, ops, imm, cookie));
    return waitOne(*initiator_, cookie);
  }

  std::shared_ptr<LoopbackFabric> fabric_ = std::make_shared<LoopbackFabric>();
  std::vector<uint8_t> target_mem_, initiator_mem_;
  std::unique_ptr<Transport> target_, initiator_;
  KvPool target_pool_, initiator_pool_;
  PeerId peer_ = 0;
};

#ifdef KVFERRY_HAVE_VERBS
using Backends =
    ::testing::Types<TcpBackend, TcpFakeGpuBackend, TcpFakeGpuToHostBackend, TcpFaultWrappedBackend,
                     TcpTwoRailsBackend, LoopbackBackend, VerbsBackend>;
#else
using Backends = ::testing::Types<TcpBackend, TcpFakeGpuBackend, TcpFakeGpuToHostBackend,
                                  TcpFaultWrappedBackend, TcpTwoRailsBackend, LoopbackBackend>;
#endif
class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::name();
  }
};
TYPED_TEST_SUITE(TransportSuite, Backends, BackendNames);

TYPED_TEST(TransportSuite, RandomBlockSetsArriveIntact) {
  constexpr uint64_t kBlockBytes = 12 * 1024 + 8;  // odd size: no alignment luck
  constexpr uint32_t kBlocks = 96;
  this->makePair(kBlockBytes, kBlocks);
  std::mt19937 rng(7);
  std::vector<uint64_t> expected(kBlocks, blockChecksum(this->target_mem_, this->target_pool_, 0));
  for (int round = 0; round < 20; ++round) {
    const size_t n = 1 + rng() % 24;
    std::vector<uint32_t> src = randomIds(kBlocks, n, rng);
    std::vector<uint32_t> dst = randomIds(kBlocks, n, rng);
    ASSERT_TRUE(this->writeBlocks(src, dst, std::nullopt, round).isOk()) << "round " << round;
    for (size_t i = 0; i < n; ++i) {
      expected[dst[i]] = blockChecksum(this->initiator_mem_, this->initiator_pool_, src[i]);
    }
    for (uint32_t b = 0; b < kBlocks; ++b) {
      ASSERT_EQ(blockChecksum(this->target_mem_, this->target_pool_, b), expected[b])
          << "round " << round << " block " << b;
    }
  }
}

TYPED_TEST(TransportSuite, ReadsPullRemoteBlocks) {
  constexpr uint64_t kBlockBytes = 64 * 1024;  // above direct_receive_bytes
  this->makePair(kBlockBytes, 32);
  fillRandom(this->target_mem_, 99);
  std::vector<uint8_t> sink(kBlockBytes * 32, 0);
  KvPool sink_pool =
      registerPool(*this->initiator_, sink, kBlockBytes, TypeParam::memory(Side::kInitiator));
  std::mt19937 rng(3);
  std::vector<uint32_t> remote = randomIds(32, 20, rng);
  std::vector<uint32_t> local = randomIds(32, 20, rng);
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(sink_pool, this->target_pool_, local, remote, ops).isOk());
  ASSERT_TRUE(this->initiator_->postRead(this->peer_, ops, 5).isOk());
  ASSERT_TRUE(waitOne(*this->initiator_, 5).isOk());
  for (size_t i = 0; i < local.size(); ++i) {
    EXPECT_EQ(blockChecksum(sink, sink_pool, local[i]),
              blockChecksum(this->target_mem_, this->target_pool_, remote[i]));
  }
}

TYPED_TEST(TransportSuite, ImmediatesArriveExactlyOncePerBatchAfterTheirData) {
  constexpr uint64_t kBlockBytes = 4096;
  constexpr uint32_t kBatches = 30;  // below queue_depth: posted before any poll
  this->makePair(kBlockBytes, kBatches);
  std::set<uint32_t> wanted;
  // Batch i writes initiator block i to target block i; even batches carry immediate 1000 + i.
  uint64_t posted = 0;
  for (uint32_t i = 0; i < kBatches; ++i) {
    std::vector<TransferOp> ops;
    ASSERT_TRUE(appendBlockOps(this->initiator_pool_, this->target_pool_, std::vector<uint32_t>{i},
                               std::vector<uint32_t>{i}, ops)
                    .isOk());
    std::optional<uint32_t> imm;
    if (i % 2 == 0) {
      imm = 1000 + i;
      wanted.insert(1000 + i);
    }
    Status s = this->initiator_->postWrite(this->peer_, ops, imm, i);
    ASSERT_TRUE(s.isOk()) << s.toString();
    ++posted;
  }
  std::vector<Completion> done = drainCompletions(*this->initiator_, posted, 10s);
  ASSERT_EQ(done.size(), posted);
  for (const Completion& c : done) EXPECT_TRUE(c.status.isOk()) << c.status.toString();

  std::multiset<uint32_t> got;
  ImmediateEvent events[8];
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (got.size() < wanted.size() && std::chrono::steady_clock::now() < give_up) {
    size_t n = this->target_->pollImmediates(events, 100ms);
    for (size_t k = 0; k < n; ++k) {
      const uint32_t block = events[k].imm - 1000;
      // The immediate may only be seen once the batch's bytes are in place.
      EXPECT_EQ(blockChecksum(this->target_mem_, this->target_pool_, block),
                blockChecksum(this->initiator_mem_, this->initiator_pool_, block));
      got.insert(events[k].imm);
    }
  }
  // Nothing more may arrive: exactly once.
  EXPECT_EQ(this->target_->pollImmediates(events, 200ms), 0u);
  EXPECT_EQ(std::set<uint32_t>(got.begin(), got.end()), wanted);
  EXPECT_EQ(got.size(), wanted.size()) << "an immediate was delivered twice";
}

TYPED_TEST(TransportSuite, AdjacentBlocksCoalesceIntoOneOp) {
  constexpr uint64_t kBlockBytes = 2048;
  this->makePair(kBlockBytes, 64);
  std::vector<uint32_t> src{3, 4, 5, 6, 20, 21, 40};
  std::vector<uint32_t> dst{10, 11, 12, 13, 30, 33, 50};
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(this->initiator_pool_, this->target_pool_, src, dst, ops).isOk());
  // 3..6 → 10..13 is one run; 20,21 → 30,33 is not (remote side jumps); 40 → 50 alone.
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[0].length, 4 * kBlockBytes);
  ASSERT_TRUE(this->initiator_->postWrite(this->peer_, ops, 77u, 1).isOk());
  ASSERT_TRUE(waitOne(*this->initiator_, 1).isOk());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(blockChecksum(this->target_mem_, this->target_pool_, dst[i]),
              blockChecksum(this->initiator_mem_, this->initiator_pool_, src[i]));
  }
  ImmediateEvent ev;
  ASSERT_EQ(this->target_->pollImmediates({&ev, 1}, 5s), 1u);
  EXPECT_EQ(ev.imm, 77u);
}

TYPED_TEST(TransportSuite, OutOfRangeOpsAreRefusedAndNeverApplied) {
  constexpr uint64_t kBlockBytes = 1024;
  this->makePair(kBlockBytes, 16);
  const uint64_t end = kBlockBytes * 16;
  const RegionId local = this->initiator_pool_.region;
  const RegionId remote = this->target_pool_.region;
  struct Case {
    TransferOp op;
    StatusCode code;
  };
  const std::vector<Case> cases{
      {{local, 0, remote, end - 512, 1024}, StatusCode::kOutOfRange},  // past remote end
      {{local, 0, remote, end, 1}, StatusCode::kOutOfRange},           // at remote end
      {{local, 0, remote, ~0ull - 10, 100}, StatusCode::kOutOfRange},  // offset overflow
      {{local, end - 10, remote, 0, 100}, StatusCode::kOutOfRange},    // past local end
      {{local, 0, remote + 100, 0, 100}, StatusCode::kNotFound},       // no such region
      {{local + 100, 0, remote, 0, 100}, StatusCode::kNotFound},       // no local region
      {{local, 0, remote, 0, 0}, StatusCode::kInvalidArgument},        // empty op
  };
  for (const Case& c : cases) {
    // A good op first: a refused batch must not apply it either.
    std::vector<TransferOp> ops{{local, 0, remote, 0, kBlockBytes}, c.op};
    Status w = this->initiator_->postWrite(this->peer_, ops, 9u, 1);
    EXPECT_EQ(w.code(), c.code) << w.toString();
    Status r = this->initiator_->postRead(this->peer_, ops, 2);
    EXPECT_EQ(r.code(), c.code) << r.toString();
  }
  EXPECT_TRUE(std::all_of(this->target_mem_.begin(), this->target_mem_.end(),
                          [](uint8_t b) { return b == 0; }));
  ImmediateEvent ev;
  EXPECT_EQ(this->target_->pollImmediates({&ev, 1}, 100ms), 0u);
  Completion cq;
  EXPECT_EQ(this->initiator_->pollCompletions({&cq, 1}, 100ms), 0u) << "refused posts complete";
  // Batch-level limits.
  EXPECT_EQ(this->initiator_->postWrite(this->peer_, {}, std::nullopt, 3).code(),
            StatusCode::kInvalidArgument);
}

// A batch refused part-way through its checks (good op, then an op into no remote region) has
// already looked up the good op's local region: the refusal must let go of it, or
// deregistering that region would wait for a transfer that never started.
TYPED_TEST(TransportSuite, ARefusedBatchKeepsNoLocalRegionRegistered) {
  this->makePair(1024, 8);
  const RegionId local = this->initiator_pool_.region;
  const RegionId remote = this->target_pool_.region;
  std::vector<TransferOp> ops{{local, 0, remote, 0, 1024}, {local, 0, remote + 100, 0, 1024}};
  EXPECT_EQ(this->initiator_->postWrite(this->peer_, ops, 1u, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(this->initiator_->postRead(this->peer_, ops, 2).code(), StatusCode::kNotFound);
  const auto start = std::chrono::steady_clock::now();
  Status gone = this->initiator_->deregisterRegion(local);
  EXPECT_TRUE(gone.isOk()) << gone.toString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << "waited for a pin of a refused batch";
}

TYPED_TEST(TransportSuite, TargetRefusesAccessToADeregisteredRegion) {
  constexpr uint64_t kBlockBytes = 1024;
  this->makePair(kBlockBytes, 8);
  // The initiator still holds the old blob, so its own check passes: the target must refuse.
  ASSERT_TRUE(this->target_->deregisterRegion(this->target_pool_.region).isOk());
  Status s = this->writeBlocks({0, 1}, {2, 5}, 4u, 11);
  // tcp/loopback know the region is gone; verbs sees the NIC's remote access error.
  EXPECT_TRUE(s.code() == StatusCode::kNotFound || s.code() == StatusCode::kOutOfRange)
      << s.toString();
  ImmediateEvent ev;
  EXPECT_EQ(this->target_->pollImmediates({&ev, 1}, 100ms), 0u);
  EXPECT_TRUE(std::all_of(this->target_mem_.begin(), this->target_mem_.end(),
                          [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(this->target_->deregisterRegion(this->target_pool_.region).code(),
            StatusCode::kNotFound);

  std::vector<TransferOp> ops{{this->initiator_pool_.region, 0, this->target_pool_.region, 0, 64}};
  if (this->initiator_->capabilities().survives_remote_refusal) {
    // The connection survives a refused batch, and the target refuses reads of it as well.
    ASSERT_TRUE(this->initiator_->postRead(this->peer_, ops, 12).isOk());
    EXPECT_EQ(waitOne(*this->initiator_, 12).code(), StatusCode::kNotFound);
  } else {
    // The peer reported failure; a reconnect with the fresh blob works, and that blob no longer
    // lists the region, so the access is refused before anything is posted.
    EXPECT_FALSE(this->initiator_->postRead(this->peer_, ops, 12).isOk());
    Result<PeerId> again = this->initiator_->connect(*this->target_->localBlob());
    ASSERT_TRUE(again.isOk()) << again.status().toString();
    EXPECT_EQ(this->initiator_->postRead(*again, ops, 13).code(), StatusCode::kNotFound);
  }
  EXPECT_TRUE(
      this->target_->registerRegion(this->target_mem_.data(), 1024, MemoryKind::host()).isOk());
}

TYPED_TEST(TransportSuite, QueueDepthBoundsOutstandingBatches) {
  auto cfg = this->baseConfig();
  cfg.queue_depth = 4;
  this->makePair(1024, 8, cfg);
  std::vector<TransferOp> ops{
      {this->initiator_pool_.region, 0, this->target_pool_.region, 0, 1024}};
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(this->initiator_->postWrite(this->peer_, ops, std::nullopt, i).isOk());
  }
  EXPECT_EQ(this->initiator_->postWrite(this->peer_, ops, std::nullopt, 4).code(),
            StatusCode::kResourceExhausted);
  // Any one completion frees a slot (with several connections per peer they need not come in
  // posting order).
  const std::vector<Completion> first = drainCompletions(*this->initiator_, 1, 10s);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(first[0].status.isOk()) << first[0].status.toString();
  EXPECT_TRUE(this->initiator_->postWrite(this->peer_, ops, std::nullopt, 5).isOk());
  EXPECT_EQ(drainCompletions(*this->initiator_, 4, 10s).size(), 4u);
}

TYPED_TEST(TransportSuite, PeerDeathFailsEveryPendingBatchWithinTheTimeout) {
  auto cfg = this->baseConfig();
  cfg.op_timeout_ms = 1500;
  constexpr uint64_t kBlockBytes = 256 * 1024;
  this->makePair(kBlockBytes, 64, cfg);
  uint64_t posted = 0;
  for (uint32_t i = 0; i < cfg.queue_depth; ++i) {
    std::vector<uint32_t> ids(8);
    std::iota(ids.begin(), ids.end(), (i % 8) * 8);
    std::vector<TransferOp> ops;
    ASSERT_TRUE(appendBlockOps(this->initiator_pool_, this->target_pool_, ids, ids, ops).isOk());
    if (this->initiator_->postWrite(this->peer_, ops, i, i).isOk()) ++posted;
  }
  this->target_.reset();  // the peer dies with batches in flight
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Completion> done = drainCompletions(
      *this->initiator_, posted, std::chrono::milliseconds(cfg.op_timeout_ms) + 5s);
  EXPECT_EQ(done.size(), posted) << "a pending batch never completed";
  std::set<uint64_t> cookies;
  for (const Completion& c : done) {
    cookies.insert(c.cookie);
    if (!c.status.isOk()) {
      EXPECT_TRUE(c.status.code() == StatusCode::kUnavailable ||
                  c.status.code() == StatusCode::kDeadlineExceeded)
          << c.status.toString();
    }
  }
  EXPECT_EQ(cookies.size(), posted) << "a batch completed twice";
  (void)t0;
  // After the death is known, new batches fail (at post, or as their completion).
  std::vector<TransferOp> ops{{this->initiator_pool_.region, 0, this->target_pool_.region, 0, 64}};
  Status s = this->initiator_->postWrite(this->peer_, ops, std::nullopt, 999);
  if (s.isOk()) s = waitOne(*this->initiator_, 999);
  EXPECT_FALSE(s.isOk());
}

TYPED_TEST(TransportSuite, TeardownLeavesNoThreadsSocketsOrRegions) {
  const size_t threads_before = countEntries("/proc/self/task");
  const size_t fds_before = countEntries("/proc/self/fd");
  for (int i = 0; i < 3; ++i) {
    this->makePair(4096, 16);
    ASSERT_TRUE(this->writeBlocks({1, 2, 3}, {4, 5, 6}, 1u, 1).isOk());
    ASSERT_TRUE(this->initiator_->disconnect(this->peer_).isOk());
    EXPECT_EQ(this->initiator_->disconnect(this->peer_).code(), StatusCode::kNotFound);
    ASSERT_TRUE(this->initiator_->deregisterRegion(this->initiator_pool_.region).isOk());
    this->initiator_.reset();
    this->target_.reset();
  }
  EXPECT_EQ(countEntries("/proc/self/task"), threads_before);
  EXPECT_EQ(countEntries("/proc/self/fd"), fds_before);
}

TYPED_TEST(TransportSuite, BadBlobsAreRejected) {
  auto t = this->make(this->baseConfig());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->connect({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->connect({1, 2, 3, 4, 5}).status().code(), StatusCode::kInvalidArgument);
  Result<EndpointBlob> blob = t->localBlob();
  ASSERT_TRUE(blob.isOk());
  EndpointBlob truncated(blob->begin(), blob->end() - 1);
  EXPECT_EQ(t->connect(truncated).status().code(), StatusCode::kInvalidArgument);
  // A blob of the other backend.
  auto other_cfg = this->baseConfig();
  other_cfg.kind = TypeParam::kKind == config::TransportKind::kTcp
                       ? config::TransportKind::kLoopback
                       : config::TransportKind::kTcp;
  other_cfg.listen_address = "127.0.0.1:0";
  other_cfg.rails.clear();
  auto other = this->make(other_cfg);
  ASSERT_TRUE(other);
  Result<PeerId> foreign = t->connect(*other->localBlob());
  EXPECT_EQ(foreign.status().code(), StatusCode::kInvalidArgument) << foreign.status().toString();
}

}  // namespace
}  // namespace kvferry::rdma
