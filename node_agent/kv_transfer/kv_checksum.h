// A KV transfer's integrity check (agent.kv_checksum): the prefill agent hashes each layer's K
// and V of the blocks it sends, its answer carries the hashes (PrefillResponse::kv_checksums),
// the orchestrator passes them on in the decode request, and the decode agent hashes the same
// layer of the blocks they landed in before it decodes. A mismatch means the bytes changed on the
// way (a NIC, a link, a transport bug, a late write from an ended lease): the lease fails with
// code kv_corrupt and nothing is decoded from it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "node_agent/engine/cuda_runner.h"
#include "node_agent/engine/engine.h"

namespace kvferry::agent::kv_transfer {

// A layer's checksum: SipHash-2-4 keyed by the layer over the digests (engine/kv_digest.h) of the
// layer's K blocks `block_ids` in order, then of its V blocks. The same bytes in blocks of other
// ids give the same value, and pools in host or GPU memory give the same value for the same
// bytes: the digests are computed where the pools are (on a GPU by a kernel, on its own stream,
// so the engine's next layers compute meanwhile). One per user: not thread-safe.
class KvChecksummer {
 public:
  explicit KvChecksummer(engine::Engine& engine) : engine_(engine) {}

  Result<uint64_t> layer(uint32_t layer, std::span<const uint32_t> block_ids);
  // Layers [first, first + count) at once (one kernel for all of them on a GPU).
  Result<std::vector<uint64_t>> layers(uint32_t first, uint32_t count,
                                       std::span<const uint32_t> block_ids);

 private:
  engine::Engine& engine_;
  std::unique_ptr<engine::DeviceBlockDigester> device_;  // made for the first GPU pool
  std::vector<const void*> pools_;
  std::vector<uint64_t> digests_;
};

// OK when the engine's KV pools can be checksummed; otherwise why not, for agent.kv_checksum.
Status checkKvChecksumSupported(engine::Engine& engine);

}  // namespace kvferry::agent::kv_transfer
