// The tcp transport from GPU memory (ctest tcp_cuda, label gpu; skipped with the reason without a
// device): device pools on both ends of a loopback tcp pair, staged through pinned chunks. The
// typed suite's guarantees with real device memory and the real CUDA copier: scattered blocks
// intact, one immediate per batch and only once its bytes are in device memory, reads into
// device memory, device ↔ host both ways, batches many times the ring, a typed failure when the
// peer dies, nothing left behind at teardown.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>

#include "rdma/cuda_ipc/device_memory.h"
#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "tests/rdma/gpu/device_pool.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;
using cuda_ipc::DeviceMemory;

constexpr uint64_t kBlockBytes = 32 * 1024 + 16;  // not a multiple of the chunk
constexpr uint64_t kBlocks = 96;

config::TransportConfig tcpConfig() {
  config::TransportConfig c;
  c.kind = config::TransportKind::kTcp;
  c.listen_address = "127.0.0.1:0";
  c.queue_depth = 16;
  c.op_timeout_ms = 5000;
  c.connect_timeout_ms = 2000;
  c.connect_retries = 0;
  c.gpu_staging_chunk_bytes = 256 * 1024;  // a batch of 96 blocks is ~6 rings
  c.gpu_staging_chunks = 2;
  return c;
}

void copyBlocks(const std::vector<uint8_t>& from, std::vector<uint8_t>& to,
                const std::vector<uint32_t>& src, const std::vector<uint32_t>& dst) {
  for (size_t i = 0; i < src.size(); ++i) {
    std::memcpy(to.data() + dst[i] * kBlockBytes, from.data() + src[i] * kBlockBytes, kBlockBytes);
  }
}

class TcpCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = cuda_ipc::deviceUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
    Result<std::unique_ptr<Transport>> t = makeTransport(tcpConfig());
    Result<std::unique_ptr<Transport>> i = makeTransport(tcpConfig());
    ASSERT_TRUE(t.isOk() && i.isOk()) << t.status().toString() << " " << i.status().toString();
    target_ = std::move(t).value();
    initiator_ = std::move(i).value();
    ASSERT_TRUE(initiator_->capabilities().cuda_memory);
    target_pool_ = makeDevicePool(*target_, kBlockBytes, kBlocks, 1);
    initiator_pool_ = makeDevicePool(*initiator_, kBlockBytes, kBlocks, 2);
    Result<PeerId> peer = initiator_->connect(*target_->localBlob());
    ASSERT_TRUE(peer.isOk()) << peer.status().toString();
    peer_ = *peer;
  }

  std::unique_ptr<Transport> target_, initiator_;
  DevicePool target_pool_, initiator_pool_;
  PeerId peer_ = 0;
};

TEST_F(TcpCudaTest, ScatteredDeviceBlocksArriveIntactWithTheImmediateAfterTheirBytes) {
  std::mt19937 rng(7);
  for (uint32_t batch = 0; batch < 24; ++batch) {
    // From one block up to the whole pool (many times the ring) in one batch.
    const size_t n = batch == 23 ? kBlocks : 1 + (batch * 5) % 40;
    const std::vector<uint32_t> src = randomIds(kBlocks, n, rng);
    const std::vector<uint32_t> dst = randomIds(kBlocks, n, rng);
    std::vector<TransferOp> ops;
    ASSERT_TRUE(appendBlockOps(initiator_pool_.pool, target_pool_.pool, src, dst, ops).isOk());
    ASSERT_TRUE(initiator_->postWrite(peer_, ops, batch, batch).isOk());
    // The immediate first: when it is seen, the batch's bytes must already be in device memory.
    ImmediateEvent ev;
    ASSERT_EQ(target_->pollImmediates({&ev, 1}, 10s), 1u) << "batch " << batch;
    EXPECT_EQ(ev.imm, batch);
    copyBlocks(initiator_pool_.host, target_pool_.host, src, dst);
    ASSERT_EQ(deviceBytes(target_pool_), target_pool_.host) << "batch " << batch;
    ASSERT_TRUE(waitOne(*initiator_, batch).isOk()) << "batch " << batch;
  }
  ImmediateEvent extra;
  EXPECT_EQ(target_->pollImmediates({&extra, 1}, 50ms), 0u);
}

