#include "model/cluster_identity.h"

#include <cstdio>

#include "model/hash.h"

namespace kvferry::model {
namespace {

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return std::string(text, 16);
}

Result<BlockHashSeed> parseHashSeed(std::string_view hex32) {
  BlockHashSeed seed;
  if (hex32.empty()) return seed;
  if (hex32.size() != 32) {
    return invalidArgument("hash seed must be 32 hex digits (16 bytes), got " +
                           std::to_string(hex32.size()) + " characters");
  }
  for (size_t byte = 0; byte < 16; ++byte) {
    int high = hexDigit(hex32[2 * byte]);
    int low = hexDigit(hex32[2 * byte + 1]);
    if (high < 0 || low < 0) {
      return invalidArgument("hash seed must be 32 hex digits: '" + std::string(hex32) +
                             "' has a non-hex character at offset " +
                             std::to_string(high < 0 ? 2 * byte : 2 * byte + 1));
    }
    uint64_t value = static_cast<uint64_t>(high * 16 + low);
    uint64_t& word = byte < 8 ? seed.k0 : seed.k1;
    word |= value << (8 * (byte % 8));
  }
  return seed;
}

std::string hashSeedId(const BlockHashSeed& seed) {
  constexpr std::string_view kLabel = "kvferry.seed-id";
  return hex64(sipHash24(
      seed.k0, seed.k1, std::span(reinterpret_cast<const uint8_t*>(kLabel.data()), kLabel.size())));
}

}  // namespace kvferry::model
