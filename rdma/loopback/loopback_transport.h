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

class LoopbackTransport final : public Transport {
 public:
  LoopbackTransport(const config::TransportConfig& config, std::shared_ptr<LoopbackFabric> fabric);
  ~LoopbackTransport() override;
  LoopbackTransport(const LoopbackTransport&) = delete;
  LoopbackTransport& operator=(const LoopbackTransport&) = delete;

  std::string_view name() const override { return "loopback"; }
  Capabilities capabilities() const override;
  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override;
  Status deregisterRegion(RegionId region) override;
  Result<EndpointBlob> localBlob() const override;
  Result<PeerId> connect(const EndpointBlob& peer_blob) override;
  Status disconnect(PeerId peer) override;
  Status postWrite(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
                   uint64_t cookie) override;
  Status postRead(PeerId peer, std::span<const TransferOp> ops, uint64_t cookie) override;
  size_t pollCompletions(std::span<Completion> out, std::chrono::microseconds wait) override;
  size_t pollImmediates(std::span<ImmediateEvent> out, std::chrono::microseconds wait) override;

 private:
  enum class Direction { kWrite, kRead };
  Status post(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, Direction dir);
  // The target's half of a batch, run under the fabric lock: checks and copies every op.
  Status serve(std::span<const TransferOp> ops, const BatchPins& local, Direction dir,
               std::optional<uint32_t> imm, uint64_t source_id);

  const config::TransportConfig config_;
  const std::shared_ptr<LoopbackFabric> fabric_;
  const uint64_t endpoint_id_;
  RegionTable regions_;
  CompletionQueue completions_;
  ImmediateQueue immediates_;
  std::mutex peers_mu_;
  std::unordered_map<PeerId, EndpointInfo> peers_;
  PeerId next_peer_ = 1;
};

}  // namespace kvferry::rdma
