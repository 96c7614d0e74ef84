// The cuda_ipc transport on a GPU (ctest label gpu; skipped with the reason elsewhere): the
// guarantees the typed suite checks on host-memory backends — data intact, reads, immediates
// exactly once after their data, refused ops never applied, the queue-depth bound, bad blobs —
// with device pools, in one process and across two (a transfer_bench target process, whose
// death then fails the initiator's batches with a typed error).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include "rdma/cuda_ipc/batch_copy.h"
#include "rdma/cuda_ipc/device_memory.h"
#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "tests/rdma/gpu/device_pool.h"
#include "tests/rdma/transport_test_util.h"

extern char** environ;

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;
using cuda_ipc::DeviceMemory;

constexpr uint64_t kBlockBytes = 32 * 1024;
constexpr uint64_t kBlocks = 64;

config::TransportConfig ipcConfig() {
  config::TransportConfig c;
  c.kind = config::TransportKind::kCudaIpc;
  c.listen_address = "127.0.0.1:0";
  c.queue_depth = 8;
  c.op_timeout_ms = 3000;
  c.connect_timeout_ms = 2000;
  c.connect_retries = 0;
  return c;
}

class CudaIpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = cuda_ipc::deviceUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
    Result<std::unique_ptr<Transport>> t = makeTransport(ipcConfig());
    Result<std::unique_ptr<Transport>> i = makeTransport(ipcConfig());
    ASSERT_TRUE(t.isOk() && i.isOk()) << t.status().toString() << " " << i.status().toString();
    target_ = std::move(t).value();
    initiator_ = std::move(i).value();
    target_pool_ = makeDevicePool(*target_, kBlockBytes, kBlocks, 1);
    initiator_pool_ = makeDevicePool(*initiator_, kBlockBytes, kBlocks, 2);
    Result<EndpointBlob> blob = target_->localBlob();
    ASSERT_TRUE(blob.isOk());
    Result<PeerId> peer = initiator_->connect(*blob);
    ASSERT_TRUE(peer.isOk()) << peer.status().toString();
    peer_ = *peer;
  }

  std::unique_ptr<Transport> target_, initiator_;
  DevicePool target_pool_, initiator_pool_;
  PeerId peer_ = 0;
};

TEST_F(CudaIpcTest, ScatteredBlocksArriveIntactWithOneImmediatePerBatchAfterTheData) {
  std::mt19937 rng(7);
  for (uint32_t batch = 0; batch < 20; ++batch) {
    const std::vector<uint32_t> src = randomIds(kBlocks, 1 + batch % 16, rng);
    const std::vector<uint32_t> dst = randomIds(kBlocks, src.size(), rng);
    std::vector<TransferOp> ops;
    ASSERT_TRUE(appendBlockOps(initiator_pool_.pool, target_pool_.pool, src, dst, ops).isOk());
    ASSERT_TRUE(initiator_->postWrite(peer_, ops, batch, batch).isOk());
    ASSERT_TRUE(waitOne(*initiator_, batch).isOk()) << "batch " << batch;
    // The immediate comes exactly once, and by then every byte is in the target's pool.
    std::vector<ImmediateEvent> events(4);
    ASSERT_EQ(target_->pollImmediates(events, 2s), 1u);
    EXPECT_EQ(events[0].imm, batch);
    const std::vector<uint8_t> landed = deviceBytes(target_pool_);
    for (size_t i = 0; i < src.size(); ++i) {
      std::memcpy(target_pool_.host.data() + dst[i] * kBlockBytes,
                  initiator_pool_.host.data() + src[i] * kBlockBytes, kBlockBytes);
    }
    ASSERT_EQ(landed, target_pool_.host) << "batch " << batch;
  }
  std::vector<ImmediateEvent> extra(4);
  EXPECT_EQ(target_->pollImmediates(extra, 50ms), 0u);
}

