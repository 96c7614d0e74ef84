// A KV block's 64-bit digest, for agent.kv_checksum (node_agent/kv_transfer/kv_checksum.h):
// computed alike on the CPU (kvBlockDigest) and on the GPU (cuda/kv_digest.cu), both from the
// functions below. The block is read as little-endian 64-bit words w_0 … w_{n-1}; each word is
// mixed with its index by a bijection (splitmix64's finalizer over w_i + (i+1)·φ), the terms are
// summed modulo 2^64 — a sum, so a GPU's threads may add their shares in any order — and the sum
// is mixed with the byte count. Changing any one word always changes the digest (its term is a
// bijection of it); moving words or blocks around changes it too; a random corruption of several
// words goes unseen with a chance of about 2^-64. It catches accidents (a NIC, a link, a transport
// bug, a late write), not an attacker: nobody else writes into the pools (the transfer plane
// admits only the peers the orchestrator introduced).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KVFERRY_HOST_DEVICE __host__ __device__
#else
#define KVFERRY_HOST_DEVICE
#endif

namespace kvferry::engine {

// A block's length must be a multiple of this (a KV block always is: 2- or 4-byte elements,
// head_dim a multiple of 4).
inline constexpr uint64_t kDigestWordBytes = 8;

KVFERRY_HOST_DEVICE inline uint64_t digestMix(uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ull;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Word `index` of a block (from 0) as its term of the sum.
KVFERRY_HOST_DEVICE inline uint64_t digestTerm(uint64_t word, uint64_t index) {
  return digestMix(word + (index + 1) * 0x9e3779b97f4a7c15ull);
}

// The digest of a block of `bytes` whose terms sum to `sum`.
KVFERRY_HOST_DEVICE inline uint64_t digestFinish(uint64_t sum, uint64_t bytes) {
  return digestMix(sum ^ digestMix(bytes));
}

// The digest of `bytes` bytes at `block` (a multiple of kDigestWordBytes; any alignment), on the
// CPU: the reference the GPU's digests are tested against.
uint64_t kvBlockDigest(const uint8_t* block, uint64_t bytes);

}  // namespace kvferry::engine
