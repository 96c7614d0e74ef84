// SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012), implemented here so
// that the orchestrator and every agent compute identical 64-bit hashes on any platform and with
// any compiler: the block-hash chain, the model fingerprint and the tokenizer hash all use it.
//
// Keyed by 128 bits (k0 = key bytes 0..7, k1 = key bytes 8..15, both little-endian, as in the
// reference implementation). With a secret key it is a PRF, so clients cannot craft colliding
// prompts to poison another tenant's prefix cache; with a public key it is still a good hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace kvferry::model {

// Streaming SipHash-2-4: feed bytes (or little-endian integers) with the add*/update calls, then
// finish(). Feeding in pieces gives the same value as feeding the concatenation at once.
class SipHasher {
 public:
  SipHasher(uint64_t k0, uint64_t k1);

  SipHasher& update(std::span<const uint8_t> bytes);
  SipHasher& addU32(uint32_t value);  // 4 bytes, little-endian
  SipHasher& addU64(uint64_t value);  // 8 bytes, little-endian
  SipHasher& addF32(float value);     // its IEEE-754 bit pattern as addU32
  // A length-prefixed string (addU64(size), then the bytes), so ("ab","c") != ("a","bc").
  SipHasher& addString(std::string_view text);

  // The hash of everything fed so far; the hasher stays usable (more input may follow).
  uint64_t finish() const;

 private:
  void compress(uint64_t word);

  uint64_t v0_, v1_, v2_, v3_;
  uint64_t tail_ = 0;         // up to 7 pending bytes, little-endian
  size_t tail_bytes_ = 0;     // how many bytes tail_ holds
  uint64_t total_bytes_ = 0;  // the message length; its low byte enters the last word
};

// One-shot convenience.
uint64_t sipHash24(uint64_t k0, uint64_t k1, std::span<const uint8_t> bytes);

}  // namespace kvferry::model