// A uniform batch (one length, one region each side, 16-byte units: a layer's blocks) of up to
// kMaxUniformOps ops travels as 8-byte ops inside the copy kernel's launch; any other batch of
// 8 MiB or more passes CopyOps inside the launch (up to kMaxInlineOps of them), a smaller or
// longer one leaves them in pinned memory. Every way, and at the edges, every piece lands where
// a host copy of the same bytes puts it.
TEST_F(CudaIpcTest, BatchesOfEveryLengthAndShapeLandWhicheverWayTheirOpsTravel) {
  constexpr uint64_t kPiece = 8 * 1024;
  constexpr uint64_t kPieces = 4096;  // 32 MiB pools
  // Transports of its own: the fixture's have connected before these pools existed.
  std::unique_ptr<Transport> target = std::move(makeTransport(ipcConfig())).value();
  std::unique_ptr<Transport> initiator = std::move(makeTransport(ipcConfig())).value();
  DevicePool from = makeDevicePool(*initiator, kPiece, kPieces, 3);
  DevicePool to = makeDevicePool(*target, kPiece, kPieces, 0);
  Result<PeerId> peer = initiator->connect(*target->localBlob());
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();
  std::mt19937 rng(11);
  uint64_t cookie = 100;
  for (const bool uniform : {true, false}) {
    for (uint64_t count :
         {uint64_t{1}, uint64_t{11}, uint64_t{1023}, uint64_t{1024},
          uint64_t{cuda_ipc::kMaxInlineOps}, uint64_t{cuda_ipc::kMaxInlineOps} + 1,
          uint64_t{cuda_ipc::kMaxUniformOps}, uint64_t{cuda_ipc::kMaxUniformOps} + 1, kPieces}) {
      std::vector<uint64_t> order(kPieces);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<TransferOp> ops;
      for (uint64_t i = 0; i < count; ++i) {
        const uint64_t src = order[i];
        const uint64_t dst = order[(i + 1) % kPieces];
        // Not uniform: the first op starts 8 bytes into its piece (and is 8 bytes shorter).
        const uint64_t skip = !uniform && i == 0 ? 8 : 0;
        ops.push_back({from.pool.region, src * kPiece + skip, to.pool.region, dst * kPiece + skip,
                       kPiece - skip});
        std::memcpy(to.host.data() + dst * kPiece + skip, from.host.data() + src * kPiece + skip,
                    kPiece - skip);
      }
      const std::string what = std::to_string(count) + (uniform ? " uniform" : " mixed") + " ops";
      ASSERT_TRUE(initiator->postWrite(*peer, ops, 0, cookie).isOk()) << what;
      ASSERT_TRUE(waitOne(*initiator, cookie).isOk()) << what;
      ASSERT_EQ(deviceBytes(to), to.host) << what;
      std::vector<ImmediateEvent> events(4);
      ASSERT_EQ(target->pollImmediates(events, 2s), 1u) << what;
      ++cookie;
    }
  }
}

TEST_F(CudaIpcTest, ReadsPullRemoteBlocks) {
  const std::vector<uint32_t> remote = {3, 9, 11, 40};  // no two adjacent: one op per block
  const std::vector<uint32_t> local = {0, 20, 22, 63};
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(initiator_pool_.pool, target_pool_.pool, local, remote, ops).isOk());
  // Uniform (a layer's blocks), then not (the last op half a block, from its middle).
  for (const uint64_t cookie : {5, 6}) {
    if (cookie == 6) {
      ops.back().remote_offset += kBlockBytes / 2;
      ops.back().length = kBlockBytes / 2;
    }
    const std::vector<uint8_t> zeros(initiator_pool_.host.size(), 0);  // nothing left from before
    ASSERT_TRUE(initiator_pool_.memory.upload(zeros.data(), zeros.size()).isOk());
    ASSERT_TRUE(initiator_->postRead(peer_, ops, cookie).isOk());
    ASSERT_TRUE(waitOne(*initiator_, cookie).isOk());
    const std::vector<uint8_t> got = deviceBytes(initiator_pool_);
    for (size_t i = 0; i < ops.size(); ++i) {
      EXPECT_EQ(0, std::memcmp(got.data() + ops[i].local_offset,
                               target_pool_.host.data() + ops[i].remote_offset, ops[i].length))
          << "op " << i << " of batch " << cookie;
    }
  }
}

TEST_F(CudaIpcTest, OutOfRangeOpsAreRefusedAndNeverApplied) {
  const TransferOp past_remote{initiator_pool_.pool.region, 0, target_pool_.pool.region,
                               kBlocks * kBlockBytes - 16, 32};
  const TransferOp past_local{initiator_pool_.pool.region, kBlocks * kBlockBytes,
                              target_pool_.pool.region, 0, 16};
  const TransferOp fine{initiator_pool_.pool.region, 0, target_pool_.pool.region, 0, 16};
  for (const TransferOp& bad : {past_remote, past_local}) {
    const TransferOp batch[] = {fine, bad};
    EXPECT_FALSE(initiator_->postWrite(peer_, batch, 1, 1).isOk());
  }
  EXPECT_EQ(deviceBytes(target_pool_), target_pool_.host);
}

TEST_F(CudaIpcTest, QueueDepthBoundsOutstandingBatches) {
  const TransferOp op{initiator_pool_.pool.region, 0, target_pool_.pool.region, 0, kBlockBytes};
  uint32_t accepted = 0;
  Status refused;
  for (uint32_t i = 0; i < 16; ++i) {
    const Status s = initiator_->postWrite(peer_, {&op, 1}, std::nullopt, i);
    if (!s.isOk()) {
      refused = s;
      break;
    }
    ++accepted;
  }
  EXPECT_EQ(accepted, ipcConfig().queue_depth);
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(drainCompletions(*initiator_, accepted, 5s).size(), accepted);
}

