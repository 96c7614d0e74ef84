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
    : TransportBase(config), fabric_(std::move(fabric)) {
  fabric_->join(endpoint_id_, this);
}

LoopbackTransport::~LoopbackTransport() { fabric_->leave(endpoint_id_); }

Result<RegionId> LoopbackTransport::registerRegion(void* base, size_t bytes, MemoryKind kind) {
  if (kind.type != MemoryKind::Type::kHost) {
    return invalidArgument("the loopback transport registers host memory only");
  }
  return regions_.add(base, bytes, kind);
}

Result<PeerId> LoopbackTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodePeerBlob(peer_blob));
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

Status LoopbackTransport::post(PeerId peer, std::span<const TransferOp> ops,
                               std::optional<uint32_t> imm, uint64_t cookie, bool is_read) {
  const char* what = is_read ? "read" : "write";
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
    return target.serve(ops, local_pins, is_read, imm, endpoint_id_);
  });
  completions_.push(Completion{cookie, std::move(result)});
  return Status::ok();
}

Status LoopbackTransport::serve(std::span<const TransferOp> ops, const BatchPins& local,
                                bool is_read, std::optional<uint32_t> imm, uint64_t source_id) {
  const char* what = is_read ? "read" : "write";
  // Check the whole batch before touching memory: a refused batch applies nothing.
  BatchPins remote;
  for (const TransferOp& op : ops) {
    RETURN_IF_ERROR(remote.add(regions_, op.remote_region, op.remote_offset, op.length, what));
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    if (is_read) {
      std::memcpy(local.data(i), remote.data(i), ops[i].length);
    } else {
      std::memcpy(remote.data(i), local.data(i), ops[i].length);
    }
  }
  if (imm) immediates_.push(ImmediateEvent{source_id, *imm});
  return Status::ok();
}

}  // namespace kvferry::rdma
