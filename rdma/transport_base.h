// What every backend has in common, written once: the config, the endpoint id, the region
// table, the completion and immediate queues, the post/poll entry points and the blob codec.
// A backend implements registration, connect/disconnect and post().
#pragma once

#include <chrono>
#include <string>

#include "config/config.h"
#include "rdma/endpoint_blob.h"
#include "rdma/event_queue.h"
#include "rdma/region_table.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

class TransportBase : public Transport {
 public:
  explicit TransportBase(const config::TransportConfig& config)
      : config_(config), endpoint_id_(newEndpointId()), completions_(config.queue_depth) {}

  Capabilities capabilities() const override {
    Capabilities caps;
    caps.max_batch_ops = config_.max_batch_ops;
    caps.queue_depth = config_.queue_depth;
    return caps;
  }

  Status deregisterRegion(RegionId region) override {
    return regions_.remove(region, std::chrono::milliseconds(config_.op_timeout_ms));
  }

  Status postWrite(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
                   uint64_t cookie) final {
    return post(peer, ops, imm, cookie, /*is_read=*/false);
  }
  Status postRead(PeerId peer, std::span<const TransferOp> ops, uint64_t cookie) final {
    return post(peer, ops, std::nullopt, cookie, /*is_read=*/true);
  }
  size_t pollCompletions(std::span<Completion> out, std::chrono::microseconds wait) final {
    return completions_.pop(out, wait);
  }
  size_t pollImmediates(std::span<ImmediateEvent> out, std::chrono::microseconds wait) final {
    return immediates_.pop(out, wait);
  }

 protected:
  // One batch: checks, then sends or queues it. Errors returned here mean nothing was sent.
  virtual Status post(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
                      uint64_t cookie, bool is_read) = 0;

  // This endpoint's blob, with `address` as the backend-specific part.
  Result<EndpointBlob> blobWithAddress(const std::string& address) const {
    return encodeEndpoint(EndpointInfo{std::string(name()), endpoint_id_, regions_.describe(),
                                       std::vector<uint8_t>(address.begin(), address.end())});
  }

  // Decodes a peer's blob; INVALID_ARGUMENT when it is malformed or from another backend.
  Result<EndpointInfo> decodePeerBlob(const EndpointBlob& blob) const {
    ASSIGN_OR_RETURN(EndpointInfo info, decodeEndpoint(blob));
    if (info.backend != name()) {
      return invalidArgument("blob is for the '" + info.backend + "' transport, not " +
                             std::string(name()));
    }
    return info;
  }

  const config::TransportConfig config_;
  const uint64_t endpoint_id_;
  RegionTable regions_;
  CompletionQueue completions_;
  ImmediateQueue immediates_;
};

}  // namespace kvferry::rdma
