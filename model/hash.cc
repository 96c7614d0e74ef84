#include "model/hash.h"

#include <bit>

namespace kvferry::model {
namespace {

inline void sipRound(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
  v0 += v1;
  v1 = std::rotl(v1, 13);
  v1 ^= v0;
  v0 = std::rotl(v0, 32);
  v2 += v3;
  v3 = std::rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = std::rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = std::rotl(v1, 17);
  v1 ^= v2;
  v2 = std::rotl(v2, 32);
}

// Assembled byte by byte, so the result does not depend on the host's byte order.
inline uint64_t loadLe64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

}  // namespace

SipHasher::SipHasher(uint64_t k0, uint64_t k1)
    : v0_(k0 ^ 0x736f6d6570736575ULL),
      v1_(k1 ^ 0x646f72616e646f6dULL),
      v2_(k0 ^ 0x6c7967656e657261ULL),
      v3_(k1 ^ 0x7465646279746573ULL) {}

void SipHasher::compress(uint64_t word) {
  v3_ ^= word;
  sipRound(v0_, v1_, v2_, v3_);
  sipRound(v0_, v1_, v2_, v3_);
  v0_ ^= word;
}

SipHasher& SipHasher::update(std::span<const uint8_t> bytes) {
  total_bytes_ += bytes.size();
  size_t i = 0;
  // Top up a partial word first, then whole words straight from the input, then keep the rest.
  while (tail_bytes_ != 0 && i < bytes.size()) {
    tail_ |= uint64_t{bytes[i++]} << (8 * tail_bytes_);
    if (++tail_bytes_ == 8) {
      compress(tail_);
      tail_ = 0;
      tail_bytes_ = 0;
    }
  }
  for (; i + 8 <= bytes.size(); i += 8) compress(loadLe64(bytes.data() + i));
  for (; i < bytes.size(); ++i) tail_ |= uint64_t{bytes[i]} << (8 * tail_bytes_++);
  return *this;
}

SipHasher& SipHasher::addU32(uint32_t value) {
  const uint8_t bytes[4] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                            static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
  return update(bytes);
}

SipHasher& SipHasher::addU64(uint64_t value) {
  addU32(static_cast<uint32_t>(value));
  return addU32(static_cast<uint32_t>(value >> 32));
}

SipHasher& SipHasher::addF32(float value) { return addU32(std::bit_cast<uint32_t>(value)); }

SipHasher& SipHasher::addString(std::string_view text) {
  addU64(text.size());
  return update({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

uint64_t SipHasher::finish() const {
  uint64_t v0 = v0_, v1 = v1_, v2 = v2_, v3 = v3_;
  const uint64_t last = (total_bytes_ << 56) | tail_;
  v3 ^= last;
  sipRound(v0, v1, v2, v3);
  sipRound(v0, v1, v2, v3);
  v0 ^= last;
  v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) sipRound(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t sipHash24(uint64_t k0, uint64_t k1, std::span<const uint8_t> bytes) {
  return SipHasher(k0, k1).update(bytes).finish();
}

}  // namespace kvferry::model
