#include "model/block_hash.h"

#include <string>

#include "model/hash.h"

namespace kvferry::model {

uint64_t hashBlock(const BlockHashSeed& seed, uint64_t parent, std::span<const TokenId> block) {
  SipHasher hasher(seed.k0, seed.k1);
  hasher.addU64(parent);
  for (TokenId id : block) hasher.addU32(static_cast<uint32_t>(id));
  return hasher.finish();
}

Status appendBlockHashes(const BlockHashSeed& seed, std::span<const TokenId> tokens,
                         uint32_t block_tokens, std::vector<uint64_t>& hashes) {
  if (block_tokens == 0) return invalidArgument("block_tokens must be positive");
  const size_t full_blocks = tokens.size() / block_tokens;
  if (hashes.size() > full_blocks) {
    return invalidArgument(std::to_string(hashes.size()) + " block hashes given for " +
                           std::to_string(tokens.size()) + " tokens of " +
                           std::to_string(block_tokens) + " per block");
  }
  uint64_t parent = hashes.empty() ? kBlockHashRoot : hashes.back();
  for (size_t block = hashes.size(); block < full_blocks; ++block) {
    parent = hashBlock(seed, parent, tokens.subspan(block * block_tokens, block_tokens));
    hashes.push_back(parent);
  }
  return Status::ok();
}

Result<std::vector<uint64_t>> blockHashes(const BlockHashSeed& seed,
                                          std::span<const TokenId> tokens, uint32_t block_tokens) {
  std::vector<uint64_t> hashes;
  RETURN_IF_ERROR(appendBlockHashes(seed, tokens, block_tokens, hashes));
  return hashes;
}

}  // namespace kvferry::model
