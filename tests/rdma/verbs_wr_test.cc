// The work requests a verbs batch puts on the wire (rdma/verbs/wr_builder.h), built without a
// device: the GPU flush's READs and fenced immediate, and the unflushed shapes around it.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rdma/batch_check.h"
#include "rdma/verbs/wr_builder.h"

namespace kvferry::rdma::verbs_backend {
namespace {

using config::GpuFlush;

constexpr uint64_t kBatchId = 0x500000007ull;
constexpr uint64_t kScratch = 0xABC000;
constexpr uint32_t kScratchKey = 99;

class WrBuilderTest : public ::testing::Test {
 protected:
  WrBuilderTest() : local_mem_(1 << 16) {
    local_ = *table_.add(local_mem_.data(), local_mem_.size(), MemoryKind::host(), {11, 12});
    remote_.backend = "verbs";
    remote_.regions = {
        {1, 1 << 20, 0x10000000, 21},            // host memory
        {2, 1 << 20, 0x20000000, 22, true, 1},   // GPU 0
        {3, 1 << 20, 0x30000000, 23, true, 2},   // GPU 1
        {4, 1 << 20, 0x40000000, 24, true, 1}};  // GPU 0 again: the same flush domain
  }

  // Builds a batch of 1 KiB ops, op i into (region, i KiB).
  const std::vector<ibv_send_wr>& build(const std::vector<RegionId>& regions, GpuFlush flush,
                                        std::optional<uint32_t> imm, bool is_read = false,
                                        uint32_t signal_interval = 1024) {
    ops_.clear();
    for (size_t i = 0; i < regions.size(); ++i) {
      ops_.push_back({local_, i * 1024, regions[i], i * 1024, 1024});
    }
    Status ok = checkBatch(ops_, 4096, table_, remote_, is_read ? "read" : "write", batch_.local);
    EXPECT_TRUE(ok.isOk()) << ok.toString();
    WrParams p;
    p.batch_id = kBatchId;
    p.is_read = is_read;
    p.imm = imm;
    p.inline_limit = 64;
    p.signal_interval = signal_interval;
    p.flush = flush;
    p.flush_addr = kScratch;
    p.flush_lkey = kScratchKey;
    buildWorkRequests(ops_, remote_, p, batch_);
    return batch_.wrs;
  }

  static std::string shape(const std::vector<ibv_send_wr>& wrs) {
    std::string s;
    for (const ibv_send_wr& wr : wrs) {
      if (!s.empty()) s += ' ';
      s += wr.opcode == IBV_WR_RDMA_WRITE            ? "W"
           : wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ? "IMM"
           : wr.opcode == IBV_WR_RDMA_READ           ? "R"
                                                     : "?";
      if (wr.send_flags & IBV_SEND_FENCE) s += "/fence";
    }
    return s;
  }

