#include "node_agent/kv_transfer/kv_receiver.h"

#include <spdlog/spdlog.h>

#include "node_agent/kv_transfer/immediate.h"
#include "node_agent/kv_transfer/kv_checksum.h"
#include "node_agent/wire_engine.h"

namespace kvferry::agent::kv_transfer {

KvReceiver::KvReceiver(engine::Engine& engine, std::vector<rdma::RegionId> regions,
                       std::chrono::milliseconds quarantine, AgentMetrics& metrics,
                       OnLanded on_landed)
    : engine_(engine),
      regions_(std::move(regions)),
      quarantine_(quarantine),
      metrics_(metrics),
      on_landed_(std::move(on_landed)) {}

Reply KvReceiver::reserve(const wire::ReserveRequest& request) {
  const std::vector<model::TokenId> tokens = tokensOf(request.tokens);
  auto reservation = engine_.reserveImport(tokens);
  if (!reservation.isOk()) {
    const Status& s = reservation.status();
    const unsigned status = s.code() == StatusCode::kResourceExhausted ? 503 : 400;
    return errorReply(status, "reserve: " + s.message(), capacityCode(s), false);
  }
  auto view = engine_.sequence(reservation->id);
  if (slot_leases_.size() >= kSlotCount / 2) {
    engine_.release(reservation->id).ignoreError();
    return errorReply(503, "reserve: too many leases");
  }
  while (slot_leases_.contains(next_slot_)) next_slot_ = (next_slot_ + 1) % kSlotCount;
  Lease lease;
  lease.id = next_lease_++;
  lease.request_id = request.request_id;
  lease.slot = next_slot_;
  next_slot_ = (next_slot_ + 1) % kSlotCount;
  lease.seq = reservation->id;
  lease.blocks = static_cast<uint32_t>(view->block_ids.size());
  lease.cached_blocks = reservation->cached_blocks;
  lease.deadline = Clock::now() + std::chrono::milliseconds(request.lease_ms);
  const uint32_t layers = engine_.kvGeometry().layers;
  lease.expected_layers = reservation->cached_blocks < lease.blocks ? layers : 0;
  lease.landed.assign(layers, false);

  wire::ReserveResponse response;
  response.lease_id = lease.id;
  response.slot = lease.slot;
  response.block_ids.assign(view->block_ids.begin(), view->block_ids.end());
  response.cached_blocks = reservation->cached_blocks;
  response.regions.assign(regions_.begin(), regions_.end());
  response.kv_sequence = ++reservations_granted_;
  slot_leases_[lease.slot] = lease.id;
  leases_.emplace(lease.id, std::move(lease));
  return jsonReply(200, wire::encode(response));
}

void KvReceiver::decode(const wire::DecodeRequest& request, std::shared_ptr<Stream> stream) {
  auto it = leases_.find(request.lease_id);
  if (it == leases_.end()) {
    stream->emit(
        finishLine("error", "unknown or expired lease " + std::to_string(request.lease_id)), true);
    return;
  }
  Lease& lease = it->second;
  if (lease.quarantined) {
    stream->emit(finishLine("error", "lease " + std::to_string(request.lease_id) + " has ended"),
                 true);
    return;
  }
  if (lease.stream) {
    stream->emit(finishLine("error", "the lease is already being decoded"), true);
    return;
  }
  if (Status s = checkRngDraws(request.rng_draws, engine_.maxSequenceTokens()); !s.isOk()) {
    stream->emit(finishLine("error", s.message()), true);
    return;
  }
  lease.stream = std::move(stream);
  lease.decode = request;
  if (lease.landed_count == lease.expected_layers) handOn(lease);
}

void KvReceiver::onImmediate(const rdma::ImmediateEvent& event) {
  const SlotLayer at = decodeImmediate(event.imm);
  auto it = slot_leases_.find(at.slot);
  if (it == slot_leases_.end()) {
    spdlog::debug("node agent: immediate for slot {} with no lease (a late write)", at.slot);
    return;
  }
  Lease& lease = leases_.at(it->second);
  if (at.layer >= lease.landed.size() || lease.landed[at.layer]) {
    spdlog::warn("node agent: unexpected immediate (slot {}, layer {})", at.slot, at.layer);
    return;
  }
  lease.landed[at.layer] = true;
  ++lease.landed_count;
  if (lease.landed_count < lease.expected_layers) return;
  if (lease.quarantined) {
    freeLease(leases_.find(lease.id));  // the last late write landed
  } else if (lease.stream) {
    handOn(lease);
  }
}

void KvReceiver::handOn(Lease& lease) {
  const uint64_t lease_id = lease.id;
  if (Status s = checkLandedKv(lease); !s.isOk()) {
    // Only a mismatch is corrupt KV (the transfer's fault); a malformed request is not.
    const bool corrupt = s.code() == StatusCode::kDataLoss;
    if (corrupt) metrics_.kv_checksum_failures.Increment();
    spdlog::error("node agent: lease {} (request {}): {}", lease_id, lease.request_id, s.message());
    endLease(lease_id, s.message(), true, corrupt ? wire::error_code::kKvCorrupt : "");
    return;
  }
  if (Status s = engine_.commitImport(lease.seq); !s.isOk()) {
    endLease(lease_id, "commit: " + s.message());
    return;
  }
  Landed landed{lease.seq, std::move(lease.decode), std::move(lease.stream)};
  slot_leases_.erase(lease.slot);
  leases_.erase(lease_id);
  on_landed_(std::move(landed));
}

Status KvReceiver::checkLandedKv(const Lease& lease) {
  const std::vector<uint64_t>& expected = lease.decode.kv_checksums;
  if (expected.empty() || lease.expected_layers == 0) return Status();
  if (expected.size() != lease.expected_layers) {
    return invalidArgument("the decode request carries " + std::to_string(expected.size()) +
                           " KV checksums for " + std::to_string(lease.expected_layers) +
                           " layers");
  }
  auto view = engine_.sequence(lease.seq);
  if (!view.isOk()) return view.status();
  const auto sent = std::span<const uint32_t>(view->block_ids).subspan(lease.cached_blocks);
  ASSIGN_OR_RETURN(const std::vector<uint64_t> landed,
                   checksummer_.layers(0, lease.expected_layers, sent));
  for (uint32_t layer = 0; layer < lease.expected_layers; ++layer) {
    if (landed[layer] != expected[layer]) {
      return dataLoss(fmt::format(
          "the KV of layer {} arrived corrupt (checksum {:016x}, the prefill sent {:016x})", layer,
          landed[layer], expected[layer]));
    }
  }
  return Status();
}

void KvReceiver::endLease(uint64_t lease_id, std::string_view why, bool writer_done,
                          std::string_view code) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  Lease& lease = it->second;
  if (lease.quarantined && !writer_done) return;
  if (lease.stream) lease.stream->emit(finishLine("error", why, code), true);
  lease.stream.reset();
  if (lease.landed_count < lease.expected_layers && !writer_done) {
    lease.quarantined = true;
    lease.deadline = Clock::now() + quarantine_;
    return;
  }
  freeLease(it);
}

