// Verbs-only behaviour on real RDMA devices (the rxe VM's Soft-RoCE pair, see run_rxe.sh).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "rdma/verbs/verbs_transport.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;

class VerbsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = verbsTestUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  static config::TransportConfig configFor(bool target) {
    config::TransportConfig c;
    c.kind = config::TransportKind::kVerbs;
    const VerbsTestEndpoint ep = verbsTestEndpoint(target);
    c.verbs.devices = {ep.device};
    c.listen_address = ep.ip + ":0";
    c.connect_retries = 0;
    return c;
  }
};

TEST_F(VerbsTest, GidSelectionPicksTheRoceV2Ipv4MappedEntryAndHonoursTheOverride) {
  config::VerbsConfig vc = configFor(true).verbs;
  Result<GidEntry> chosen = probeGid(vc);
  ASSERT_TRUE(chosen.isOk()) << chosen.status().toString();
  EXPECT_EQ(chosen->type, GidType::kRoceV2);
  EXPECT_TRUE(isIpv4Mapped(chosen->gid)) << gidToString(chosen->gid);
  const char* expected = std::getenv("RXE_VM_SERVER_GID");
  if (expected != nullptr) {
    EXPECT_EQ(chosen->index, static_cast<uint32_t>(std::atoi(expected)));
    EXPECT_EQ(gidToString(chosen->gid), "::ffff:" + verbsTestEndpoint(true).ip);
  }
  vc.gid_index = 0;
  EXPECT_EQ(probeGid(vc)->index, 0u);
  vc.gid_index = 200;
  EXPECT_EQ(probeGid(vc).status().code(), StatusCode::kNotFound);
  vc.devices = {"no_such_device"};
  Result<GidEntry> missing = probeGid(vc);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("present:"), std::string::npos);
}

// Posts `batches` write batches of 100 scattered 1 KiB blocks each, immediate i on batch i, from
// an initiator with config `ic` to a target with `tc`: every batch completes, every block lands
// where it should, and exactly one immediate per batch arrives.
void writeScatteredBatches(const config::TransportConfig& tc, const config::TransportConfig& ic,
                           uint32_t batches, uint32_t seed) {
  auto target = std::move(makeTransport(tc)).value();
  auto initiator = std::move(makeTransport(ic)).value();
  constexpr uint64_t kBlock = 1024;
  constexpr uint32_t kBlocks = 4096;
  std::vector<uint8_t> tmem(kBlock * kBlocks, 0), imem(kBlock * kBlocks);
  fillRandom(imem, seed);
  KvPool tpool = registerPool(*target, tmem, kBlock);
  KvPool ipool = registerPool(*initiator, imem, kBlock);
  PeerId peer = *initiator->connect(*target->localBlob());

  std::mt19937 rng(seed);
  std::vector<uint32_t> dst = randomIds(kBlocks, batches * 100, rng);
  std::vector<uint32_t> src = randomIds(kBlocks, batches * 100, rng);
  for (uint32_t b = 0; b < batches; ++b) {
    std::vector<TransferOp> ops;
    std::span<const uint32_t> s(src.data() + b * 100, 100), d(dst.data() + b * 100, 100);
    ASSERT_TRUE(appendBlockOps(ipool, tpool, s, d, ops).isOk());
    Status posted = initiator->postWrite(peer, ops, b, b);
    ASSERT_TRUE(posted.isOk()) << posted.toString();
  }
  std::vector<Completion> done = drainCompletions(*initiator, batches, 120s);
  ASSERT_EQ(done.size(), batches);
  for (const Completion& c : done) EXPECT_TRUE(c.status.isOk()) << c.status.toString();
  for (size_t i = 0; i < dst.size(); ++i) {
    ASSERT_EQ(blockChecksum(tmem, tpool, dst[i]), blockChecksum(imem, ipool, src[i])) << i;
  }
  std::vector<ImmediateEvent> imms(batches * 2);
  size_t got = 0;
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (got < batches && std::chrono::steady_clock::now() < give_up) {
    got += target->pollImmediates({imms.data() + got, imms.size() - got}, 100ms);
  }
  EXPECT_EQ(got, batches);
  EXPECT_EQ(target->pollImmediates(imms, 200ms), 0u);
}

