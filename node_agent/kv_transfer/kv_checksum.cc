#include "node_agent/kv_transfer/kv_checksum.h"

#include <string>

#include "model/hash.h"

namespace kvferry::agent::kv_transfer {

Status checkKvChecksumSupported(engine::Engine& engine) {
  if (engine.kvGeometry().layers == 0) return Status();
  // Hashing no block checks only where the pools live.
  return kvChecksum(engine, 0, {}).status().withContext("agent.kv_checksum (turn it off)");
}

Result<uint64_t> kvChecksum(engine::Engine& engine, uint32_t layer,
                            std::span<const uint32_t> block_ids) {
  const engine::KvGeometry& geometry = engine.kvGeometry();
  const uint64_t block_bytes = geometry.blockBytes();
  model::SipHasher hasher(layer, 0);
  for (const engine::KvPoolRegion pool : {engine.keyPool(layer), engine.valuePool(layer)}) {
    if (pool.cuda_device >= 0) {
      return failedPrecondition("KV checksums need host memory; layer " + std::to_string(layer) +
                                " is on GPU " + std::to_string(pool.cuda_device));
    }
    const auto* base = static_cast<const uint8_t*>(pool.base);
    for (uint32_t id : block_ids) {
      if (uint64_t{id} >= geometry.num_blocks) {
        return outOfRange("KV checksum: block " + std::to_string(id) + " of " +
                          std::to_string(geometry.num_blocks));
      }
      hasher.update({base + uint64_t{id} * block_bytes, block_bytes});
    }
  }
  return hasher.finish();
}

}  // namespace kvferry::agent::kv_transfer
