// Several NICs per endpoint (config `transport.rails`): one backend transport per rail (a NIC: an
// RDMA device for verbs, a local address for tcp), and a batch's bytes sliced over the rails its
// peer is reachable on, in proportion to each rail's measured throughput.
//
// - A batch of at least stripe_min_bytes is cut at byte boundaries (an op may be split in two)
//   into one slice per usable rail, all posted at once; a smaller one goes whole, with its
//   immediate, to the rail expected to finish it first (its queued bytes over its throughput).
// - An immediate must follow every byte of its batch: a sliced batch that carries one keeps its
//   last bytes (up to 4 KiB) back as the seal, posted with the immediate on one rail once every
//   other slice has completed (one round trip more than a batch on one rail).
// - A slice that fails as a link fails (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) puts
//   that rail in cooldown for the peer and is posted again on another rail; the batch fails only
//   when no rail is left, or when the target refuses an op (that is not the link's fault). A rail
//   in cooldown is connected afresh when the cooldown ends (in the background).
// - One completion per batch, after all its slices have settled (no write of it lands later).
//
// What it cannot promise that a single backend does: when a rail dies after the seal's immediate
// reached the target but before its completion came back, the seal is posted again and the
// target sees the immediate twice (the agent counts each layer once). An immediate's source_id is
// the initiator's rail's endpoint id, not the striped blob's. And verbs' GPU flush (a
// read before the immediate) runs on the seal's rail only, so a platform that needs it should use
// one rail.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// What one rail carried (tests and the shutdown log read it).
struct RailStats {
  uint64_t slices = 0;     // posted, seals included
  uint64_t bytes = 0;      // completed OK
  uint64_t failures = 0;   // slices that failed as a link fails
  double bytes_per_s = 0;  // the current throughput estimate (0: none yet)
};

// Stripes over `rails` (at least one; each a fresh transport with nothing registered) as
// `config` says: queue_depth, max_batch_ops, op_timeout_ms, stripe_min_bytes, rail_cooldown_ms
// (the rest is the rails'). Each rail's queue depth must be railQueueDepth() and its
// max_batch_ops max_batch_ops + 2 (a cut adds an op).
Result<std::unique_ptr<Transport>> makeStripedTransport(
    std::vector<std::unique_ptr<Transport>> rails, const config::TransportConfig& config);

// The batches a rail must hold: a striped batch keeps one slice on each rail, and when rails
// fail their slices move onto the others (and its seal follows them).
uint32_t railQueueDepth(uint32_t queue_depth, size_t rails);

// Per rail, for a transport made by makeStripedTransport(); empty for any other.
std::vector<RailStats> railStats(const Transport& transport);

// Cuts `ops` at byte boundaries into consecutive pieces of `shares[i]` bytes (their sum must be
// the ops' total): pieces[i] gets the ops, or parts of ops, of share i. Exposed for tests.
std::vector<std::vector<TransferOp>> sliceOps(std::span<const TransferOp> ops,
                                              std::span<const uint64_t> shares);

}  // namespace kvferry::rdma
