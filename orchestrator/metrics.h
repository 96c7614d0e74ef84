// The orchestrator's Prometheus metrics (README "Metrics", dashboards/): every family is declared
// here, registered on the Registry passed to the constructor, and updated by the code that sees
// the event — server.cc (requests by status, rejections, admission wait, and at each scrape the
// gauges that mirror the admission queue and the node registry) and request_flow.cc (latencies,
// phases, routing time, cache prediction, retries).
//
// Threading: prometheus-cpp metrics are thread-safe; the orchestrator updates them on its
// io_context thread, and syncNodes() must run there too (it keeps a per-node table). The Registry
// must outlive this object.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/metrics.h"
#include "orchestrator/registry.h"

namespace kvferry::orchestrator {

class OrchestratorMetrics {
 public:
  explicit OrchestratorMetrics(prometheus::Registry& registry);
  OrchestratorMetrics(const OrchestratorMetrics&) = delete;
  OrchestratorMetrics& operator=(const OrchestratorMetrics&) = delete;

  enum class Phase { kQueue, kPrefill, kTransfer, kDecode };
  enum class Rejection { kQueueFull, kQueueTimeout, kNoNodes, kShuttingDown, kKeyLimit };
  static constexpr size_t kRejections = static_cast<size_t>(Rejection::kKeyLimit) + 1;

  // One answered OpenAI request: `endpoint` is its path, `http_status` what the client got
  // (499: the client left).
  void countRequest(std::string_view endpoint, int http_status);
  void countRejection(Rejection reason) { rejections_[static_cast<size_t>(reason)]->Increment(); }
  void observePhase(Phase phase, double seconds) {
    phases_[static_cast<size_t>(phase)]->Observe(seconds);
  }
  // The policy's predicted cached prefix (blocks × block_tokens) against what the prefill node
  // reported it had.
  void observeCachePrediction(uint64_t predicted_tokens, uint64_t actual_tokens);
  // Mirrors the registry: kvferry_node_up is 1 for an alive node and 0 for a dead one; a node
  // that left on purpose, or one forgotten (registry.forget_after_ms), loses its series. KV gauges
  // exist for alive nodes only.
  void syncNodes(const NodeRegistry& registry);

  // Per request, from arrival at the orchestrator (successful requests only).
  prometheus::Histogram& ttft_seconds;
  prometheus::Histogram& tpot_seconds;  // (end − first token) / (output tokens − 1)
  prometheus::Histogram& itl_seconds;   // between consecutive tokens as they reach the client
  prometheus::Histogram& e2e_seconds;
  prometheus::Histogram& routing_decision_seconds;  // one Policy::choose call
  prometheus::Counter& retries;                     // attempts after a failed one
  prometheus::Counter& resumes;                     // of those, ones that went on mid-answer
  prometheus::Counter& kv_corruptions;       // attempts whose KV landed corrupt (code kv_corrupt)
  prometheus::Counter& colocated_fallbacks;  // attempts served whole on a decode node: no prefill
                                             // node was alive
  prometheus::Counter& prompt_tokens;        // of every request scheduled
  prometheus::Counter& generated_tokens;     // sent to clients
  prometheus::Gauge& queued_requests;        // waiting for admission
  prometheus::Gauge& inflight_requests;      // holding an admission slot

 private:
  // kvferry_node_kv_blocks' states, as wire::Load defines them; they sum to the node's total.
  static constexpr std::array<const char*, 4> kKvStates = {"in_use", "leased", "cached", "free"};
  struct NodeSeries {
    prometheus::Gauge* up = nullptr;
    std::array<prometheus::Gauge*, kKvStates.size()> kv{};
  };

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Gauge>& node_up_;
  prometheus::Family<prometheus::Gauge>& node_kv_blocks_;
  prometheus::Counter& predicted_cached_tokens_;
  prometheus::Counter& actual_cached_tokens_;
  prometheus::Histogram& cache_prediction_error_;
  std::array<prometheus::Histogram*, 4> phases_{};
  std::array<prometheus::Counter*, kRejections> rejections_{};
  std::map<NodeId, NodeSeries> nodes_;
};

}  // namespace kvferry::orchestrator
