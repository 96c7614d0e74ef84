// The engine's KV pools as the transfer engine sees them (DESIGN.md §4): one registered region
// per layer and K/V, so a remote address is base + block id × block bytes; and the layout an
// agent announces at registration, which every agent of a cluster must share.
#pragma once

#include <vector>

#include "common/control_wire.h"
#include "common/status.h"
#include "node_agent/engine/engine.h"
#include "rdma/kv_layout.h"
#include "rdma/transport.h"

namespace kvferry::agent::kv_transfer {

struct KvRegions {
  std::vector<rdma::RegionId> ids;  // K0, V0, K1, V1, …
  std::vector<rdma::KvPool> pools;  // same order
};

// Registers every pool of `engine` with `transport` (host or CUDA memory, as the pool says).
// INVALID_ARGUMENT for a model with more layers than an immediate can name.
Result<KvRegions> registerKvPools(engine::Engine& engine, rdma::Transport& transport);

wire::KvLayout kvLayoutOf(const engine::KvGeometry& geometry);

}  // namespace kvferry::agent::kv_transfer
