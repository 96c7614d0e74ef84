// In-process backend for unit tests: endpoints that share a LoopbackFabric reach each other's
// registered regions with memcpy. Same contract as every backend (bounds checks on both sides,
// queue depth, immediates after the batch's data, peer death → UNAVAILABLE), no threads.
#pragma once

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "config/config.h"
#include "rdma/endpoint_blob.h"
#include "rdma/event_queue.h"
#include "rdma/region_table.h"
#include "rdma/transport.h"
#include "rdma/transport_base.h"

namespace kvferry::rdma {

class LoopbackTransport;

// The "network" of loopback endpoints. Shared (shared_ptr) by every endpoint on it.
class LoopbackFabric {
 public:
  void join(uint64_t endpoint_id, LoopbackTransport* endpoint);
  void leave(uint64_t endpoint_id);
  // Runs fn(target) with the target endpoint kept alive, or returns UNAVAILABLE.
  template <typename Fn>
  Status withEndpoint(uint64_t endpoint_id, Fn&& fn) {
    std::shared_lock lock(mu_);
    auto it = endpoints_.find(endpoint_id);
    if (it == endpoints_.end()) {
      return unavailable("loopback endpoint " + std::to_string(endpoint_id) + " is gone");
    }
    return fn(*it->second);
  }

 private:
  std::shared_mutex mu_;
  std::unordered_map<uint64_t, LoopbackTransport*> endpoints_;
};

class LoopbackTransport final : public TransportBase {
 public:
  LoopbackTransport(const config::TransportConfig& config, std::shared_ptr<LoopbackFabric> fabric);
  ~LoopbackTransport() override;
  LoopbackTransport(const LoopbackTransport&) = delete;
  LoopbackTransport& operator=(const LoopbackTransport&) = delete;

  std::string_view name() const override { return "loopback"; }
  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override;
  Result<EndpointBlob> localBlob() const override { return blobWithAddress(""); }
  Result<PeerId> connect(const EndpointBlob& peer_blob) override;
  Status disconnect(PeerId peer) override;

 protected:
  Status post(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) override;

 private:
  // The target's half of a batch, run under the fabric lock: checks and copies every op.
  Status serve(std::span<const TransferOp> ops, const BatchPins& local, bool is_read,
               std::optional<uint32_t> imm, uint64_t source_id);

  const std::shared_ptr<LoopbackFabric> fabric_;
  std::mutex peers_mu_;
  std::unordered_map<PeerId, EndpointInfo> peers_;
  PeerId next_peer_ = 1;
};

}  // namespace kvferry::rdma
