#include "node_agent/kv_transfer/kv_regions.h"

#include <string>

#include "node_agent/kv_transfer/immediate.h"

namespace kvferry::agent::kv_transfer {

Result<KvRegions> registerKvPools(engine::Engine& engine, rdma::Transport& transport) {
  const engine::KvGeometry& geometry = engine.kvGeometry();
  if (geometry.layers > kMaxLayers) {
    return invalidArgument("the model has " + std::to_string(geometry.layers) +
                           " layers; a KV transfer's immediate names at most " +
                           std::to_string(kMaxLayers));
  }
  KvRegions regions;
  for (uint32_t layer = 0; layer < geometry.layers; ++layer) {
    for (engine::KvPoolRegion pool : {engine.keyPool(layer), engine.valuePool(layer)}) {
      rdma::MemoryKind kind = pool.cuda_device >= 0 ? rdma::MemoryKind::cuda(pool.cuda_device)
                                                    : rdma::MemoryKind::host();
      ASSIGN_OR_RETURN(rdma::RegionId region,
                       transport.registerRegion(pool.base, pool.bytes, kind));
      regions.ids.push_back(region);
      regions.pools.push_back({region, geometry.blockBytes(), geometry.num_blocks});
    }
  }
  return regions;
}

wire::KvLayout kvLayoutOf(const engine::KvGeometry& geometry) {
  return {engine::kvDtypeName(geometry.dtype), geometry.layers, geometry.kv_heads,
          geometry.head_dim, geometry.blockBytes()};
}

}  // namespace kvferry::agent::kv_transfer
