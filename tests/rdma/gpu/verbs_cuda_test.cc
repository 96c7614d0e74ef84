// verbs_cuda_memory (ctest labels gpu;rxe): the verbs transport moving KV blocks between GPU
// memory over a real RDMA NIC — GPUDirect registration (dma-buf or nvidia-peermem, whichever
// works), the flush before each immediate, reads back out of GPU memory. Needs a GPU and an
// RDMA device; without either, main() says which is missing and exits 77 (ctest: skipped).
//
// Devices: KVFERRY_VERBS_TARGET_DEV / KVFERRY_VERBS_INITIATOR_DEV (+ _IP for the handshake),
// else both ends on the first RDMA device, handshake on 127.0.0.1. GPUs: the target uses GPU 0,
// the initiator KVFERRY_TEST_INITIATOR_GPU (default 0).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>

#include "rdma/cuda_ipc/device_memory.h"
#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "tests/rdma/gpu/device_pool.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;
using cuda_ipc::DeviceMemory;

constexpr uint64_t kBlockBytes = 16 * 1024;
constexpr uint64_t kBlocks = 128;

// The first RDMA device of this host ("" when none).
std::string firstRdmaDevice() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/class/infiniband", ec)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names.empty() ? "" : names.front();
}

config::TransportConfig verbsConfig(bool target, config::GpuRegistration mode) {
  config::TransportConfig c;
  c.kind = config::TransportKind::kVerbs;
  const char* dev_var = target ? "KVFERRY_VERBS_TARGET_DEV" : "KVFERRY_VERBS_INITIATOR_DEV";
  const char* ip_var = target ? "KVFERRY_VERBS_TARGET_IP" : "KVFERRY_VERBS_INITIATOR_IP";
  c.verbs.devices = {envOr(dev_var, firstRdmaDevice().c_str())};
  c.listen_address = envOr(ip_var, "127.0.0.1") + ":0";
  c.verbs.gpu_registration = mode;
  c.verbs.gpu_flush = config::GpuFlush::kAuto;
  c.connect_retries = 0;
  c.op_timeout_ms = 5000;
  return c;
}

int initiatorGpu() { return std::atoi(envOr("KVFERRY_TEST_INITIATOR_GPU", "0").c_str()); }

// Which registration paths work here, printed for the log; auto must find one.
TEST(VerbsCudaMemory, RegistrationPathsAreReportedAndAutoFindsOne) {
  int working = 0;
  for (config::GpuRegistration mode :
       {config::GpuRegistration::kDmabuf, config::GpuRegistration::kPeermem}) {
    auto t = std::move(makeTransport(verbsConfig(true, mode))).value();
    Result<DeviceMemory> mem = DeviceMemory::allocate(0, 1 << 20);
    ASSERT_TRUE(mem.isOk()) << mem.status().toString();
    Result<RegionId> id = t->registerRegion(mem->data(), mem->bytes(), MemoryKind::cuda(0));
    std::printf("gpu_registration %s: %s\n", std::string(config::gpuRegistrationName(mode)).c_str(),
                id.isOk() ? "works" : id.status().toString().c_str());
    working += id.isOk() ? 1 : 0;
  }
  EXPECT_GT(working, 0) << "neither dma-buf nor peermem registers GPU memory on this host";
  auto t = std::move(makeTransport(verbsConfig(true, config::GpuRegistration::kAuto))).value();
  EXPECT_TRUE(t->capabilities().cuda_memory);
  Result<DeviceMemory> mem = DeviceMemory::allocate(0, 1 << 20);
  ASSERT_TRUE(mem.isOk()) << mem.status().toString();
  Result<RegionId> id = t->registerRegion(mem->data(), mem->bytes(), MemoryKind::cuda(0));
  ASSERT_TRUE(id.isOk()) << id.status().toString();
  EXPECT_TRUE(decodeEndpoint(*t->localBlob())->findRegion(*id)->gpu_memory);
}

