// The decode side of a KV transfer (DESIGN.md §2, steps 3 and 5): leases on the engine's blocks
// for prompts another agent prefills, the immediates that say a layer has landed, and the
// deadlines. When every layer of a lease has landed and its /agent/decode has arrived, the
// lease's imported sequence is committed and handed on through the `on_landed` callback (the
// agent wires it to the batch loop, so the receiver knows nothing of what decodes).
//
// A lease that ends (release, cancel, expiry) while some layers are still missing is
// QUARANTINED: its blocks stay held until the missing immediates arrive or `quarantine` (the
// writer's op timeout + 1 s) has passed, so no later sequence receives a late write — unless the
// release says the writer is done (its prefill answered that every write it posted settled):
// then the blocks are free at once, so one failed prefill does not hold them for seconds. An
// immediate for a slot with no lease (a write that arrived after its quarantine) is dropped.
//
// A decode request that carries the prefill's KV checksums (agent.kv_checksum on the prefill
// agent) is checked against the landed blocks before the import is committed: a mismatch ends
// the lease with code kv_corrupt and frees its blocks; nothing is decoded from them.
//
// Thread: the engine thread owns it; the agent posts each polled immediate to onImmediate().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/control_wire.h"
#include "node_agent/channels.h"
#include "node_agent/engine/engine.h"
#include "node_agent/kv_transfer/kv_checksum.h"
#include "node_agent/metrics.h"
#include "rdma/transport.h"

namespace kvferry::agent::kv_transfer {

class KvReceiver {
 public:
  using Clock = std::chrono::steady_clock;

  // A lease whose KV has landed and whose import is committed: the sequence is the taker's.
  struct Landed {
    engine::SequenceId seq = 0;
    wire::DecodeRequest decode;
    std::shared_ptr<Stream> stream;
  };
  using OnLanded = std::function<void(Landed)>;

  // `regions` are this agent's KV regions (K0, V0, K1, V1, …) as reservations name them.
  KvReceiver(engine::Engine& engine, std::vector<rdma::RegionId> regions,
             std::chrono::milliseconds quarantine, AgentMetrics& metrics, OnLanded on_landed);

  // /agent/reserve: blocks for the prompt (its cached prefix taken from the prefix cache), a
  // slot, a deadline. 503 when the pool (code kv_capacity) or the slots are full, 400 for a bad
  // prompt.
  Reply reserve(const wire::ReserveRequest& request);
  // /agent/decode: attaches the stream; the lease is handed on once every layer has landed. An
  // unknown, ended or already attached lease gets an error line.
  void decode(const wire::DecodeRequest& request, std::shared_ptr<Stream> stream);
  // /agent/release: ends the lease (idempotent); `writer_done`: no write into it can land any
  // more, so its blocks are free at once, quarantined or not.
  void release(uint64_t lease_id, bool writer_done) { endLease(lease_id, "released", writer_done); }
  // Ends every lease of the request; true when there was one.
  bool cancel(uint64_t request_id);
  // Ends every lease not already ended (quarantined where writes into it may still land); how
  // many it ended.
  size_t endAll(std::string_view why);

  // One immediate polled from the transport.
  void onImmediate(const rdma::ImmediateEvent& event);
  // Ends leases past their deadline and frees quarantined ones past theirs. Scans at most every
  // 10 ms.
  void expire(Clock::time_point now);

  size_t leaseCount() const { return leases_.size(); }  // quarantined ones included
  uint32_t leasedBlocks() const;
  // Reservations granted so far: the last one's ReserveResponse::kv_sequence (wire::Load's).
  uint64_t reservationsGranted() const { return reservations_granted_; }

 private:
  struct Lease {
    uint64_t id = 0;
    uint64_t request_id = 0;
    uint32_t slot = 0;
    engine::SequenceId seq = 0;
    uint32_t blocks = 0;
    uint32_t cached_blocks = 0;  // leading blocks this agent had: not written by the transfer
    Clock::time_point deadline;
    uint32_t expected_layers = 0;  // 0 when every block was cached here: nothing to wait for
    std::vector<bool> landed;
    uint32_t landed_count = 0;
    std::shared_ptr<Stream> stream;  // set once /agent/decode arrived
    wire::DecodeRequest decode;
    bool quarantined = false;
  };
  using LeaseMap = std::unordered_map<uint64_t, Lease>;

  void handOn(Lease& lease);
  // OK, or why the landed KV differs from the decode request's checksums (DATA_LOSS).
  Status checkLandedKv(const Lease& lease);
  // Ends a lease that will not decode: tells a waiting stream why (with `code`), frees or
  // quarantines it.
  void endLease(uint64_t lease_id, std::string_view why, bool writer_done = false,
                std::string_view code = {});
  void freeLease(LeaseMap::iterator it);

  engine::Engine& engine_;
  const std::vector<rdma::RegionId> regions_;
  const std::chrono::milliseconds quarantine_;
  AgentMetrics& metrics_;
  const OnLanded on_landed_;
  KvChecksummer checksummer_{engine_};  // checkLandedKv's
  LeaseMap leases_;
  std::unordered_map<uint32_t, uint64_t> slot_leases_;
  uint32_t next_slot_ = 0;
  uint64_t next_lease_ = 1;
  uint64_t reservations_granted_ = 0;
  Clock::time_point last_expiry_scan_;
};

}  // namespace kvferry::agent::kv_transfer