void KvReceiver::freeLease(LeaseMap::iterator it) {
  engine_.release(it->second.seq).ignoreError();
  slot_leases_.erase(it->second.slot);
  leases_.erase(it);
}

size_t KvReceiver::endAll(std::string_view why) {
  std::vector<uint64_t> ids;
  for (const auto& [id, lease] : leases_) {
    if (!lease.quarantined) ids.push_back(id);
  }
  for (uint64_t id : ids) endLease(id, why);
  return ids.size();
}

bool KvReceiver::cancel(uint64_t request_id) {
  std::vector<uint64_t> ids;
  for (const auto& [id, lease] : leases_) {
    if (lease.request_id == request_id) ids.push_back(id);
  }
  for (uint64_t id : ids) endLease(id, "cancelled");
  return !ids.empty();
}

void KvReceiver::expire(Clock::time_point now) {
  if (now - last_expiry_scan_ < std::chrono::milliseconds(10)) return;
  last_expiry_scan_ = now;
  std::vector<uint64_t> expired;
  for (const auto& [id, lease] : leases_) {
    if (now >= lease.deadline) expired.push_back(id);
  }
  for (uint64_t id : expired) {
    const Lease& lease = leases_.at(id);
    if (lease.quarantined) {
      spdlog::warn(
          "node agent: lease {} (request {}): {} of {} layers landed; its blocks are "
          "free again after the writer's timeout",
          id, lease.request_id, lease.landed_count, lease.expected_layers);
      freeLease(leases_.find(id));
      continue;
    }
    const std::string why = "the KV did not arrive within the lease (" +
                            std::to_string(lease.landed_count) + " of " +
                            std::to_string(lease.expected_layers) + " layers landed)";
    spdlog::warn("node agent: lease {} (request {}) expired: {}", id, lease.request_id, why);
    endLease(id, why);
  }
}

uint32_t KvReceiver::leasedBlocks() const {
  uint32_t blocks = 0;
  for (const auto& [id, lease] : leases_) blocks += lease.blocks;
  return blocks;
}

}  // namespace kvferry::agent::kv_transfer
