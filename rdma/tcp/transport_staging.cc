#include "rdma/tcp/transport_staging.h"

#include <spdlog/spdlog.h>

#include <string>

namespace kvferry::rdma::tcp_backend {

Result<std::unique_ptr<TransportStaging>> TransportStaging::make(
    const CopierFactory& factory, int device, const config::TransportConfig& config, PostFn post) {
  const size_t chunk_bytes = config.gpu_staging_chunk_bytes;
  const size_t per_ring = chunk_bytes * config.gpu_staging_chunks;
  ASSIGN_OR_RETURN(std::unique_ptr<StagingCopier> copier, factory(device, 2 * per_ring));
  std::span<uint8_t> arena = copier->arena();
  if (arena.size() < 2 * per_ring) {
    return internalError("staging arena of " + std::to_string(arena.size()) + " bytes, asked " +
                         std::to_string(2 * per_ring));
  }
  std::unique_ptr<TransportStaging> staging(new TransportStaging(device, std::move(copier)));
  staging->send_ = std::make_unique<StagingRing>(*staging->copier_, arena.subspan(0, per_ring),
                                                 chunk_bytes, CopyDirection::kDeviceToHost, post);
  staging->receive_ =
      std::make_unique<StagingRing>(*staging->copier_, arena.subspan(per_ring, per_ring),
                                    chunk_bytes, CopyDirection::kHostToDevice, std::move(post));
  staging->rings_ = StagingRings{staging->send_.get(), staging->receive_.get()};
  spdlog::info("tcp transport: staging GPU {} memory through 2 × {} pinned chunks of {} bytes",
               device, config.gpu_staging_chunks, chunk_bytes);
  return staging;
}

}  // namespace kvferry::rdma::tcp_backend
