// The node agent's Prometheus metrics (README "Metrics", dashboards/): every family is declared
// here and registered on the Registry passed to the constructor; the agent's parts update them
// where the events happen — on the engine thread the batch loop (KV blocks, decode steps), the
// prefill runner (prefills), the KV sender (transfers) and the agent (leases); on the io thread
// the control API (requests by kind and outcome).
//
// Threading: prometheus-cpp metrics are thread-safe, so any thread may update them. peer() adds
// series (it allocates): the KV sender calls it once per peer and keeps the result. The
// Registry must outlive this object.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/metrics.h"

namespace kvferry::agent {

class AgentMetrics {
 public:
  // `role` labels kvferry_agent_info.
  AgentMetrics(prometheus::Registry& registry, std::string_view role);
  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  // The control API's calls.
  enum class Kind { kReserve, kPrefill, kDecode, kGenerate, kRelease, kCancel };
  // ok: answered 2xx / the stream finished (stop or length); rejected: 503 (no KV room,
  // draining); cancelled: 409, or the stream was cancelled or its reader left; error: the rest.
  enum class Outcome { kOk, kRejected, kCancelled, kError };
  static Outcome outcomeOf(unsigned http_status);

  // Every kind × outcome exists from the start (at 0).
  void countRequest(Kind kind, Outcome outcome) {
    requests_[static_cast<size_t>(kind)][static_cast<size_t>(outcome)]->Increment();
  }

  // KV blocks in their four states (wire::Load, docs/control_plane.md): in use (sequences
  // prefilling or decoding), leased (reservations not decoding yet), cached (unused, holding a
  // reusable prefix: evictable), free (empty). They sum to the pool's size.
  void setKvBlocks(uint32_t in_use, uint32_t leased, uint32_t cached, uint32_t free) {
    kv_in_use_.Set(in_use);
    kv_leased_.Set(leased);
    kv_cached_.Set(cached);
    kv_free_.Set(free);
  }

  // The transfer counters of one destination (the decode node id of the prefill target).
  struct Peer {
    prometheus::Counter* bytes = nullptr;
    prometheus::Counter* batches = nullptr;  // one posted write batch (a layer's K and V)
    prometheus::Counter* errors = nullptr;   // prefills whose transfer to this peer failed
  };
  Peer peer(uint32_t node_id);

  prometheus::Histogram& decode_batch_sequences;  // sequences in one decode step
  prometheus::Histogram& decode_step_seconds;
  prometheus::Histogram& prefill_seconds;      // compute of one prefill
  prometheus::Counter& prefill_tokens;         // prompt tokens computed
  prometheus::Counter& prefill_cached_tokens;  // prompt tokens found in the prefix cache
  prometheus::Histogram& transfer_seconds;     // first post to last completion of a prefill
  prometheus::Counter& kv_checksum_failures;   // leases whose landed KV failed its checksum
  prometheus::Gauge& active_leases;
  prometheus::Gauge& decoding_sequences;

 private:
  prometheus::Family<prometheus::Counter>& transfer_bytes_;
  prometheus::Family<prometheus::Counter>& transfer_batches_;
  prometheus::Family<prometheus::Counter>& transfer_errors_;
  prometheus::Family<prometheus::Gauge>& kv_blocks_;
  prometheus::Gauge& kv_in_use_;
  prometheus::Gauge& kv_leased_;
  prometheus::Gauge& kv_cached_;
  prometheus::Gauge& kv_free_;
  std::array<std::array<prometheus::Counter*, 4>, 6> requests_{};
};

}  // namespace kvferry::agent
