// Policy: picks the (prefill, decode) pair for one request. The same library runs in the
// orchestrator and in bench/routesim, so what the simulator measures is what production runs.
//
// Pure: no sockets, threads or clocks. A policy may keep state of its own (a rotation counter, a
// routing-history tree); it is owned by the scheduling thread and is not thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "orchestrator/scheduler/cluster_view.h"

namespace kvferry::scheduler {

struct Request {
  uint64_t id = 0;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  std::span<const uint64_t> block_hashes;  // chained hashes of the prompt's blocks, in order

  // KV blocks the decode node must hold for the whole sequence (prompt + output).
  uint64_t decodeBlocks(uint32_t block_tokens) const {
    uint64_t tokens = uint64_t{input_tokens} + output_tokens;
    return std::max<uint64_t>((tokens + block_tokens - 1) / block_tokens, block_hashes.size());
  }
};

// Prompt tokens a prefill computes when `cached_blocks` leading blocks are cached: the rest, and
// at least one (the last prompt token yields the first output token).
uint64_t prefillTokens(const Request& request, uint32_t cached_blocks, uint32_t block_tokens);

struct Decision {
  NodeId prefill = 0;
  NodeId decode = 0;
  bool colocated = false;                // prefill == decode: no KV transfer
  uint32_t predicted_cached_blocks = 0;  // on the prefill node, from the index
  double predicted_ttft_s = 0;           // kvferry's estimate; 0 when the policy makes none
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;
  // FAILED_PRECONDITION when no live node can prefill or decode the request.
  virtual Result<Decision> choose(const Request& request, const ClusterView& view) = 0;
};

// The fallback when no live node can prefill (every policy needs one): the whole request on one
// decode-capable node, colocated, which decode agents serve too. Among those that fit the
// sequence (Request::decodeBlocks), else among all, the one with the fewest decoding sequences,
// then the most free blocks, then the lowest id. FAILED_PRECONDITION when no live node can
// decode.
Result<Decision> chooseColocated(const Request& request, const ClusterView& view);
// Whether some live node can prefill (when not, chooseColocated is the only way to serve).
bool anyPrefillNode(const ClusterView& view);

// The policies makePolicy knows, in the order routesim reports them.
std::span<const std::string_view> policyNames();

// INVALID_ARGUMENT for an unknown name (the message lists the known ones). `seed` drives the
// random tie-breaks a policy documents (dynamo_kv_cost breaks ties at random, as Dynamo does).
Result<std::unique_ptr<Policy>> makePolicy(std::string_view name,
                                           const config::SchedulerConfig& config, uint64_t seed);

// The estimate kvferry minimises, exposed for tests and for routesim's predicted-vs-actual:
// prefill queue wait + uncached-suffix compute + transfer of the blocks the decode node lacks +
// decode admission wait (0 when it has room, unbounded when the sequence can never fit).
struct PairEstimate {
  uint32_t cached_blocks = 0;  // on the prefill node
  uint64_t transfer_blocks = 0;
  double ttft_s = 0;
  bool fits = false;  // the decode node has room for the sequence now
};
PairEstimate estimatePair(const Request& request, const ClusterView& view, NodeId prefill,
                          NodeId decode);

}  // namespace kvferry::scheduler
