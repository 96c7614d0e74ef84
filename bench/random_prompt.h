// Deterministic prompts of random token ids in [3, vocab) (no BOS/EOS inside), shared by
// engine_bench's CPU and CUDA modes.
#pragma once

#include <cstdint>
#include <vector>

#include "model/token_id.h"

namespace kvferry::bench {

inline std::vector<model::TokenId> randomPrompt(uint32_t length, uint32_t vocab, uint64_t seed) {
  std::vector<model::TokenId> out;
  uint64_t state = seed;
  for (uint32_t i = 0; i < length; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    out.push_back(static_cast<model::TokenId>(3 + (state >> 33) % (vocab - 3)));
  }
  return out;
}

}  // namespace kvferry::bench