// GPU → GPU writes with immediates (flushed: the target is GPU memory), every byte checked on
// the device after its immediate; then reads out of the target's GPU memory.
TEST(VerbsCudaMemory, GpuToGpuWritesLandBeforeTheirImmediateAndReadBack) {
  auto target = std::move(makeTransport(verbsConfig(true, config::GpuRegistration::kAuto))).value();
  auto initiator =
      std::move(makeTransport(verbsConfig(false, config::GpuRegistration::kAuto))).value();
  DevicePool tpool = makeDevicePool(*target, kBlockBytes, kBlocks, 0, 0);
  DevicePool ipool = makeDevicePool(*initiator, kBlockBytes, kBlocks, 17, initiatorGpu());
  PeerId peer = *initiator->connect(*target->localBlob());
  std::mt19937 rng(5);
  constexpr uint32_t kBatches = 8, kPerBatch = 16;
  std::vector<uint32_t> dst = randomIds(kBlocks, kBatches * kPerBatch, rng);
  std::vector<uint32_t> src = randomIds(kBlocks, kBatches * kPerBatch, rng);
  for (uint32_t b = 0; b < kBatches; ++b) {
    std::vector<TransferOp> ops;
    std::span<const uint32_t> s(src.data() + b * kPerBatch, kPerBatch);
    std::span<const uint32_t> d(dst.data() + b * kPerBatch, kPerBatch);
    ASSERT_TRUE(appendBlockOps(ipool.pool, tpool.pool, s, d, ops).isOk());
    ASSERT_TRUE(initiator->postWrite(peer, ops, 500 + b, b).isOk());
    // Each immediate promises its batch's bytes are in GPU memory: check them right then.
    ImmediateEvent ev;
    ASSERT_EQ(target->pollImmediates({&ev, 1}, std::chrono::microseconds(10s)), 1u);
    EXPECT_EQ(ev.imm, 500 + b);
    ASSERT_TRUE(waitOne(*initiator, b).isOk());
    const std::vector<uint8_t> now = deviceBytes(tpool);
    for (uint32_t i = 0; i < kPerBatch; ++i) {
      const uint64_t from = ipool.pool.offsetOf(s[i]), to = tpool.pool.offsetOf(d[i]);
      ASSERT_TRUE(
          std::equal(now.begin() + to, now.begin() + to + kBlockBytes, ipool.host.begin() + from))
          << "batch " << b << " block " << d[i];
    }
  }
  // Read target blocks back into a zeroed GPU pool of the initiator, and compare on the host.
  DevicePool landing = makeDevicePool(*initiator, kBlockBytes, kBlocks, 0, initiatorGpu());
  std::vector<TransferOp> reads;
  std::span<const uint32_t> got(dst.data(), 4), into(src.data(), 4);
  ASSERT_TRUE(appendBlockOps(landing.pool, tpool.pool, into, got, reads).isOk());
  ASSERT_TRUE(initiator->postRead(peer, reads, 99).isOk());
  ASSERT_TRUE(waitOne(*initiator, 99).isOk());
  const std::vector<uint8_t> back = deviceBytes(landing);
  for (uint32_t i = 0; i < 4; ++i) {
    const uint64_t at = landing.pool.offsetOf(src[i]);
    EXPECT_TRUE(
        std::equal(back.begin() + at, back.begin() + at + kBlockBytes, ipool.host.begin() + at))
        << "read of block " << dst[i];
  }
}

// Host → GPU: the initiator's pool in host memory, the target's on the GPU (still flushed).
TEST(VerbsCudaMemory, HostToGpuWritesAreFlushedToo) {
  auto target = std::move(makeTransport(verbsConfig(true, config::GpuRegistration::kAuto))).value();
  auto initiator =
      std::move(makeTransport(verbsConfig(false, config::GpuRegistration::kAuto))).value();
  DevicePool tpool = makeDevicePool(*target, kBlockBytes, kBlocks, 0, 0);
  std::vector<uint8_t> imem(kBlockBytes * kBlocks);
  fillRandom(imem, 23);
  KvPool ipool = registerPool(*initiator, imem, kBlockBytes);
  PeerId peer = *initiator->connect(*target->localBlob());
  std::vector<TransferOp> ops;
  std::vector<uint32_t> ids{3, 4, 5, 40, 90};
  ASSERT_TRUE(appendBlockOps(ipool, tpool.pool, ids, ids, ops).isOk());
  ASSERT_TRUE(initiator->postWrite(peer, ops, 7u, 1).isOk());
  ImmediateEvent ev;
  ASSERT_EQ(target->pollImmediates({&ev, 1}, std::chrono::microseconds(10s)), 1u);
  const std::vector<uint8_t> now = deviceBytes(tpool);
  for (uint32_t id : ids) {
    const uint64_t at = id * kBlockBytes;
    EXPECT_TRUE(std::equal(now.begin() + at, now.begin() + at + kBlockBytes, imem.begin() + at));
  }
  EXPECT_TRUE(waitOne(*initiator, 1).isOk());
}

}  // namespace
}  // namespace kvferry::rdma

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!GTEST_FLAG_GET(list_tests)) {
    const std::string no_gpu = kvferry::rdma::cuda_ipc::deviceUnavailableReason();
    const bool no_rdma = kvferry::rdma::envOr("KVFERRY_VERBS_TARGET_DEV", "").empty() &&
                         kvferry::rdma::firstRdmaDevice().empty();
    if (!no_gpu.empty() || no_rdma) {
      std::printf("SKIPPED: verbs_cuda_memory needs a GPU and an RDMA device; missing:%s%s\n",
                  no_gpu.empty() ? "" : (" GPU (" + no_gpu + ")").c_str(),
                  no_rdma ? " RDMA device (/sys/class/infiniband is empty; no "
                            "KVFERRY_VERBS_TARGET_DEV)"
                          : "");
      return 77;
    }
  }
  return RUN_ALL_TESTS();
}
