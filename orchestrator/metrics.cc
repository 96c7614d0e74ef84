#include "orchestrator/metrics.h"

#include <utility>

namespace kvferry::orchestrator {
namespace {

using metrics::counter;
using metrics::counterFamily;
using metrics::gauge;
using metrics::histogram;
using prometheus::Histogram;

// Bucket upper bounds in seconds. TTFT and E2E from 1 ms (2 s is the default TTFT SLO, so it is a
// bound); ITL and TPOT 0.1 ms … 2 s.
Histogram::BucketBoundaries ttftBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60};
}
Histogram::BucketBoundaries e2eBuckets() {
  return {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300};
}
Histogram::BucketBoundaries tokenBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2};
}
Histogram::BucketBoundaries phaseBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2,      5,     10,   30,    60};
}
Histogram::BucketBoundaries routingBuckets() {
  return {1e-6, 2.5e-6, 5e-6,   1e-5, 2.5e-5, 5e-5,  1e-4, 2.5e-4,
          5e-4, 1e-3,   2.5e-3, 5e-3, 0.01,   0.025, 0.05, 0.1};
}

}  // namespace

OrchestratorMetrics::OrchestratorMetrics(prometheus::Registry& registry)
    : ttft_seconds(histogram(registry, "kvferry_request_ttft_seconds",
                             "Time to first token: request arrival to the first token, "
                             "successful requests.",
                             ttftBuckets())),
      tpot_seconds(histogram(registry, "kvferry_request_tpot_seconds",
                             "Time per output token after the first: (end - first token) / "
                             "(output tokens - 1), successful requests with 2+ tokens.",
                             tokenBuckets())),
      itl_seconds(histogram(registry, "kvferry_request_itl_seconds",
                            "Inter-token latency: time between consecutive tokens of a request "
                            "as the orchestrator receives them.",
                            tokenBuckets())),
      e2e_seconds(histogram(registry, "kvferry_request_e2e_seconds",
                            "End-to-end latency: request arrival to the last byte, successful "
                            "requests.",
                            e2eBuckets())),
      routing_decision_seconds(histogram(registry, "kvferry_routing_decision_seconds",
                                         "Time the scheduling policy takes to choose a "
                                         "(prefill, decode) pair.",
                                         routingBuckets())),
      retries(counter(registry, "kvferry_request_retries_total",
                      "Attempts on another pair after an attempt failed.")),
      resumes(counter(registry, "kvferry_request_resumes_total",
                      "Attempts that went on with an answer another pair had begun: the prompt "
                      "plus the tokens already produced.")),
      kv_corruptions(counter(registry, "kvferry_kv_corruptions_total",
                             "Attempts whose KV landed on the decode node differing from the "
                             "prefill's checksums (agent.kv_checksum): not decoded, retried on "
                             "another pair.")),
      colocated_fallbacks(counter(registry, "kvferry_colocated_fallbacks_total",
                                  "Attempts served whole (prefill and decode) on one decode "
                                  "node because no node that can prefill was alive.")),
      prompt_tokens(counter(registry, "kvferry_prompt_tokens_total",
                            "Prompt tokens of the requests scheduled on the cluster.")),
      generated_tokens(counter(registry, "kvferry_generated_tokens_total",
                               "Tokens generated for clients (streamed or returned).")),
      queued_requests(gauge(registry, "kvferry_admission_queued_requests",
                            "Requests waiting for an admission slot or for KV room (admitted "
                            "requests waiting for room included).")),
      inflight_requests(gauge(registry, "kvferry_admission_inflight_requests",
                              "Requests holding an admission slot (being served).")),
      requests_(prometheus::BuildCounter()
                    .Name("kvferry_requests_total")
                    .Help("OpenAI requests answered, by endpoint and HTTP status (499: the "
                          "client disconnected).")
                    .Register(registry)),
      node_up_(prometheus::BuildGauge()
                   .Name("kvferry_node_up")
                   .Help("1 while a registered node agent is alive, 0 once it missed its "
                         "heartbeats (a node that left on purpose has no series).")
                   .Register(registry)),
      node_kv_blocks_(prometheus::BuildGauge()
                          .Name("kvferry_node_kv_blocks")
                          .Help("KV blocks of an alive node by state, from its last heartbeat: "
                                "in_use (sequences prefilling or decoding), leased (reservations "
                                "not decoding yet), cached (a reusable prefix, evictable), free. "
                                "They sum to the node's KV capacity.")
                          .Register(registry)),
      predicted_cached_tokens_(counter(registry, "kvferry_predicted_cached_tokens_total",
                                       "Prompt tokens the policy predicted the prefill node "
                                       "had cached (predicted blocks x block_tokens).")),
      actual_cached_tokens_(counter(registry, "kvferry_actual_cached_tokens_total",
                                    "Prompt tokens the prefill node reported it had cached.")),
      cache_prediction_error_(
          histogram(registry, "kvferry_cache_prediction_error_tokens",
                    "|predicted - actual| cached prompt tokens per "
                    "attempt.",
                    {0, 1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536})) {
  auto& phases = prometheus::BuildHistogram()
                     .Name("kvferry_request_phase_seconds")
                     .Help(
                         "Time per request phase: queue (admission wait), prefill and "
                         "transfer (as the prefill agent reports them), decode (first token "
                         "to the end).")
                     .Register(registry);
  const Histogram::BucketBoundaries phase_buckets = phaseBuckets();
  const std::array<const char*, 4> phase_names{"queue", "prefill", "transfer", "decode"};
  for (size_t i = 0; i < phase_names.size(); ++i) {
    phases_[i] = &phases.Add({{"phase", phase_names[i]}}, phase_buckets);
  }
  // Every reason exists from the start (at 0), so rates and alerts see a series.
  auto& rejections = prometheus::BuildCounter()
                         .Name("kvferry_rejections_total")
                         .Help(
                             "Requests refused before scheduling: queue_full, "
                             "queue_timeout and key_limit (429), no_nodes and shutting_down "
                             "(503).")
                         .Register(registry);
  const std::array<const char*, kRejections> reasons{"queue_full", "queue_timeout", "no_nodes",
                                                     "shutting_down", "key_limit"};
  for (size_t i = 0; i < reasons.size(); ++i) {
    rejections_[i] = &rejections.Add({{"reason", reasons[i]}});
  }
}