  RegionTable table_;
  std::vector<uint8_t> local_mem_;
  RegionId local_ = 0;
  EndpointInfo remote_;
  std::vector<TransferOp> ops_;
  VerbsBatch batch_;
};

TEST_F(WrBuilderTest, WritesIntoGpuMemoryEndWithOneReadPerGpuThenAFencedImmediate) {
  const auto& wrs = build({2, 3, 4, 1}, GpuFlush::kAuto, 0x01020304u);
  ASSERT_EQ(shape(wrs), "W W W W R R IMM/fence");
  // Domain 1 (regions 2 and 4: GPU 0), then domain 2 (region 3: GPU 1); the host region needs
  // none under auto. Each READ takes 1 byte the batch wrote into that GPU: its last op there.
  EXPECT_EQ(wrs[4].wr.rdma.remote_addr, 0x40000000u + 2 * 1024);
  EXPECT_EQ(wrs[4].wr.rdma.rkey, 24u);
  EXPECT_EQ(wrs[5].wr.rdma.remote_addr, 0x30000000u + 1 * 1024);
  EXPECT_EQ(wrs[5].wr.rdma.rkey, 23u);
  for (int i : {4, 5}) {
    ASSERT_EQ(wrs[i].num_sge, 1);
    EXPECT_EQ(wrs[i].sg_list->addr, kScratch);
    EXPECT_EQ(wrs[i].sg_list->length, 1u);
    EXPECT_EQ(wrs[i].sg_list->lkey, kScratchKey);
    EXPECT_EQ(wrs[i].send_flags & IBV_SEND_INLINE, 0u);
  }
  const ibv_send_wr& imm = wrs.back();
  EXPECT_EQ(imm.num_sge, 0) << "the notification carries no payload";
  EXPECT_EQ(ntohl(imm.imm_data), 0x01020304u);
  EXPECT_TRUE(imm.send_flags & IBV_SEND_SIGNALED);
  EXPECT_EQ(imm.wr_id, kBatchId);
  for (size_t i = 0; i + 1 < wrs.size(); ++i) {
    EXPECT_EQ(wrs[i].wr_id, kBatchId | kIntermediateSignal) << i;
    EXPECT_FALSE(wrs[i].send_flags & IBV_SEND_SIGNALED) << i;
    EXPECT_FALSE(wrs[i].send_flags & IBV_SEND_FENCE) << i;
  }
  // The payload WRs are unchanged by the flush: local address, length and key, remote address.
  EXPECT_EQ(wrs[1].sg_list->addr, reinterpret_cast<uint64_t>(local_mem_.data()) + 1024);
  EXPECT_EQ(wrs[1].sg_list->length, 1024u);
  EXPECT_EQ(wrs[1].sg_list->lkey, 11u);
  EXPECT_EQ(wrs[1].wr.rdma.remote_addr, 0x30000000u + 1024);
}

TEST_F(WrBuilderTest, HostMemoryUnderAutoKeepsTheImmediateOnTheLastWrite) {
  const auto& wrs = build({1, 1}, GpuFlush::kAuto, 7u);
  ASSERT_EQ(shape(wrs), "W IMM");
  EXPECT_EQ(wrs[1].num_sge, 1);
  EXPECT_EQ(ntohl(wrs[1].imm_data), 7u);
  EXPECT_EQ(wrs[1].wr_id, kBatchId);
  EXPECT_EQ(build({1, 1}, GpuFlush::kAuto, std::nullopt).back().opcode, IBV_WR_RDMA_WRITE);
}

TEST_F(WrBuilderTest, AlwaysFlushesHostMemoryToo) {
  const auto& wrs = build({1, 1, 1}, GpuFlush::kAlways, 5u);
  ASSERT_EQ(shape(wrs), "W W W R IMM/fence");
  EXPECT_EQ(wrs[3].wr.rdma.remote_addr, 0x10000000u + 2 * 1024);
  EXPECT_EQ(shape(build({1, 2, 3}, GpuFlush::kAlways, 5u)), "W W W R R R IMM/fence");
}

TEST_F(WrBuilderTest, NeverFlushesEvenGpuMemory) {
  EXPECT_EQ(shape(build({2, 3}, GpuFlush::kNever, 5u)), "W IMM");
}

TEST_F(WrBuilderTest, WithoutAnImmediateTheLastReadEndsTheBatch) {
  // The batch's completion then also means "in GPU memory" to the initiator.
  const auto& wrs = build({2, 2}, GpuFlush::kAuto, std::nullopt);
  ASSERT_EQ(shape(wrs), "W W R");
  EXPECT_EQ(wrs.back().wr_id, kBatchId);
  EXPECT_TRUE(wrs.back().send_flags & IBV_SEND_SIGNALED);
}

TEST_F(WrBuilderTest, ReadBatchesAreNeverFlushed) {
  const auto& wrs = build({2, 3}, GpuFlush::kAlways, std::nullopt, /*is_read=*/true);
  EXPECT_EQ(shape(wrs), "R R");
  EXPECT_EQ(wrs[0].sg_list->length, 1024u);
}

TEST_F(WrBuilderTest, PeriodicSignalsCountTheFlushReads) {
  const auto& wrs = build({2, 3, 2, 3}, GpuFlush::kAuto, 1u, false, /*signal_interval=*/3);
  ASSERT_EQ(shape(wrs), "W W W W R R IMM/fence");
  std::string signaled;
  for (const ibv_send_wr& wr : wrs) signaled += (wr.send_flags & IBV_SEND_SIGNALED) ? '1' : '0';
  EXPECT_EQ(signaled, "0010011");
}

TEST_F(WrBuilderTest, RebuildingReusesTheBatchWithoutStaleFlushes) {
  build({2, 3}, GpuFlush::kAuto, 1u);
  const auto& wrs = build({1}, GpuFlush::kAuto, 2u);
  EXPECT_EQ(shape(wrs), "IMM");
  EXPECT_EQ(wrs[0].num_sge, 1);
  EXPECT_EQ(wrs[0].sg_list, &batch_.sges[0]);
  EXPECT_EQ(batch_.bytes, 1024u);  // this batch's payload, not the two before
}

// What a QP lets into flight: send-queue slots always, payload bytes when a budget is set; a
// batch above the byte budget goes alone rather than never.
TEST(SendBudgetTest, BoundsWorkRequestsAndBytesButNeverStarvesALargeBatch) {
  const SendBudget unlimited{256, 0};
  EXPECT_TRUE(unlimited.fits(200, uint64_t{1} << 40, 56, uint64_t{1} << 30));
  EXPECT_FALSE(unlimited.fits(200, 0, 57, 1));
  const SendBudget bytes{256, 1 << 20};
  EXPECT_TRUE(bytes.fits(10, 512 << 10, 10, 512 << 10));
  EXPECT_FALSE(bytes.fits(10, 512 << 10, 10, (512 << 10) + 1));
  EXPECT_TRUE(bytes.fits(0, 0, 10, 64 << 20));  // larger than the budget: alone
  EXPECT_FALSE(bytes.fits(1, 1, 10, 64 << 20));
  EXPECT_FALSE(bytes.fits(250, 0, 10, 1));  // the send queue still bounds it
}

}  // namespace
}  // namespace kvferry::rdma::verbs_backend