// Far more work requests than one send queue holds, in short chains with sparse signals: the
// batches that do not fit wait and are posted as completions free room; all data arrives.
TEST_F(VerbsTest, ChainedUnsignaledPostingSurvivesAFullSendQueue) {
  auto tc = configFor(true);
  auto ic = configFor(false);
  for (auto* c : {&tc, &ic}) {
    c->chain_length = 4;
    c->signal_interval = 8;
    c->max_batch_ops = 128;  // send queue depth 256 per QP
    c->queue_depth = 32;
    c->connections_per_peer = 1;
  }
  writeScatteredBatches(tc, ic, 32, 11);
}

// A byte budget below one batch (shared by two connections): every batch waits for its
// connection to drain, then goes alone; none is lost, misplaced or stuck.
TEST_F(VerbsTest, AnInflightByteBudgetHoldsBatchesBackAndLosesNone) {
  auto tc = configFor(true);
  auto ic = configFor(false);
  ic.connections_per_peer = 2;
  ic.verbs.max_inflight_bytes = 150 * 1024;  // 75 KiB a connection; a batch is 100 KiB
  writeScatteredBatches(tc, ic, 16, 12);
}

// Writes `batches` batches of 20 random blocks with immediates (and one without), then checks
// every block, every immediate exactly once, and that reads still work on the same QPs.
void writeAndCheck(Transport& target, Transport& initiator, std::vector<uint8_t>& tmem,
                   const KvPool& tpool, std::vector<uint8_t>& imem, const KvPool& ipool,
                   uint32_t batches) {
  PeerId peer = *initiator.connect(*target.localBlob());
  std::mt19937 rng(3);
  const uint32_t blocks = static_cast<uint32_t>(tpool.num_blocks);
  std::vector<uint32_t> dst = randomIds(blocks, 20 * batches, rng);
  std::vector<uint32_t> src = randomIds(blocks, 20 * batches, rng);
  for (uint32_t b = 0; b < batches; ++b) {
    std::vector<TransferOp> ops;
    std::span<const uint32_t> s(src.data() + b * 20, 20), d(dst.data() + b * 20, 20);
    ASSERT_TRUE(appendBlockOps(ipool, tpool, s, d, ops).isOk());
    std::optional<uint32_t> imm;
    if (b + 1 < batches) imm = 1000 + b;  // the last batch carries none
    Status posted = initiator.postWrite(peer, ops, imm, b);
    ASSERT_TRUE(posted.isOk()) << posted.toString();
  }
  std::vector<Completion> done = drainCompletions(initiator, batches, 120s);
  ASSERT_EQ(done.size(), batches);
  for (const Completion& c : done) EXPECT_TRUE(c.status.isOk()) << c.status.toString();
  for (size_t i = 0; i < dst.size(); ++i) {
    ASSERT_EQ(blockChecksum(tmem, tpool, dst[i]), blockChecksum(imem, ipool, src[i])) << i;
  }
  std::vector<ImmediateEvent> imms(2 * batches);
  size_t got = 0;
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (got < batches - 1 && std::chrono::steady_clock::now() < give_up) {
    got += target.pollImmediates({imms.data() + got, imms.size() - got}, 100ms);
  }
  got += target.pollImmediates({imms.data() + got, imms.size() - got}, 200ms);
  ASSERT_EQ(got, batches - 1u);
  std::vector<uint32_t> values;
  for (size_t i = 0; i < got; ++i) values.push_back(imms[i].imm);
  std::sort(values.begin(), values.end());
  for (uint32_t b = 0; b + 1 < batches; ++b) EXPECT_EQ(values[b], 1000 + b);
  // A read back through the same (flushing) transport.
  std::vector<TransferOp> back{
      {ipool.region, 0, tpool.region, tpool.offsetOf(dst[0]), tpool.block_bytes}};
  ASSERT_TRUE(initiator.postRead(peer, back, 99).isOk());
  ASSERT_TRUE(waitOne(initiator, 99).isOk());
  EXPECT_EQ(blockChecksum(imem, ipool, 0), blockChecksum(tmem, tpool, dst[0]));
}

// gpu_flush: always runs the GPU flush on host memory, so the rxe pair executes it for real: each
// batch's 1-byte READ and fenced zero-length WRITE_WITH_IMM, in short chains with sparse signals.
TEST_F(VerbsTest, GpuFlushAlwaysDeliversEveryByteAndImmediate) {
  auto tc = configFor(true);
  auto ic = configFor(false);
  ic.verbs.gpu_flush = config::GpuFlush::kAlways;
  ic.chain_length = 4;
  ic.signal_interval = 8;
  ic.connections_per_peer = 1;
  auto target = std::move(makeTransport(tc)).value();
  auto initiator = std::move(makeTransport(ic)).value();
  constexpr uint64_t kBlock = 2048;
  std::vector<uint8_t> tmem(kBlock * 512, 0), imem(kBlock * 512);
  fillRandom(imem, 8);
  KvPool tpool = registerPool(*target, tmem, kBlock);
  KvPool ipool = registerPool(*initiator, imem, kBlock);
  writeAndCheck(*target, *initiator, tmem, tpool, imem, ipool, 12);
}

