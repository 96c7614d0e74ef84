// A tcp transport's staging for CUDA regions: the copier (its pinned arena) and the two rings cut
// from it, one for sending and one for receiving. Made at the first CUDA registration, so a
// transport that moves host memory only pins nothing and needs no GPU.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/tcp/staging_copier.h"
#include "rdma/tcp/staging_ring.h"

namespace kvferry::rdma::tcp_backend {

// The transport's two rings, as connections use them.
struct StagingRings {
  StagingRing* send = nullptr;
  StagingRing* receive = nullptr;
};

class TransportStaging {
 public:
  // 2 × gpu_staging_chunks chunks of gpu_staging_chunk_bytes for GPU `device`; `post` runs a
  // function on the progress thread.
  static Result<std::unique_ptr<TransportStaging>> make(const CopierFactory& factory, int device,
                                                        const config::TransportConfig& config,
                                                        PostFn post);

  int device() const { return device_; }
  const StagingRings& rings() const { return rings_; }

 private:
  TransportStaging(int device, std::unique_ptr<StagingCopier> copier) noexcept
      : device_(device), copier_(std::move(copier)) {}

  const int device_;
  // Teardown: the copier first (it waits for its copies, whose completions name the rings'
  // chunks), then the rings.
  std::unique_ptr<StagingRing> send_;
  std::unique_ptr<StagingRing> receive_;
  std::unique_ptr<StagingCopier> copier_;
  StagingRings rings_;
};

}  // namespace kvferry::rdma::tcp_backend
