// What an agent and the orchestrator compare at registration (DESIGN.md §3, docs/control_plane.md):
// 64-bit identity values as hex text, the block-hash seed parsed from its config text, and the
// seed's public id. Both binaries call these, so the texts agree byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/block_hash.h"

namespace kvferry::model {

// 16 lowercase hex digits, zero-padded: the text form of model fingerprints, tokenizer hashes
// and hash-seed ids on the wire.
std::string hex64(uint64_t value);

// The config's `model.hash_seed` text → the block-hash chain's key. 32 hex digits (either case)
// are the key's 16 bytes in order, so k0 = bytes 0..7 and k1 = bytes 8..15, each little-endian
// (as SipHash reads its key). "" is the all-zero seed (the config's default). INVALID_ARGUMENT
// for anything else.
Result<BlockHashSeed> parseHashSeed(std::string_view hex32);

// The seed's public id, which lets the orchestrator check that an agent uses the cluster's seed
// without the seed crossing the wire: hex64(SipHash-2-4 keyed by (k0, k1) over the 15 ASCII
// bytes "kvferry.seed-id"). Being a PRF output under the seed, it reveals nothing about it.
std::string hashSeedId(const BlockHashSeed& seed);

}  // namespace kvferry::model