TEST_F(TcpCudaTest, ReadsPullRemoteDeviceBlocksIntoDeviceMemory) {
  std::mt19937 rng(3);
  const std::vector<uint32_t> remote = randomIds(kBlocks, 50, rng);
  const std::vector<uint32_t> local = randomIds(kBlocks, 50, rng);
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(initiator_pool_.pool, target_pool_.pool, local, remote, ops).isOk());
  ASSERT_TRUE(initiator_->postRead(peer_, ops, 9).isOk());
  ASSERT_TRUE(waitOne(*initiator_, 9).isOk());
  copyBlocks(target_pool_.host, initiator_pool_.host, remote, local);
  EXPECT_EQ(deviceBytes(initiator_pool_), initiator_pool_.host);
}

TEST_F(TcpCudaTest, DeviceToHostAndHostToDevice) {
  // A host pool on the target: device → host.
  std::vector<uint8_t> host_pool(kBlockBytes * kBlocks, 0);
  KvPool host = registerPool(*target_, host_pool, kBlockBytes);
  Result<PeerId> peer = initiator_->connect(*target_->localBlob());  // a blob listing it
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();
  std::vector<uint32_t> ids(kBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(initiator_pool_.pool, host, ids, ids, ops).isOk());
  ASSERT_TRUE(initiator_->postWrite(*peer, ops, 1u, 1).isOk());
  ASSERT_TRUE(waitOne(*initiator_, 1).isOk());
  EXPECT_EQ(host_pool, initiator_pool_.host);
  // A host pool on the initiator written into the target's device pool: host → device.
  std::vector<uint8_t> source(kBlockBytes * kBlocks);
  fillRandom(source, 5);
  KvPool source_pool = registerPool(*initiator_, source, kBlockBytes);
  ops.clear();
  ASSERT_TRUE(appendBlockOps(source_pool, target_pool_.pool, ids, ids, ops).isOk());
  ASSERT_TRUE(initiator_->postWrite(*peer, ops, 2u, 2).isOk());
  ASSERT_TRUE(waitOne(*initiator_, 2).isOk());
  EXPECT_EQ(deviceBytes(target_pool_), source);
}

TEST_F(TcpCudaTest, PeerDeathFailsPendingBatchesWithATypedError) {
  std::vector<uint32_t> ids(kBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(initiator_pool_.pool, target_pool_.pool, ids, ids, ops).isOk());
  size_t posted = 0;
  for (uint64_t i = 0; i < 8; ++i) posted += initiator_->postWrite(peer_, ops, 1u, i).isOk();
  target_.reset();
  std::vector<Completion> done = drainCompletions(*initiator_, posted, 15s);
  EXPECT_EQ(done.size(), posted) << "a pending batch never completed";
  for (const Completion& c : done) {
    if (c.status.isOk()) continue;
    EXPECT_TRUE(c.status.code() == StatusCode::kUnavailable ||
                c.status.code() == StatusCode::kDeadlineExceeded)
        << c.status.toString();
  }
}

TEST_F(TcpCudaTest, TeardownLeavesNoThreadsOrSockets) {
  initiator_.reset();
  target_.reset();
  // One round first: the CUDA runtime keeps threads of its own (its host-callback thread) once
  // used. From then on, every round must give back all it took: threads, sockets, and (RAII,
  // not observable here) pinned chunks, streams and registrations.
  const std::vector<uint32_t> ids{1, 2, 3};
  auto round = [&] {
    auto t = makeTransport(tcpConfig());
    auto i = makeTransport(tcpConfig());
    ASSERT_TRUE(t.isOk() && i.isOk());
    DevicePool tp = makeDevicePool(**t, kBlockBytes, kBlocks, 3);
    DevicePool ip = makeDevicePool(**i, kBlockBytes, kBlocks, 4);
    Result<PeerId> peer = (*i)->connect(*(*t)->localBlob());
    ASSERT_TRUE(peer.isOk());
    std::vector<TransferOp> ops;
    ASSERT_TRUE(appendBlockOps(ip.pool, tp.pool, ids, ids, ops).isOk());
    ASSERT_TRUE((*i)->postWrite(*peer, ops, 1u, 1).isOk());
    ASSERT_TRUE(waitOne(**i, 1).isOk());
    ASSERT_TRUE((*i)->postRead(*peer, ops, 2).isOk());
    ASSERT_TRUE(waitOne(**i, 2).isOk());
  };
  round();
  const size_t threads = countEntries("/proc/self/task");
  const size_t fds = countEntries("/proc/self/fd");
  for (int r = 0; r < 3; ++r) round();
  EXPECT_EQ(countEntries("/proc/self/task"), threads);
  EXPECT_EQ(countEntries("/proc/self/fd"), fds);
}

}  // namespace
}  // namespace kvferry::rdma