void OrchestratorMetrics::countRequest(std::string_view endpoint, int http_status) {
  requests_.Add({{"endpoint", std::string(endpoint)}, {"status", std::to_string(http_status)}})
      .Increment();
}

void OrchestratorMetrics::observeCachePrediction(uint64_t predicted_tokens,
                                                 uint64_t actual_tokens) {
  predicted_cached_tokens_.Increment(static_cast<double>(predicted_tokens));
  actual_cached_tokens_.Increment(static_cast<double>(actual_tokens));
  const uint64_t error = predicted_tokens > actual_tokens ? predicted_tokens - actual_tokens
                                                          : actual_tokens - predicted_tokens;
  cache_prediction_error_.Observe(static_cast<double>(error));
}

void OrchestratorMetrics::syncNodes(const NodeRegistry& registry) {
  for (const NodeRecord& node : registry.nodes()) {
    NodeSeries& series = nodes_[node.id];
    const std::string id = std::to_string(node.id);
    if (node.liveness == NodeLiveness::kLeft || node.forgotten) {
      if (series.up != nullptr) node_up_.Remove(std::exchange(series.up, nullptr));
    } else if (series.up == nullptr) {
      series.up = &node_up_.Add(
          {{"node", id}, {"name", node.registration.name}, {"role", node.registration.role}});
    }
    if (series.up != nullptr) series.up->Set(node.liveness == NodeLiveness::kAlive ? 1 : 0);

    if (node.liveness != NodeLiveness::kAlive) {
      for (prometheus::Gauge*& gauge : series.kv) {
        if (gauge != nullptr) node_kv_blocks_.Remove(std::exchange(gauge, nullptr));
      }
      continue;
    }
    if (series.kv[0] == nullptr) {
      const std::string& name = node.registration.name;
      for (size_t i = 0; i < kKvStates.size(); ++i) {
        series.kv[i] =
            &node_kv_blocks_.Add({{"node", id}, {"name", name}, {"state", kKvStates[i]}});
      }
    }
    const KvBlockStates states = kvBlockStates(node);
    const std::array<uint64_t, kKvStates.size()> values = {states.in_use, states.leased,
                                                           states.cached, states.free};
    for (size_t i = 0; i < kKvStates.size(); ++i) series.kv[i]->Set(static_cast<double>(values[i]));
  }
}

}  // namespace kvferry::orchestrator
