#include "node_agent/kv_transfer/kv_checksum.h"

#include <string>

#include "model/hash.h"
#include "node_agent/engine/kv_digest.h"

namespace kvferry::agent::kv_transfer {

Status checkKvChecksumSupported(engine::Engine& engine) {
  if (engine.kvGeometry().layers == 0) return Status();
  // Hashing no block checks only that the pools can be hashed where they live.
  return KvChecksummer(engine).layer(0, {}).status().withContext("agent.kv_checksum (turn it off)");
}

Result<uint64_t> KvChecksummer::layer(uint32_t layer, std::span<const uint32_t> block_ids) {
  ASSIGN_OR_RETURN(std::vector<uint64_t> one, layers(layer, 1, block_ids));
  return one.front();
}

Result<std::vector<uint64_t>> KvChecksummer::layers(uint32_t first, uint32_t count,
                                                    std::span<const uint32_t> block_ids) {
  const engine::KvGeometry& geometry = engine_.kvGeometry();
  const uint64_t block_bytes = geometry.blockBytes();
  if (uint64_t{first} + count > geometry.layers) {
    return outOfRange("KV checksum: layers " + std::to_string(first) + "+" + std::to_string(count) +
                      " of " + std::to_string(geometry.layers));
  }
  if (block_bytes % engine::kDigestWordBytes != 0) {
    return failedPrecondition("KV checksums need blocks of a multiple of 8 bytes; these have " +
                              std::to_string(block_bytes));
  }
  for (uint32_t id : block_ids) {
    if (id >= geometry.num_blocks) {
      return outOfRange("KV checksum: block " + std::to_string(id) + " of " +
                        std::to_string(geometry.num_blocks));
    }
  }
  // Every pool of the layers, K then V per layer; all in host memory or all on one GPU.
  pools_.clear();
  int device = -1;
  for (uint32_t layer = first; layer < first + count; ++layer) {
    for (const engine::KvPoolRegion pool : {engine_.keyPool(layer), engine_.valuePool(layer)}) {
      if (!pools_.empty() && pool.cuda_device != device) {
        return failedPrecondition("KV checksum: the pools of layers " + std::to_string(first) +
                                  "+" + std::to_string(count) + " are not all in one memory");
      }
      device = pool.cuda_device;
      pools_.push_back(pool.base);
    }
  }
  digests_.resize(pools_.size() * block_ids.size());
  if (device >= 0) {
    if (device_ == nullptr) {
      Result<std::unique_ptr<engine::DeviceBlockDigester>> made =
          engine::createDeviceBlockDigester(device);
      if (!made.isOk()) {
        return made.status().withContext("KV checksums of pools on GPU " + std::to_string(device));
      }
      device_ = std::move(made).value();
    }
    RETURN_IF_ERROR(device_->digest(pools_, block_bytes, block_ids, digests_));
  } else {
    uint64_t* out = digests_.data();
    for (const void* pool : pools_) {
      const auto* base = static_cast<const uint8_t*>(pool);
      for (uint32_t id : block_ids)
        *out++ = engine::kvBlockDigest(base + id * block_bytes, block_bytes);
    }
  }
  std::vector<uint64_t> checksums;
  checksums.reserve(count);
  const uint64_t* digest = digests_.data();
  for (uint32_t layer = first; layer < first + count; ++layer) {
    model::SipHasher hasher(layer, 0);
    for (size_t i = 0; i < 2 * block_ids.size(); ++i) hasher.addU64(*digest++);
    checksums.push_back(hasher.finish());
  }
  return checksums;
}

}  // namespace kvferry::agent::kv_transfer
