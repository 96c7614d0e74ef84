// A KV transfer's integrity check (agent.kv_checksum): the prefill agent hashes each layer's K
// and V of the blocks it sends, its answer carries the hashes (PrefillResponse::kv_checksums),
// the orchestrator passes them on in the decode request, and the decode agent hashes the same
// layer of the blocks they landed in before it decodes. A mismatch means the bytes changed on the
// way (a NIC, a link, a transport bug, a late write from an ended lease): the lease fails with
// code kv_corrupt and nothing is decoded from it.
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "node_agent/engine/engine.h"

namespace kvferry::agent::kv_transfer {

// SipHash-2-4 (keyed by the layer) of the layer's K bytes of `block_ids` in order, then its V
// bytes. The same bytes in blocks of other ids give the same value. FAILED_PRECONDITION for KV
// pools in GPU memory (not checked yet).
Result<uint64_t> kvChecksum(engine::Engine& engine, uint32_t layer,
                            std::span<const uint32_t> block_ids);

// OK when the engine's KV pools can be checksummed; otherwise why not, for agent.kv_checksum.
Status checkKvChecksumSupported(engine::Engine& engine);

}  // namespace kvferry::agent::kv_transfer
