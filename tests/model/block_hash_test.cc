#include "model/block_hash.h"

#include <gtest/gtest.h>

#include <array>
#include <numeric>
#include <vector>

#include "model/hash.h"

namespace kvferry::model {
namespace {

constexpr uint64_t kK0 = 0x0706050403020100ULL;  // key bytes 00 01 .. 0f, little-endian
constexpr uint64_t kK1 = 0x0f0e0d0c0b0a0908ULL;

// SipHash-2-4 outputs for key 00..0f and message 00 01 .. (n-1), n = 0..63: the reference
// implementation's vectors_sip64 table (github.com/veorq/SipHash, vectors.h). n = 15 is the
// worked example of the paper's Appendix A (0xa129ca6149be45e5).
constexpr std::array<uint64_t, 64> kSipHashVectors = {
    0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
    0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
    0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
    0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
    0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
    0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
    0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
    0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
    0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
    0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
    0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
    0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
    0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
    0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
    0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
    0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572,
};

std::vector<uint8_t> counting(size_t n) {
  std::vector<uint8_t> bytes(n);
  std::iota(bytes.begin(), bytes.end(), uint8_t{0});
  return bytes;
}

TEST(SipHashTest, ReferenceVectorsForEveryLength) {
  for (size_t n = 0; n < kSipHashVectors.size(); ++n) {
    EXPECT_EQ(sipHash24(kK0, kK1, counting(n)), kSipHashVectors[n]) << "length " << n;
  }
}

TEST(SipHashTest, StreamingInAnyPiecesEqualsOneShot) {
  const std::vector<uint8_t> message = counting(63);
  for (size_t first = 0; first <= message.size(); ++first) {
    for (size_t second = first; second <= message.size(); second += 5) {
      SipHasher hasher(kK0, kK1);
      hasher.update(std::span(message).first(first));
      hasher.update(std::span(message).subspan(first, second - first));
      hasher.update(std::span(message).subspan(second));
      ASSERT_EQ(hasher.finish(), kSipHashVectors[63]) << first << " " << second;
    }
  }
}

TEST(SipHashTest, IntegersAreFedLittleEndian) {
  SipHasher hasher(kK0, kK1);
  hasher.addU32(0x03020100).addU64(0x0b0a090807060504ULL).addF32(std::bit_cast<float>(0x0f0e0d0cu));
  EXPECT_EQ(hasher.finish(), kSipHashVectors[16]);
}

const BlockHashSeed kSeed{0x1234, 0x5678};

std::vector<TokenId> iota(size_t n, TokenId first = 0) {
  std::vector<TokenId> tokens(n);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

TEST(BlockHashTest, LinkIsSipHashOfParentAndLittleEndianTokens) {
  const std::vector<TokenId> block = {1, 403, -1, 0x01020304};
  // "kvferry1" (the root, little-endian), then 1, 403, -1 and 0x01020304 as little-endian u32.
  const std::vector<uint8_t> message = {'k',  'v',  'f', 'e', 'r',  'r',  'y',  '1',  1, 0, 0, 0,
                                        0x93, 0x01, 0,   0,   0xff, 0xff, 0xff, 0xff, 4, 3, 2, 1};
  EXPECT_EQ(hashBlock(kSeed, kBlockHashRoot, block), sipHash24(kSeed.k0, kSeed.k1, message));
  // Pinned: a change here breaks every cluster that mixes old and new binaries.
  EXPECT_EQ(hashBlock(kSeed, kBlockHashRoot, block), 0xf086b2ea9c9e25fbULL);
}

TEST(BlockHashTest, ChainLinksEachFullBlockToItsParent) {
  const std::vector<TokenId> tokens = iota(100);
  Result<std::vector<uint64_t>> hashes = blockHashes(kSeed, tokens, 16);
  ASSERT_TRUE(hashes.isOk()) << hashes.status().toString();
  ASSERT_EQ(hashes->size(), 6u);  // 96 tokens in full blocks; the last 4 have no hash
  uint64_t parent = kBlockHashRoot;
  for (size_t i = 0; i < hashes->size(); ++i) {
    parent = hashBlock(kSeed, parent, std::span(tokens).subspan(16 * i, 16));
    EXPECT_EQ((*hashes)[i], parent) << i;
  }
}

TEST(BlockHashTest, PartialBlocksHaveNoHash) {
  for (size_t n : {0, 1, 15}) EXPECT_TRUE(blockHashes(kSeed, iota(n), 16)->empty()) << n;
  EXPECT_EQ(blockHashes(kSeed, iota(16), 16)->size(), 1u);
  EXPECT_EQ(blockHashes(kSeed, iota(31), 16)->size(), 1u);
  EXPECT_EQ(blockHashes(kSeed, iota(32), 16)->size(), 2u);
}

TEST(BlockHashTest, SharedPrefixGivesSharedHashesOnlyForBlocksInsideIt) {
  std::vector<TokenId> a = iota(64);
  std::vector<TokenId> b = iota(64);
  b[40] = 9999;  // block 2 (tokens 32..47) differs
  const std::vector<uint64_t> ha = *blockHashes(kSeed, a, 16);
  const std::vector<uint64_t> hb = *blockHashes(kSeed, b, 16);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[1], hb[1]);
  EXPECT_NE(ha[2], hb[2]);
  EXPECT_NE(ha[3], hb[3]);  // block 3 is identical, but its prefix is not
}

TEST(BlockHashTest, ChangingOneTokenChangesThatBlockAndEveryLaterOne) {
  const std::vector<TokenId> base = iota(64, 100);  // 8 blocks of 8
  const std::vector<uint64_t> reference = *blockHashes(kSeed, base, 8);
  for (size_t block = 0; block < 8; ++block) {
    std::vector<TokenId> changed = base;
    changed[block * 8 + 3] += 1;
    const std::vector<uint64_t> hashes = *blockHashes(kSeed, changed, 8);
    for (size_t i = 0; i < 8; ++i) {
      if (i < block) {
        EXPECT_EQ(hashes[i], reference[i]) << "changed block " << block << ", block " << i;
      } else {
        EXPECT_NE(hashes[i], reference[i]) << "changed block " << block << ", block " << i;
      }
    }
  }
}

TEST(BlockHashTest, SeedAndBlockSizeChangeEveryHash) {
  const std::vector<TokenId> tokens = iota(64);
  const std::vector<uint64_t> reference = *blockHashes(kSeed, tokens, 16);
  for (BlockHashSeed other :
       {BlockHashSeed{0x1235, 0x5678}, BlockHashSeed{0x1234, 0x5679}, BlockHashSeed{}}) {
    const std::vector<uint64_t> hashes = *blockHashes(other, tokens, 16);
    for (size_t i = 0; i < hashes.size(); ++i) EXPECT_NE(hashes[i], reference[i]) << i;
  }
  EXPECT_NE(blockHashes(kSeed, tokens, 32)->front(), reference.front());
}

TEST(BlockHashTest, AppendingExtendsAGrowingSequence) {
  const std::vector<TokenId> tokens = iota(200, 7);
  const std::vector<uint64_t> whole = *blockHashes(kSeed, tokens, 16);
  std::vector<uint64_t> grown;
  for (size_t length = 0; length <= tokens.size(); length += 7) {
    ASSERT_TRUE(appendBlockHashes(kSeed, std::span(tokens).first(length), 16, grown).isOk());
    ASSERT_EQ(grown.size(), length / 16);
  }
  ASSERT_TRUE(appendBlockHashes(kSeed, tokens, 16, grown).isOk());
  EXPECT_EQ(grown, whole);
}

TEST(BlockHashTest, RejectsZeroBlockSizeAndTooManyHashes) {
  EXPECT_EQ(blockHashes(kSeed, iota(10), 0).status().code(), StatusCode::kInvalidArgument);
  std::vector<uint64_t> hashes = {1, 2};
  EXPECT_EQ(appendBlockHashes(kSeed, iota(20), 16, hashes).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvferry::model