TEST_F(CudaIpcTest, HostMemoryAndForeignBlobsAreRefused) {
  std::vector<uint8_t> host(4096);
  EXPECT_EQ(target_->registerRegion(host.data(), host.size(), MemoryKind::host()).status().code(),
            StatusCode::kInvalidArgument);
  config::TransportConfig tcp;
  tcp.kind = config::TransportKind::kTcp;
  Result<std::unique_ptr<Transport>> other = makeTransport(tcp);
  ASSERT_TRUE(other.isOk());
  Result<EndpointBlob> tcp_blob = (*other)->localBlob();
  ASSERT_TRUE(tcp_blob.isOk());
  EXPECT_EQ(initiator_->connect(*tcp_blob).status().code(), StatusCode::kInvalidArgument);
  EndpointBlob truncated = *target_->localBlob();
  truncated.resize(truncated.size() / 2);
  EXPECT_EQ(initiator_->connect(truncated).status().code(), StatusCode::kInvalidArgument);
}

// Across two processes: a transfer_bench target process holds the pool; the test writes into it
// and reads back; then the process is killed and the next batches fail with a typed error.
TEST(CudaIpcProcessTest, TwoProcessesMoveBlocksAndATargetsDeathFailsBatches) {
  const std::string why = cuda_ipc::deviceUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string dir = ::testing::TempDir() + "kvferry_cuda_ipc_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string blob_path = dir + "/blob";
  std::vector<std::string> args{KVFERRY_TRANSFER_BENCH,
                                "--role",
                                "target",
                                "--transport",
                                "cuda_ipc",
                                "--blob-file",
                                blob_path,
                                "--pool-bytes",
                                std::to_string(kBlockBytes * kBlocks)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (!std::filesystem::exists(blob_path) && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(std::filesystem::exists(blob_path));
  std::ifstream in(blob_path);
  std::string hex;
  in >> hex;
  EndpointBlob blob(hex.size() / 2);
  for (size_t i = 0; i < blob.size(); ++i) {
    blob[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  Result<EndpointInfo> info = decodeEndpoint(blob);
  ASSERT_TRUE(info.isOk());
  const KvPool remote{info->regions[0].id, kBlockBytes, kBlocks};

  Result<std::unique_ptr<Transport>> made = makeTransport(ipcConfig());
  ASSERT_TRUE(made.isOk()) << made.status().toString();
  Transport& initiator = **made;
  DevicePool source = makeDevicePool(initiator, kBlockBytes, kBlocks, 11);
  DevicePool back = makeDevicePool(initiator, kBlockBytes, kBlocks, 12);
  Result<PeerId> peer = initiator.connect(blob);
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();
  const std::vector<uint32_t> src = {1, 2, 3, 30, 50};
  const std::vector<uint32_t> dst = {7, 8, 60, 0, 33};
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(source.pool, remote, src, dst, ops).isOk());
  ASSERT_TRUE(initiator.postWrite(*peer, ops, 42, 1).isOk());
  ASSERT_TRUE(waitOne(initiator, 1).isOk());
  ops.clear();
  ASSERT_TRUE(appendBlockOps(back.pool, remote, src, dst, ops).isOk());
  ASSERT_TRUE(initiator.postRead(*peer, ops, 2).isOk());
  ASSERT_TRUE(waitOne(initiator, 2).isOk());
  const std::vector<uint8_t> got = deviceBytes(back);
  for (uint32_t b : src) {
    EXPECT_EQ(0, std::memcmp(got.data() + b * kBlockBytes, source.host.data() + b * kBlockBytes,
                             kBlockBytes))
        << "block " << b << " did not make the round trip";
  }

  // The target dies without a goodbye: the batches after it fail (UNAVAILABLE, or
  // DEADLINE_EXCEEDED after op_timeout_ms), never succeed, and disconnect leaves nothing mapped.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int wait_status = 0;
  ::waitpid(pid, &wait_status, 0);
  std::this_thread::sleep_for(200ms);
  uint32_t failed = 0;
  for (uint64_t cookie = 10; cookie < 13; ++cookie) {
    const Status posted = initiator.postWrite(*peer, ops, 1, cookie);
    const Status result = posted.isOk() ? waitOne(initiator, cookie) : posted;
    EXPECT_FALSE(result.isOk()) << "batch " << cookie << " succeeded into a dead process";
    if (!result.isOk()) {
      ++failed;
      EXPECT_TRUE(result.code() == StatusCode::kUnavailable ||
                  result.code() == StatusCode::kDeadlineExceeded ||
                  result.code() == StatusCode::kCancelled)
          << result.toString();
    }
  }
  EXPECT_EQ(failed, 3u);
  EXPECT_TRUE(initiator.disconnect(*peer).isOk());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvferry::rdma
