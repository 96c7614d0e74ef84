#include "rdma/loopback/loopback_transport.h"

#include <cstring>

#include "rdma/batch_check.h"

namespace kvferry::rdma {

void LoopbackFabric::join(uint64_t endpoint_id, LoopbackTransport* endpoint) {
  std::unique_lock lock(mu_);
  endpoints_[endpoint_id] = endpoint;
}

void LoopbackFabric::leave(uint64_t endpoint_id) {
  std::unique_lock lock(mu_);  // waits for copies into or out of this endpoint to finish
  endpoints_.erase(endpoint_id);
}

LoopbackTransport::LoopbackTransport(const config::TransportConfig& config,
                                     std::shared_ptr<LoopbackFabric> fabric)
    : config_(config),
      fabric_(std::move(fabric)),
      endpoint_id_(newEndpointId()),
      completions_(config.queue_depth) {
  fabric_->join(endpoint_id_, this);
}

LoopbackTransport::~LoopbackTransport() { fabric_->leave(endpoint_id_); }

Capabilities LoopbackTransport::capabilities() const {
  Capabilities caps;
  caps.max_batch_ops = config_.max_batch_ops;
  caps.queue_depth = config_.queue_depth;
  return caps;
}

Result<RegionId> LoopbackTransport::registerRegion(void* base, size_t bytes, MemoryKind kind) {
  if (kind.type != MemoryKind::Type::kHost) {
    return invalidArgument("the loopback transport registers host memory only");
  }
  return regions_.add(base, bytes, kind);
}

Status LoopbackTransport::deregisterRegion(RegionId region) {
  return regions_.remove(region, std::chrono::milliseconds(config_.op_timeout_ms));
}

Result<EndpointBlob> LoopbackTransport::localBlob() const {
  return encodeEndpoint(EndpointInfo{"loopback", endpoint_id_, regions_.describe(), {}});
}

Result<PeerId> LoopbackTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodeEndpoint(peer_blob));
  if (info.backend != name()) {
    return invalidArgument("blob is for the '" + info.backend + "' transport, not loopback");
  }
  RETURN_IF_ERROR(
      fabric_->withEndpoint(info.endpoint_id, [](LoopbackTransport&) { return Status::ok(); }));
  std::lock_guard lock(peers_mu_);
  PeerId id = next_peer_++;
  peers_.emplace(id, std::move(info));
  return id;
}

Status LoopbackTransport::disconnect(PeerId peer) {
  std::lock_guard lock(peers_mu_);
  if (peers_.erase(peer) == 0) return notFound("no peer " + std::to_string(peer));
  return Status::ok();  // batches complete synchronously: none can be pending
}

Status LoopbackTransport::postWrite(PeerId peer, std::span<const TransferOp> ops,
                                    std::optional<uint32_t> imm, uint64_t cookie) {
  return post(peer, ops, imm, cookie, Direction::kWrite);
}

Status LoopbackTransport::postRead(PeerId peer, std::span<const TransferOp> ops, uint64_t cookie) {
  return post(peer, ops, std::nullopt, cookie, Direction::kRead);
}

Status LoopbackTransport::post(PeerId peer, std::span<const TransferOp> ops,
                               std::optional<uint32_t> imm, uint64_t cookie, Direction dir) {
  const char* what = dir == Direction::kWrite ? "write" : "read";
  uint64_t target_id = 0;
  BatchPins local_pins;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return notFound("no peer " + std::to_string(peer));
    RETURN_IF_ERROR(checkBatch(ops, config_.max_batch_ops, regions_, it->second, what, local_pins));
    target_id = it->second.endpoint_id;
  }
  if (!completions_.tryAcquire()) {
    return resourceExhausted("queue depth " + std::to_string(config_.queue_depth) +
                             " reached; poll completions first");
  }
  Status result = fabric_->withEndpoint(target_id, [&](LoopbackTransport& target) {
    return target.serve(ops, local_pins, dir, imm, endpoint_id_);
  });
  completions_.push(Completion{cookie, std::move(result)});
  return Status::ok();
}

Status LoopbackTransport::serve(std::span<const TransferOp> ops, const BatchPins& local,
                                Direction dir, std::optional<uint32_t> imm, uint64_t source_id) {
  const char* what = dir == Direction::kWrite ? "write" : "read";
  // Check the whole batch before touching memory: a refused batch applies nothing.
  BatchPins remote;
  for (const TransferOp& op : ops) {
    RETURN_IF_ERROR(remote.add(regions_, op.remote_region, op.remote_offset, op.length, what));
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    if (dir == Direction::kWrite) {
      std::memcpy(remote.data(i), local.data(i), ops[i].length);
    } else {
      std::memcpy(local.data(i), remote.data(i), ops[i].length);
    }
  }
  if (imm) immediates_.push(ImmediateEvent{source_id, *imm});
  return Status::ok();
}

size_t LoopbackTransport::pollCompletions(std::span<Completion> out,
                                          std::chrono::microseconds wait) {
  return completions_.pop(out, wait);
}

size_t LoopbackTransport::pollImmediates(std::span<ImmediateEvent> out,
                                         std::chrono::microseconds wait) {
  return immediates_.pop(out, wait);
}

}  // namespace kvferry::rdma
