// The KV block-hash chain (DESIGN.md §2): a prompt is cut into blocks of `block_tokens` tokens and
// each FULL block gets
//
//   hash(block i) = SipHash-2-4(key = seed,
//                               message = LE64(parent) ‖ LE32(token 0) ‖ … ‖ LE32(token B-1))
//
// where parent is hash(block i-1), or kBlockHashRoot for block 0, LE64/LE32 are little-endian
// encodings and token ids are written as their 32-bit two's-complement pattern. A block's hash
// thus names the whole prefix up to its end: equal hashes mean equal prefixes (up to 2^-64
// collisions), which is what the prefix-cache index and the scheduler rely on. A trailing
// partial block has no hash (it is not shareable). Every process of a cluster must use the same
// seed and block_tokens; a secret seed keeps clients from engineering collisions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "model/token_id.h"

namespace kvferry::model {

// The SipHash key of the chain (k0 = key bytes 0..7, k1 = bytes 8..15, little-endian).
struct BlockHashSeed {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

// The parent of the first block: the bytes "kvferry1" read as a little-endian 64-bit integer.
inline constexpr uint64_t kBlockHashRoot = 0x317972726566766bULL;

// One link of the chain: the hash of `block` (any length, normally block_tokens) after `parent`.
uint64_t hashBlock(const BlockHashSeed& seed, uint64_t parent, std::span<const TokenId> block);

// Extends `hashes`, which holds the hashes of the first hashes.size() full blocks of `tokens`,
// with those of the remaining full blocks, so a growing sequence is hashed incrementally and a
// caller that reuses the vector allocates nothing once it has grown. INVALID_ARGUMENT when
// block_tokens is 0 or `hashes` already claims more blocks than `tokens` holds.
Status appendBlockHashes(const BlockHashSeed& seed, std::span<const TokenId> tokens,
                         uint32_t block_tokens, std::vector<uint64_t>& hashes);

// The hashes of every full block of `tokens`, in order.
Result<std::vector<uint64_t>> blockHashes(const BlockHashSeed& seed,
                                          std::span<const TokenId> tokens, uint32_t block_tokens);

}  // namespace kvferry::model
