// kvBlockDigest (node_agent/engine/kv_digest.h): the CPU reference of the GPU's block digests and
// part of agent.kv_checksum's wire contract (a prefill and a decode agent must agree on it).
#include "node_agent/engine/kv_digest.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <set>
#include <vector>

#include "tests/node_agent/engine/engine_test_util.h"

namespace kvferry::engine {
namespace {

using testing::randomBytes;

uint64_t digestOf(const std::vector<uint8_t>& block) {
  return kvBlockDigest(block.data(), block.size());
}

// The values agents of every version must compute: changing the digest breaks a cluster whose
// prefill and decode agents run different builds with agent.kv_checksum on. (Computed by hand
// from kv_digest.h's definition, in Python's arbitrary-precision integers masked to 64 bits.)
TEST(KvDigestTest, KnownValues) {
  EXPECT_EQ(kvBlockDigest(nullptr, 0), 0x0ull);  // splitmix64's finalizer keeps 0 at 0
  std::vector<uint8_t> counting(32);
  std::iota(counting.begin(), counting.end(), uint8_t{0});
  EXPECT_EQ(digestOf(counting), 0x1a448971b615d473ull);
  EXPECT_EQ(digestOf(std::vector<uint8_t>(4096, 0)), 0xf3b1d7933fd3a671ull);
}

// Any one bit flipped anywhere in a block gives another digest, and no two of those are equal.
TEST(KvDigestTest, EveryOneBitChangeIsSeen) {
  const std::vector<uint8_t> block = randomBytes(1, 512);
  const uint64_t intact = digestOf(block);
  std::set<uint64_t> seen{intact};
  for (size_t byte = 0; byte < block.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> changed = block;
      changed[byte] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_TRUE(seen.insert(digestOf(changed)).second) << "byte " << byte << " bit " << bit;
    }
  }
}

// Words in another order, a zeroed block and a block of another length are other digests.
TEST(KvDigestTest, OrderAndLengthCount) {
  std::vector<uint8_t> block = randomBytes(2, 256);
  const uint64_t intact = digestOf(block);
  std::vector<uint8_t> swapped = block;
  std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + 64);
  EXPECT_NE(digestOf(swapped), intact);
  EXPECT_NE(digestOf(std::vector<uint8_t>(256, 0)), digestOf(std::vector<uint8_t>(264, 0)));
  EXPECT_NE(digestOf(std::vector<uint8_t>(256, 0)), intact);
}

// The reference reads words wherever they lie: an unaligned copy digests alike.
TEST(KvDigestTest, AlignmentDoesNotMatter) {
  const std::vector<uint8_t> block = randomBytes(3, 1024);
  std::vector<uint8_t> shifted(block.size() + 3);
  std::memcpy(shifted.data() + 3, block.data(), block.size());
  EXPECT_EQ(kvBlockDigest(shifted.data() + 3, block.size()), digestOf(block));
}

}  // namespace
}  // namespace kvferry::engine
