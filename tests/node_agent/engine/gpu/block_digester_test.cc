// The device's KV block digests (createDeviceBlockDigester, cuda/kv_digest.cu) against the CPU
// reference kvBlockDigest, digest for digest.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "node_agent/engine/cuda_runner.h"
#include "node_agent/engine/kv_digest.h"
#include "tests/node_agent/engine/engine_test_util.h"
#include "tests/node_agent/engine/gpu/gpu_test_util.h"

namespace kvferry::engine::cuda {
namespace {

using engine::testing::randomBytes;
using testing::upload;

std::unique_ptr<DeviceBlockDigester> makeDigester() {
  Result<std::unique_ptr<DeviceBlockDigester>> made = createDeviceBlockDigester(0);
  EXPECT_TRUE(made.isOk()) << made.status().toString();
  return made.isOk() ? std::move(made).value() : nullptr;
}

// Three pools of 40 blocks; scattered ids, one repeated, one block count not a multiple of
// anything; block sizes from one word to past a thread block's stride, one digester throughout
// (its buffers grow as the lists do).
TEST(BlockDigesterTest, MatchesTheCpuReferenceBlockForBlock) {
  std::unique_ptr<DeviceBlockDigester> digester = makeDigester();
  ASSERT_NE(digester, nullptr);
  constexpr uint32_t kBlocks = 40;
  for (uint64_t block_bytes : {8ull, 24ull, 2048ull, 32768ull, 65544ull}) {
    std::vector<std::vector<uint8_t>> host;
    std::vector<DeviceBuffer> device;
    std::vector<const void*> pools;
    for (uint64_t p = 0; p < 3; ++p) {
      host.push_back(randomBytes(block_bytes * 10 + p, block_bytes * kBlocks));
      device.push_back(upload(host.back()));
      pools.push_back(device.back().data());
    }
    for (const std::vector<uint32_t>& ids :
         {std::vector<uint32_t>{7},
          std::vector<uint32_t>{39, 0, 17, 17, 3, 22, 9, 31, 12, 5, 28}}) {
      std::vector<uint64_t> got(pools.size() * ids.size());
      Status s = digester->digest(pools, block_bytes, ids, got);
      ASSERT_TRUE(s.isOk()) << s.toString();
      for (size_t p = 0; p < pools.size(); ++p) {
        for (size_t i = 0; i < ids.size(); ++i) {
          EXPECT_EQ(got[p * ids.size() + i],
                    kvBlockDigest(host[p].data() + ids[i] * block_bytes, block_bytes))
              << "block_bytes " << block_bytes << " pool " << p << " id " << ids[i];
        }
      }
    }
  }
}

// A byte changed in device memory changes that block's digest and no other.
TEST(BlockDigesterTest, AByteChangedOnTheDeviceChangesOnlyItsBlock) {
  std::unique_ptr<DeviceBlockDigester> digester = makeDigester();
  ASSERT_NE(digester, nullptr);
  constexpr uint64_t kBlockBytes = 32768;
  std::vector<uint8_t> host = randomBytes(5, kBlockBytes * 4);
  DeviceBuffer pool = upload(host);
  const std::vector<const void*> pools{pool.data()};
  const std::vector<uint32_t> ids{0, 1, 2, 3};
  std::vector<uint64_t> before(4);
  std::vector<uint64_t> after(4);
  ASSERT_TRUE(digester->digest(pools, kBlockBytes, ids, before).isOk());
  const uint8_t flipped = host[2 * kBlockBytes + 12345] ^ 0x10;
  ASSERT_EQ(
      cudaMemcpy(pool.as<uint8_t>() + 2 * kBlockBytes + 12345, &flipped, 1, cudaMemcpyHostToDevice),
      cudaSuccess);
  ASSERT_TRUE(digester->digest(pools, kBlockBytes, ids, after).isOk());
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1], before[1]);
  EXPECT_NE(after[2], before[2]);
  EXPECT_EQ(after[3], before[3]);
}

TEST(BlockDigesterTest, RefusesWhatItCannotDigest) {
  std::unique_ptr<DeviceBlockDigester> digester = makeDigester();
  ASSERT_NE(digester, nullptr);
  DeviceBuffer pool = upload(std::vector<uint8_t>(64, 1));
  const std::vector<const void*> pools{pool.data()};
  const std::vector<uint32_t> ids{0, 1};
  std::vector<uint64_t> out(2);
  Status odd = digester->digest(pools, 12, ids, out);
  EXPECT_EQ(odd.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(odd.message().find("not a multiple of 8"), std::string::npos) << odd.toString();
  std::vector<uint64_t> short_out(1);
  EXPECT_EQ(digester->digest(pools, 16, ids, short_out).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(digester->digest(pools, 16, {}, {}).isOk());  // nothing to digest
}

}  // namespace
}  // namespace kvferry::engine::cuda
