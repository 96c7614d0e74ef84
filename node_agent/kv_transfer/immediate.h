// The 32-bit immediate that ends each layer's write batch (docs/control_plane.md): the decode
// agent's lease slot in the high bits, the layer in the low kLayerBits. The sender encodes it,
// the receiver decodes it; nothing else looks inside.
#pragma once

#include <cstdint>

namespace kvferry::agent::kv_transfer {

inline constexpr uint32_t kLayerBits = 12;
inline constexpr uint32_t kMaxLayers = 1u << kLayerBits;
// Slots are handed out round-robin from this many values, so a reused slot is far in the past
// and a late write of an ended lease cannot be mistaken for a new one's.
inline constexpr uint32_t kSlotCount = 1u << 20;

static_assert(kLayerBits + 20 == 32, "slot and layer fill the 32 bits of an immediate");
static_assert(uint64_t{kSlotCount - 1} << kLayerBits <= UINT32_MAX,
              "the largest slot shifted past the layer bits fits in 32 bits");

struct SlotLayer {
  uint32_t slot = 0;
  uint32_t layer = 0;
};

// slot < kSlotCount and layer < kMaxLayers (the caller checks both).
constexpr uint32_t encodeImmediate(uint32_t slot, uint32_t layer) {
  return slot << kLayerBits | layer;
}

constexpr SlotLayer decodeImmediate(uint32_t imm) {
  return {imm >> kLayerBits, imm & (kMaxLayers - 1)};
}

static_assert(decodeImmediate(encodeImmediate(kSlotCount - 1, kMaxLayers - 1)).slot ==
              kSlotCount - 1);
static_assert(decodeImmediate(encodeImmediate(kSlotCount - 1, kMaxLayers - 1)).layer ==
              kMaxLayers - 1);

}  // namespace kvferry::agent::kv_transfer
