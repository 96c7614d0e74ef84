#include "node_agent/engine/kv_digest.h"

#include <cstring>

namespace kvferry::engine {

uint64_t kvBlockDigest(const uint8_t* block, uint64_t bytes) {
  uint64_t sum = 0;
  const uint64_t words = bytes / kDigestWordBytes;
  for (uint64_t i = 0; i < words; ++i) {
    uint64_t word = 0;
    std::memcpy(&word, block + i * kDigestWordBytes, sizeof word);
    sum += digestTerm(word, i);
  }
  return digestFinish(sum, bytes);
}

}  // namespace kvferry::engine
