#include "node_agent/metrics.h"

namespace kvferry::agent {
namespace {

using metrics::counter;
using metrics::counterFamily;
using metrics::gauge;
using metrics::histogram;
using prometheus::Histogram;

// Bucket upper bounds in seconds: a decode step 0.1 ms … 2 s, a prefill 0.1 ms … 60 s, a KV
// transfer 10 µs … 10 s.
Histogram::BucketBoundaries stepBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2};
}
Histogram::BucketBoundaries prefillBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2,      5,     10,   30,    60};
}
Histogram::BucketBoundaries transferBuckets() {
  return {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
          0.01,    0.025,    0.05,    0.1,    0.25,    0.5,    1,     2.5,    10};
}

}  // namespace

AgentMetrics::Outcome AgentMetrics::outcomeOf(unsigned http_status) {
  if (http_status >= 200 && http_status < 300) return Outcome::kOk;
  if (http_status == 409) return Outcome::kCancelled;
  if (http_status == 503) return Outcome::kRejected;
  return Outcome::kError;
}

AgentMetrics::AgentMetrics(prometheus::Registry& registry, std::string_view role)
    : decode_batch_sequences(histogram(registry, "kvferry_agent_decode_batch_sequences",
                                       "Sequences in one decode step (the continuous batch).",
                                       {1, 2, 4, 8, 16, 32, 64, 128, 256, 512})),
      decode_step_seconds(histogram(registry, "kvferry_agent_decode_step_seconds",
                                    "Time of one batched decode step.", stepBuckets())),
      prefill_seconds(histogram(registry, "kvferry_agent_prefill_seconds",
                                "Compute time of one prefill (split or colocated).",
                                prefillBuckets())),
      prefill_tokens(counter(registry, "kvferry_agent_prefill_tokens_total",
                             "Prompt tokens prefilled (computed, not found in the cache).")),
      prefill_cached_tokens(counter(registry, "kvferry_agent_prefill_cached_tokens_total",
                                    "Prompt tokens whose KV the prefix cache already held.")),
      transfer_seconds(histogram(registry, "kvferry_agent_transfer_seconds",
                                 "KV transfer of one prefill: first layer posted to the last "
                                 "write completed.",
                                 transferBuckets())),
      kv_checksum_failures(counter(registry, "kvferry_agent_kv_checksum_failures_total",
                                   "Leases whose landed KV differed from the prefill's checksums "
                                   "(agent.kv_checksum): refused, never decoded.")),
      active_leases(gauge(registry, "kvferry_agent_active_leases",
                          "Decode reservations (leases) waiting for their KV or their decode "
                          "call.")),
      decoding_sequences(gauge(registry, "kvferry_agent_decoding_sequences",
                               "Sequences in the continuous decode batch.")),
      transfer_bytes_(counterFamily(registry, "kvferry_agent_transfer_bytes_total",
                                    "KV bytes posted to a peer (peer: the decode node id).")),
      transfer_batches_(counterFamily(registry, "kvferry_agent_transfer_batches_total",
                                      "Write batches (one layer's K and V) posted to a peer.")),
      transfer_errors_(counterFamily(registry, "kvferry_agent_transfer_errors_total",
                                     "Prefills whose KV transfer to a peer failed (connect, "
                                     "post or completion error).")),
      kv_blocks_(prometheus::BuildGauge()
                     .Name("kvferry_agent_kv_blocks")
                     .Help("KV pool blocks by state: in_use (sequences prefilling or "
                           "decoding), leased (reservations not decoding yet), cached (unused, "
                           "reusable prefix, evictable), free (empty). They sum to the pool.")
                     .Register(registry)),
      kv_in_use_(kv_blocks_.Add({{"state", "in_use"}})),
      kv_leased_(kv_blocks_.Add({{"state", "leased"}})),
      kv_cached_(kv_blocks_.Add({{"state", "cached"}})),
      kv_free_(kv_blocks_.Add({{"state", "free"}})) {
  prometheus::BuildGauge()
      .Name("kvferry_agent_info")
      .Help("Always 1; labels describe the agent.")
      .Register(registry)
      .Add({{"role", std::string(role)}})
      .Set(1);
  auto& requests = counterFamily(registry, "kvferry_agent_requests_total",
                                 "Control API calls by kind and outcome.");
  const std::array<const char*, 6> kinds{"reserve",  "prefill", "decode",
                                         "generate", "release", "cancel"};
  const std::array<const char*, 4> outcomes{"ok", "rejected", "cancelled", "error"};
  for (size_t k = 0; k < kinds.size(); ++k) {
    for (size_t o = 0; o < outcomes.size(); ++o) {
      requests_[k][o] = &requests.Add({{"kind", kinds[k]}, {"outcome", outcomes[o]}});
    }
  }
}

AgentMetrics::Peer AgentMetrics::peer(uint32_t node_id) {
  const prometheus::Labels labels{{"peer", std::to_string(node_id)}};
  return {&transfer_bytes_.Add(labels), &transfer_batches_.Add(labels),
          &transfer_errors_.Add(labels)};
}

}  // namespace kvferry::agent