// A CUDA-kind region on a host without a GPU: gpu_registration peermem is plain ibv_reg_mr, which
// takes the host pointer, so the target advertises "GPU memory" and the initiator's gpu_flush:
// auto flushes it for real. dma-buf cannot work here, and with auto an unregistrable pointer
// names both causes.
TEST_F(VerbsTest, CudaKindRegionsAreAdvertisedFlushedAndNameBothCausesWhenTheyCannotRegister) {
  auto tc = configFor(true);
  tc.verbs.gpu_registration = config::GpuRegistration::kPeermem;
  auto target = std::move(makeTransport(tc)).value();
  auto initiator = std::move(makeTransport(configFor(false))).value();
  constexpr uint64_t kBlock = 4096;
  std::vector<uint8_t> tmem(kBlock * 256, 0), imem(kBlock * 256);
  fillRandom(imem, 9);
  Result<RegionId> gpu = target->registerRegion(tmem.data(), tmem.size(), MemoryKind::cuda(0));
  ASSERT_TRUE(gpu.isOk()) << gpu.status().toString();
  KvPool tpool{*gpu, kBlock, 256};
  KvPool ipool = registerPool(*initiator, imem, kBlock);
  EndpointInfo info = *decodeEndpoint(*target->localBlob());
  ASSERT_TRUE(info.findRegion(*gpu)->gpu_memory);
  EXPECT_EQ(info.findRegion(*gpu)->flush_domain, 1u);
  writeAndCheck(*target, *initiator, tmem, tpool, imem, ipool, 6);

  auto dmabuf_cfg = configFor(true);
  dmabuf_cfg.verbs.gpu_registration = config::GpuRegistration::kDmabuf;
  auto dmabuf_only = std::move(makeTransport(dmabuf_cfg)).value();
  Result<RegionId> refused =
      dmabuf_only->registerRegion(tmem.data(), tmem.size(), MemoryKind::cuda(0));
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("dma-buf: "), std::string::npos)
      << refused.status().toString();

  auto auto_cfg = configFor(true);
  auto both = std::move(makeTransport(auto_cfg)).value();
  // Unmapped address space: neither the CUDA driver nor ibv_reg_mr can take it.
  Result<RegionId> neither =
      both->registerRegion(reinterpret_cast<void*>(0x10000), 1 << 16, MemoryKind::cuda(0));
  ASSERT_FALSE(neither.isOk());
  const std::string& m = neither.status().message();
  EXPECT_NE(m.find("dma-buf: "), std::string::npos) << m;
  EXPECT_NE(m.find("peermem (ibv_reg_mr on the device pointer): "), std::string::npos) << m;
  EXPECT_NE(m.find("GPU 0 region"), std::string::npos) << m;
}

// A restarted peer is a new endpoint: a connect with the old blob is refused by name, even when
// the new process listens on the same address.
TEST_F(VerbsTest, StaleBlobIsRefusedAfterAPeerRestart) {
  auto first = std::move(makeTransport(configFor(true))).value();
  EndpointBlob old_blob = *first->localBlob();
  EndpointInfo info = *decodeEndpoint(old_blob);
  first.reset();
  auto restarted_cfg = configFor(true);
  restarted_cfg.listen_address.assign(info.address.begin(), info.address.end());
  auto restarted = std::move(makeTransport(restarted_cfg)).value();
  auto initiator = std::move(makeTransport(configFor(false))).value();
  Result<PeerId> stale = initiator->connect(old_blob);
  ASSERT_FALSE(stale.isOk());
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition) << stale.status().toString();
  EXPECT_NE(stale.status().message().find("stale endpoint blob"), std::string::npos);
  const uint64_t real_id = decodeEndpoint(*restarted->localBlob())->endpoint_id;
  EXPECT_EQ(stale.status().message().find(std::to_string(real_id)), std::string::npos)
      << stale.status().message();
  EXPECT_TRUE(initiator->connect(*restarted->localBlob()).isOk());
}

}  // namespace
}  // namespace kvferry::rdma
