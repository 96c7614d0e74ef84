// A node agent's registration that the cluster accepts: the served model's identity, a KV layout
// that fits it, a TCP transport. For the orchestrator's tests that register agents.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "common/control_wire.h"
#include "orchestrator/registry.h"

namespace kvferry::orchestrator::testing {

inline wire::RegisterRequest registrationFor(const ClusterIdentity& id, std::string name,
                                             std::string role, std::string control_address,
                                             std::string transport_blob,
                                             uint32_t max_sequence_tokens) {
  wire::RegisterRequest r;
  r.name = std::move(name);
  r.role = std::move(role);
  r.control_address = std::move(control_address);
  r.model_fingerprint = id.model_fingerprint;
  r.tokenizer_hash = id.tokenizer_hash;
  r.hash_seed_id = id.hash_seed_id;
  r.block_tokens = id.block_tokens;
  r.kv_layout = {"f32", id.layers, id.kv_heads, id.head_dim,
                 uint64_t{id.block_tokens} * id.kv_heads * id.head_dim * 4};
  r.transport = "tcp";
  r.transport_blob = std::move(transport_blob);
  r.kv_blocks = 1000;
  r.max_sequence_tokens = max_sequence_tokens;
  return r;
}

}  // namespace kvferry::orchestrator::testing
