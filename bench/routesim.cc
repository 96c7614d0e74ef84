// routesim: replays a Mooncake-format request trace through the scheduler library the
// orchestrator runs (orchestrator/scheduler/), over a discrete-event model of N prefill and M
// decode nodes, and reports TTFT/TPOT, goodput under an SLO, prefix hit rate and more per policy.
//
// The model (docs/routesim.md has the details and the reasons):
// - every node has a KV cache of kv_blocks_per_node blocks with LRU eviction of unpinned blocks;
//   each insert/evict is published as a KV event batch to the PrefixIndex the policies read;
// - prefill runs FIFO per node, one request at a time, taking a + b·u + c·(u² + 2·u·k) seconds
//   for u new tokens after k cached ones (the policies' t(n) model is the k = 0 case);
// - after its prefill a request waits until its decode node has room for prompt + output
//   blocks, then its missing blocks cross that pair's link (one transfer at a time per link);
//   it joins the decode batch then: that moment is its first token (TTFT);
// - a decode node runs queued prefills (colocated requests) before its next step, then one step
//   of its whole batch: step_fixed + per_sequence·batch + per_context_token·Σcontext seconds.
// Single-threaded and deterministic: ties in the event queue break by insertion order.
#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <list>
#include <memory>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench/mooncake_trace.h"
#include "bench/percentile.h"
#include "common/status.h"
#include "config/config.h"
#include "model/block_hash.h"
#include "orchestrator/scheduler/policy.h"

namespace kvferry::routesim {
namespace {

using scheduler::ClusterView;
using scheduler::Decision;
using scheduler::KvEvent;
using scheduler::KvEventBatch;
using scheduler::KvEventKind;
using scheduler::NodeId;
using scheduler::NodeRole;
using scheduler::NodeState;
using scheduler::Policy;
using scheduler::PrefixIndex;

constexpr std::string_view kUsage =
    R"(usage: routesim --trace FILE --cluster FILE.yaml --policies LIST|all --rate-scale X
                [--json OUT] [--seed N] [--max-requests N]

Replays a Mooncake-format trace (JSONL: timestamp in ms, input_length, output_length, hash_ids
with one id per 512-token block) through the orchestrator's scheduling policies over a simulated
cluster described by the YAML file (see config/examples/routesim_h100_llama3_8b.yaml).
Prints one row per policy, then reference rows: every request prefilled alone on an idle GPU
with no cache, with all nodes' KV pooled into one cache (LRU, or clairvoyant eviction), and with
a cache that never forgets, the last a floor for every policy (docs/routesim.md).

  --trace FILE        the JSONL trace
  --cluster FILE      cluster, cost models, SLO and scheduler knobs (YAML)
  --policies LIST     comma-separated: round_robin, least_loaded, sglang_cache_aware,
                      dynamo_kv_cost, kvferry; or all
  --rate-scale X      arrival-rate multiplier: 2 replays the trace twice as fast (X > 0)
  --json OUT          also write the results as JSON to OUT
  --seed N            seed for the policies' random tie-breaks (default 1)
  --max-requests N    replay only the first N requests (default: all)
)";

struct Options {
  bool help = false;
  std::string trace;
  std::string cluster;
  std::vector<std::string> policies;
  double rate_scale = 0;
  std::string json;
  uint64_t seed = 1;
  uint64_t max_requests = UINT64_MAX;
};

struct TraceRequest {
  double arrival_s = 0;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  std::vector<uint64_t> block_hashes;  // chained, so equal hashes mean equal prefixes
};

// Mooncake ids name blocks; chaining them makes a block's hash name its whole prefix, as the
// real block-hash chain does (model/block_hash.h).
uint64_t chainHash(uint64_t parent, uint64_t id) {
  uint64_t x = parent ^ (id + 0x9e3779b97f4a7c15ULL + (parent << 6) + (parent >> 2));
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

Result<std::vector<TraceRequest>> loadTrace(const std::string& path, double rate_scale,
                                            uint64_t max_requests) {
  ASSIGN_OR_RETURN(std::vector<bench::TraceRecord> records,
                   bench::readMooncakeTrace(path, max_requests));
  std::vector<TraceRequest> out;
  out.reserve(records.size());
  for (const bench::TraceRecord& record : records) {
    TraceRequest request;
    request.arrival_s = static_cast<double>(record.timestamp_ms) / 1000.0 / rate_scale;
    request.input_tokens = record.input_length;
    request.output_tokens = std::max<uint32_t>(record.output_length, 1);
    uint64_t parent = model::kBlockHashRoot;
    for (uint64_t id : record.hash_ids) {
      parent = chainHash(parent, id);
      request.block_hashes.push_back(parent);
    }
    out.push_back(std::move(request));
  }
  return out;
}

// What a prefill of `input_tokens` costs when its first `hit_blocks` blocks are cached: the
// u = new tokens pay a + b·u + c·(u² + 2·u·k) after k cached ones (attention over the cached
// prefix included); at least one token is always computed.
double prefillSeconds(const config::RouteSimConfig& config, uint32_t input_tokens,
                      uint32_t hit_blocks) {
  double cached = static_cast<double>(
      std::min<uint64_t>(uint64_t{hit_blocks} * config.block_tokens, input_tokens));
  double fresh = std::max(input_tokens - cached, 1.0);
  return config.prefill_fixed_s + config.prefill_per_token_s * fresh +
         config.prefill_per_token_squared_s * (fresh * fresh + 2 * fresh * cached);
}

// A node's KV cache: blocks named by hash, pinned while a request uses them, otherwise kept in
// LRU order and evicted when room is needed; anonymous blocks (generated tokens) are only
// reserved. Every insert and eviction is appended to `events` for the PrefixIndex.
class KvCache {
 public:
  explicit KvCache(uint64_t capacity) : capacity_(capacity) {}

  uint32_t prefixHits(const std::vector<uint64_t>& hashes) const {
    return scheduler::leadingBlocks(hashes, [&](uint64_t hash) { return entries_.contains(hash); });
  }
  uint64_t freeBlocks() const { return capacity_ - pinned_ - anonymous_; }
  uint64_t capacity() const { return capacity_; }

  // Pins `hashes` (inserting the missing ones) and reserves `anonymous` blocks; false, changing
  // nothing, when pinned blocks would exceed the capacity.
  bool acquire(const std::vector<uint64_t>& hashes, uint64_t anonymous,
               std::vector<KvEvent>& events) {
    uint64_t newly_pinned = 0;
    for (uint64_t hash : hashes) {
      auto it = entries_.find(hash);
      if (it == entries_.end() || it->second.pins == 0) ++newly_pinned;
    }
    if (pinned_ + newly_pinned + anonymous_ + anonymous > capacity_) return false;
    KvEvent stored{KvEventKind::kStored, {}};
    for (uint64_t hash : hashes) {
      auto [it, inserted] = entries_.try_emplace(hash);
      if (inserted) {
        stored.block_hashes.push_back(hash);
      } else if (it->second.pins == 0) {
        lru_.erase(it->second.lru);
      }
      if (it->second.pins++ == 0) ++pinned_;
    }
    anonymous_ += anonymous;
    KvEvent evicted{KvEventKind::kEvicted, {}};
    while (entries_.size() + anonymous_ > capacity_) {
      evicted.block_hashes.push_back(lru_.front());
      entries_.erase(lru_.front());
      lru_.pop_front();
    }
    if (!evicted.block_hashes.empty()) events.push_back(std::move(evicted));
    if (!stored.block_hashes.empty()) events.push_back(std::move(stored));
    return true;
  }

  void release(const std::vector<uint64_t>& hashes, uint64_t anonymous) {
    for (uint64_t hash : hashes) {
      Entry& entry = entries_.at(hash);
      if (--entry.pins == 0) {
        --pinned_;
        entry.lru = lru_.insert(lru_.end(), hash);
      }
    }
    anonymous_ -= anonymous;
  }

 private:
  struct Entry {
    uint32_t pins = 0;
    std::list<uint64_t>::iterator lru;  // valid while pins == 0
  };
  uint64_t capacity_;
  uint64_t pinned_ = 0;
  uint64_t anonymous_ = 0;
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // front: least recently used
};

struct PolicyResult {
  std::string name;
  std::vector<double> ttft_ms;
  std::vector<double> tpot_ms;
  uint64_t slo_met = 0;
  uint64_t requests = 0;
  uint64_t rejected = 0;
  uint64_t colocated = 0;
  uint64_t hit_blocks = 0;
  uint64_t prompt_blocks = 0;
  uint64_t transfer_bytes = 0;
  double duration_s = 1;
  double imbalance = 1;  // max / mean prefill busy time over prefill nodes
};

class Simulation {
 public:
  Simulation(const config::RouteSimConfig& config, const std::vector<TraceRequest>& trace,
             Policy& policy)
      : config_(config), trace_(trace), policy_(policy), requests_(trace.size()) {
    model_ = {config.prefill_fixed_s, config.prefill_per_token_s,
              config.prefill_per_token_squared_s};
    uint32_t count = config.prefill_nodes + config.decode_nodes;
    for (NodeId id = 0; id < count; ++id) {
      nodes_.push_back(
          std::make_unique<Node>(id < config.prefill_nodes ? NodeRole::kPrefill : NodeRole::kDecode,
                                 config.kv_blocks_per_node));
      index_.addNode(id);
    }
    link_free_s_.assign(size_t{count} * count, 0.0);
  }

  PolicyResult run() {
    result_.name = std::string(policy_.name());
    result_.requests = trace_.size();
    for (uint32_t r = 0; r < trace_.size(); ++r) push(trace_[r].arrival_s, EventKind::kArrival, r);
    while (!events_.empty()) {
      Event event = events_.top();
      events_.pop();
      now_s_ = event.time_s;
      switch (event.kind) {
        case EventKind::kArrival:
          arrive(event.target);
          break;
        case EventKind::kPrefillDone:
          prefillDone(event.target);
          break;
        case EventKind::kStepDone:
          stepDone(event.target);
          break;
        case EventKind::kTransferDone:
          transferDone(event.target);
          break;
      }
    }
    result_.duration_s = std::max(trace_.back().arrival_s - trace_.front().arrival_s, 1.0);
    double max_busy = 0;
    double sum_busy = 0;
    for (uint32_t id = 0; id < config_.prefill_nodes; ++id) {
      max_busy = std::max(max_busy, nodes_[id]->prefill_busy_s);
      sum_busy += nodes_[id]->prefill_busy_s;
    }
    result_.imbalance = sum_busy > 0 ? max_busy * config_.prefill_nodes / sum_busy : 1.0;
    return std::move(result_);
  }

 private:
  enum class EventKind { kArrival, kPrefillDone, kStepDone, kTransferDone };
  struct Event {
    double time_s;
    uint64_t order;
    EventKind kind;
    uint32_t target;  // request for arrivals and transfers, node otherwise
    bool operator>(const Event& other) const {
      return time_s != other.time_s ? time_s > other.time_s : order > other.order;
    }
  };

  struct Node {
    Node(NodeRole node_role, uint64_t capacity) : role(node_role), cache(capacity) {}
    NodeRole role;
    KvCache cache;
    uint64_t event_sequence = 0;
    bool busy = false;
    std::deque<uint32_t> prefill_queue;
    uint64_t queued_tokens = 0;  // predicted new tokens of queued + running prefills
    double queued_work_s = 0;    // predicted time of queued prefills
    double running_end_s = 0;    // end of the running prefill
    uint32_t running = UINT32_MAX;
    double prefill_busy_s = 0;
    std::deque<uint32_t> admission_queue;
    uint32_t incoming = 0;  // admitted, KV in flight
    std::vector<uint32_t> joining;
    std::vector<uint32_t> active;
    uint64_t context_tokens = 0;  // Σ context of `active`
  };

  struct RequestState {
    Decision decision;
    double predicted_s = 0;  // predicted prefill time, for the queue estimate
    uint64_t predicted_tokens = 0;
    bool prefill_pinned = false;
    uint64_t anonymous_blocks = 0;
    double first_token_s = 0;
    uint32_t generated = 0;
  };

  void push(double time_s, EventKind kind, uint32_t target) {
    events_.push(Event{time_s, next_order_++, kind, target});
  }

  void publish(NodeId id, std::vector<KvEvent>& events) {
    if (events.empty()) return;
    Node& node = *nodes_[id];
    index_.apply(KvEventBatch{id, ++node.event_sequence, std::move(events)});
    events.clear();
  }

  ClusterView view() const {
    std::vector<NodeState> states;
    for (const auto& node : nodes_) {
      NodeState state;
      state.role = node->role;
      state.queued_prefill_tokens = node->queued_tokens;
      state.queued_prefill_requests =
          static_cast<uint32_t>(node->prefill_queue.size()) + (node->running != UINT32_MAX);
      state.queued_prefill_s =
          node->queued_work_s + (node->running != UINT32_MAX ? node->running_end_s - now_s_ : 0);
      state.active_decode_seqs =
          static_cast<uint32_t>(node->active.size() + node->joining.size() + node->incoming +
                                node->admission_queue.size());
      state.free_kv_blocks = node->cache.freeBlocks();
      state.total_kv_blocks = node->cache.capacity();
      state.prefill_model = model_;
      states.push_back(state);
    }
    return ClusterView(std::move(states), config_.block_tokens,
                       uint64_t{config_.block_tokens} * config_.kv_bytes_per_token,
                       config_.link_bandwidth_bytes_per_s, index_);
  }

  void arrive(uint32_t r) {
    const TraceRequest& trace = trace_[r];
    scheduler::Request request{r, trace.input_tokens, trace.output_tokens, trace.block_hashes};
    uint64_t decode_blocks = request.decodeBlocks(config_.block_tokens);
    if (decode_blocks > config_.kv_blocks_per_node) {  // can never fit any node
      ++result_.rejected;
      return;
    }
    ClusterView cluster = view();
    Result<Decision> decision = policy_.choose(request, cluster);
    if (!decision.isOk()) {
      ++result_.rejected;
      return;
    }
    RequestState& state = requests_[r];
    state.decision = *decision;
    state.anonymous_blocks = decode_blocks - trace.block_hashes.size();
    state.predicted_tokens =
        scheduler::prefillTokens(request, decision->predicted_cached_blocks, config_.block_tokens);
    state.predicted_s = model_.seconds(state.predicted_tokens);
    if (decision->colocated) ++result_.colocated;
    Node& node = *nodes_[decision->prefill];
    node.prefill_queue.push_back(r);
    node.queued_tokens += state.predicted_tokens;
    node.queued_work_s += state.predicted_s;
    kick(decision->prefill);
  }

  void kick(NodeId id) {
    Node& node = *nodes_[id];
    if (node.busy) return;
    if (!node.prefill_queue.empty()) {
      startPrefill(id);
    } else if (!node.active.empty() || !node.joining.empty()) {
      for (uint32_t r : node.joining) node.active.push_back(r);
      for (uint32_t r : node.joining) node.context_tokens += trace_[r].input_tokens + 1;
      node.joining.clear();
      double step_s = config_.decode_step_fixed_s +
                      config_.decode_per_sequence_s * static_cast<double>(node.active.size()) +
                      config_.decode_per_context_token_s * static_cast<double>(node.context_tokens);
      node.busy = true;
      push(now_s_ + step_s, EventKind::kStepDone, id);
    }
  }

  void startPrefill(NodeId id) {
    Node& node = *nodes_[id];
    uint32_t r = node.prefill_queue.front();
    node.prefill_queue.pop_front();
    RequestState& state = requests_[r];
    node.queued_work_s = std::max(node.queued_work_s - state.predicted_s, 0.0);
    const TraceRequest& trace = trace_[r];
    uint32_t hits = node.cache.prefixHits(trace.block_hashes);
    std::vector<KvEvent> events;
    state.prefill_pinned = node.cache.acquire(trace.block_hashes, 0, events);
    publish(id, events);
    double duration_s = prefillSeconds(config_, trace.input_tokens, hits);
    result_.hit_blocks += hits;
    result_.prompt_blocks += trace.block_hashes.size();
    node.prefill_busy_s += duration_s;
    node.busy = true;
    node.running = r;
    node.running_end_s = now_s_ + duration_s;
    push(node.running_end_s, EventKind::kPrefillDone, id);
  }

  void prefillDone(NodeId id) {
    Node& node = *nodes_[id];
    uint32_t r = node.running;
    RequestState& state = requests_[r];
    node.running = UINT32_MAX;
    node.busy = false;
    node.queued_tokens -= std::min(node.queued_tokens, state.predicted_tokens);
    if (state.prefill_pinned) node.cache.release(trace_[r].block_hashes, 0);
    nodes_[state.decision.decode]->admission_queue.push_back(r);
    admit(state.decision.decode);
    kick(id);
  }

  // Admits waiting requests in order while the decode node has room, and starts their transfers.
  void admit(NodeId id) {
    Node& node = *nodes_[id];
    std::vector<KvEvent> events;
    while (!node.admission_queue.empty()) {
      uint32_t r = node.admission_queue.front();
      const TraceRequest& trace = trace_[r];
      RequestState& state = requests_[r];
      uint64_t missing = trace.block_hashes.size() - node.cache.prefixHits(trace.block_hashes);
      if (!node.cache.acquire(trace.block_hashes, state.anonymous_blocks, events)) break;
      node.admission_queue.pop_front();
      ++node.incoming;
      NodeId from = state.decision.prefill;
      double done_s = now_s_;
      if (from != id && missing > 0) {
        uint64_t bytes = missing * config_.block_tokens * config_.kv_bytes_per_token;
        result_.transfer_bytes += bytes;
        double& link_free_s = link_free_s_[from * nodes_.size() + id];
        link_free_s = std::max(link_free_s, now_s_) +
                      static_cast<double>(bytes) / config_.link_bandwidth_bytes_per_s;
        done_s = link_free_s;
      }
      push(done_s, EventKind::kTransferDone, r);
    }
    publish(id, events);
  }

  void transferDone(uint32_t r) {
    RequestState& state = requests_[r];
    NodeId id = state.decision.decode;
    Node& node = *nodes_[id];
    --node.incoming;
    state.first_token_s = now_s_;
    state.generated = 1;
    result_.ttft_ms.push_back((now_s_ - trace_[r].arrival_s) * 1000.0);
    if (trace_[r].output_tokens <= 1) {
      finish(id, r);
      admit(id);
    } else {
      node.joining.push_back(r);
    }
    kick(id);
  }

  void stepDone(NodeId id) {
    Node& node = *nodes_[id];
    node.busy = false;
    std::vector<uint32_t> still_active;
    for (uint32_t r : node.active) {
      ++requests_[r].generated;
      ++node.context_tokens;
      if (requests_[r].generated >= trace_[r].output_tokens) {
        node.context_tokens -= trace_[r].input_tokens + requests_[r].generated;
        finish(id, r);
      } else {
        still_active.push_back(r);
      }
    }
    node.active = std::move(still_active);
    admit(id);
    kick(id);
  }

  void finish(NodeId id, uint32_t r) {
    const TraceRequest& trace = trace_[r];
    RequestState& state = requests_[r];
    nodes_[id]->cache.release(trace.block_hashes, state.anonymous_blocks);
    double ttft_ms = (state.first_token_s - trace.arrival_s) * 1000.0;
    double tpot_ms = 0;
    if (trace.output_tokens > 1) {
      tpot_ms = (now_s_ - state.first_token_s) * 1000.0 / (trace.output_tokens - 1);
      result_.tpot_ms.push_back(tpot_ms);
    }
    if (ttft_ms <= config_.slo_ttft_ms && tpot_ms <= config_.slo_tpot_ms) ++result_.slo_met;
  }

  const config::RouteSimConfig& config_;
  const std::vector<TraceRequest>& trace_;
  Policy& policy_;
  scheduler::PrefillTimeModel model_;
  PrefixIndex index_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<RequestState> requests_;
  std::vector<double> link_free_s_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t next_order_ = 0;
  double now_s_ = 0;
  PolicyResult result_;
};

// Every request prefilled alone on an idle GPU (no queue, no transfer, no decode wait), with
// the cache hits of:
//   idle_no_cache          no cache at all;
//   idle_pooled_lru        one LRU cache as large as all nodes' KV together, shared by every
//                          node (a router that could move any cached block anywhere for free);
//   idle_pooled_belady     the same pool with clairvoyant eviction (the block whose next use is
//                          farthest goes first; blocks never used again before any other): no
//                          real cache can know the future, so this row only shows how much of
//                          the gap to the oracle is eviction rather than capacity;
//   idle_oracle_cache      a cache that never forgets.
// The oracle row gives each request every block any earlier arrival produced, with no wait: a
// policy could beat a request's TTFT there only by running a later arrival's prefill first and
// reusing its blocks, so its percentiles are, in practice, a floor for every policy.
struct Bound {
  std::string name;
  std::vector<double> ttft_ms;
  uint64_t hit_blocks = 0;
  uint64_t prompt_blocks = 0;

  void record(const config::RouteSimConfig& config, const TraceRequest& request, uint32_t hits) {
    ttft_ms.push_back(1000.0 * prefillSeconds(config, request.input_tokens, hits));
    hit_blocks += hits;
    prompt_blocks += request.block_hashes.size();
  }
};

// Belady's eviction over a pool of `capacity` blocks: for each request, the index of the next
// request that uses each of its blocks is known in advance.
class ClairvoyantCache {
 public:
  ClairvoyantCache(const std::vector<TraceRequest>& trace, uint64_t capacity)
      : capacity_(capacity), next_use_(trace.size()) {
    std::unordered_map<uint64_t, uint32_t> later;  // block → the next request that uses it
    for (size_t r = trace.size(); r-- > 0;) {
      for (uint64_t hash : trace[r].block_hashes) {
        auto it = later.find(hash);
        next_use_[r].push_back(it == later.end() ? kNever : it->second);
      }
      for (uint64_t hash : trace[r].block_hashes) later[hash] = static_cast<uint32_t>(r);
    }
  }

  // Hits of request r, then r's blocks are (re)inserted and the cache trimmed.
  uint32_t serve(const std::vector<TraceRequest>& trace, size_t r) {
    const std::vector<uint64_t>& hashes = trace[r].block_hashes;
    uint32_t hits = scheduler::leadingBlocks(
        hashes, [&](uint64_t hash) { return next_use_of_.contains(hash); });
    for (size_t i = 0; i < hashes.size(); ++i) {
      next_use_of_[hashes[i]] = next_use_[r][i];
      farthest_.emplace(next_use_[r][i], hashes[i]);
    }
    while (next_use_of_.size() > capacity_) {
      auto [use, hash] = farthest_.top();
      farthest_.pop();
      auto it = next_use_of_.find(hash);
      if (it != next_use_of_.end() && it->second == use) next_use_of_.erase(it);  // else stale
    }
    return hits;
  }

 private:
  static constexpr uint32_t kNever = UINT32_MAX;
  uint64_t capacity_;
  std::vector<std::vector<uint32_t>> next_use_;                  // per request, per block
  std::unordered_map<uint64_t, uint32_t> next_use_of_;           // cached block → its next use
  std::priority_queue<std::pair<uint32_t, uint64_t>> farthest_;  // lazily pruned
};

std::vector<Bound> computeBounds(const config::RouteSimConfig& config,
                                 const std::vector<TraceRequest>& trace) {
  std::vector<Bound> bounds(4);
  Bound& none = bounds[0];
  Bound& lru = bounds[1];
  Bound& belady = bounds[2];
  Bound& oracle = bounds[3];
  none.name = "idle_no_cache";
  lru.name = "idle_pooled_lru";
  belady.name = "idle_pooled_belady";
  oracle.name = "idle_oracle_cache";
  const uint64_t pool_blocks =
      uint64_t{config.kv_blocks_per_node} * (config.prefill_nodes + config.decode_nodes);
  KvCache lru_pool(pool_blocks);
  ClairvoyantCache belady_pool(trace, pool_blocks);
  std::unordered_set<uint64_t> seen;
  std::vector<KvEvent> events;  // unused: nobody indexes the pool
  for (size_t r = 0; r < trace.size(); ++r) {
    const TraceRequest& request = trace[r];
    none.record(config, request, 0);
    lru.record(config, request, lru_pool.prefixHits(request.block_hashes));
    if (lru_pool.acquire(request.block_hashes, 0, events)) {
      lru_pool.release(request.block_hashes, 0);
    }
    events.clear();
    belady.record(config, request, belady_pool.serve(trace, r));
    oracle.record(config, request,
                  scheduler::leadingBlocks(request.block_hashes,
                                           [&](uint64_t hash) { return seen.contains(hash); }));
    seen.insert(request.block_hashes.begin(), request.block_hashes.end());
  }
  return bounds;
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return bench::nearestRankPercentile(values, p);
}

double hitRate(uint64_t hit_blocks, uint64_t prompt_blocks) {
  return prompt_blocks > 0 ? static_cast<double>(hit_blocks) / static_cast<double>(prompt_blocks)
                           : 0;
}
double hitRate(const PolicyResult& r) { return hitRate(r.hit_blocks, r.prompt_blocks); }
double hitRate(const Bound& b) { return hitRate(b.hit_blocks, b.prompt_blocks); }

Result<double> parsePositive(std::string_view flag, std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !(value > 0) ||
      !std::isfinite(value)) {
    return invalidArgument(std::string(flag) + ": expected a positive number, got '" +
                           std::string(text) + "'");
  }
  return value;
}

Result<uint64_t> parseCount(std::string_view flag, std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return invalidArgument(std::string(flag) + ": expected an unsigned integer, got '" +
                           std::string(text) + "'");
  }
  return value;
}

Result<std::vector<std::string>> parsePolicies(std::string_view text) {
  std::vector<std::string> out;
  if (text == "all") {
    for (std::string_view name : scheduler::policyNames()) out.emplace_back(name);
    return out;
  }
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view name = text.substr(0, comma);
    const auto& known = scheduler::policyNames();
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return invalidArgument("--policies: unknown policy '" + std::string(name) +
                             "' (known: round_robin, least_loaded, sglang_cache_aware, "
                             "dynamo_kv_cost, kvferry, or all)");
    }
    out.emplace_back(name);
    text = comma == std::string_view::npos ? "" : text.substr(comma + 1);
  }
  if (out.empty()) return invalidArgument("--policies: empty list");
  return out;
}

Result<Options> parseOptions(int argc, char** argv) {
  Options options;
  bool have_rate = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      options.help = true;
      return options;
    }
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + ": missing value (see --help)");
    std::string_view value = argv[++i];
    if (flag == "--trace") {
      options.trace = value;
    } else if (flag == "--cluster") {
      options.cluster = value;
    } else if (flag == "--policies") {
      ASSIGN_OR_RETURN(options.policies, parsePolicies(value));
    } else if (flag == "--rate-scale") {
      ASSIGN_OR_RETURN(options.rate_scale, parsePositive(flag, value));
      have_rate = true;
    } else if (flag == "--json") {
      options.json = value;
    } else if (flag == "--seed") {
      ASSIGN_OR_RETURN(options.seed, parseCount(flag, value));
    } else if (flag == "--max-requests") {
      ASSIGN_OR_RETURN(options.max_requests, parseCount(flag, value));
      if (options.max_requests == 0) return invalidArgument("--max-requests: must be at least 1");
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (options.trace.empty()) return invalidArgument("--trace is required (see --help)");
  if (options.cluster.empty()) return invalidArgument("--cluster is required (see --help)");
  if (options.policies.empty()) return invalidArgument("--policies is required (see --help)");
  if (!have_rate) return invalidArgument("--rate-scale is required (see --help)");
  return options;
}

void printTable(const std::vector<PolicyResult>& results, const std::vector<Bound>& bounds) {
  const double oracle = hitRate(bounds.back());
  std::printf("%-19s %9s %9s %9s %8s %8s %8s %6s %6s %6s %6s %9s %6s %8s\n", "policy", "ttft_p50",
              "ttft_p90", "ttft_p99", "tpot_p50", "tpot_p99", "goodput", "slo%", "hit", "oracle",
              "imbal", "xfer_GB", "coloc", "rejected");
  for (const PolicyResult& r : results) {
    std::printf(
        "%-19s %9.0f %9.0f %9.0f %8.1f %8.1f %8.3f %6.1f %6.3f %6.3f %6.2f %9.1f %6llu %8llu\n",
        r.name.c_str(), percentile(r.ttft_ms, 50), percentile(r.ttft_ms, 90),
        percentile(r.ttft_ms, 99), percentile(r.tpot_ms, 50), percentile(r.tpot_ms, 99),
        static_cast<double>(r.slo_met) / r.duration_s,
        100.0 * static_cast<double>(r.slo_met) / static_cast<double>(r.requests), hitRate(r),
        oracle, r.imbalance, static_cast<double>(r.transfer_bytes) / 1e9,
        static_cast<unsigned long long>(r.colocated), static_cast<unsigned long long>(r.rejected));
  }
  std::printf("(ms for latencies; goodput in requests/s meeting the SLO; xfer in GB)\n");
  std::printf("\nbounds: each request prefilled alone on an idle GPU (no queue, no transfer)\n");
  std::printf("%-19s %9s %9s %9s %6s\n", "cache", "ttft_p50", "ttft_p90", "ttft_p99", "hit");
  for (const Bound& b : bounds) {
    std::printf("%-19s %9.0f %9.0f %9.0f %6.3f\n", b.name.c_str(), percentile(b.ttft_ms, 50),
                percentile(b.ttft_ms, 90), percentile(b.ttft_ms, 99), hitRate(b));
  }
}

Status writeJson(const Options& options, const std::vector<PolicyResult>& results,
                 const std::vector<Bound>& bounds) {
  const double oracle = hitRate(bounds.back());
  boost::json::array policies;
  for (const PolicyResult& r : results) {
    policies.push_back(boost::json::object{
        {"name", r.name},
        {"ttft_p50_ms", percentile(r.ttft_ms, 50)},
        {"ttft_p90_ms", percentile(r.ttft_ms, 90)},
        {"ttft_p99_ms", percentile(r.ttft_ms, 99)},
        {"tpot_p50_ms", percentile(r.tpot_ms, 50)},
        {"tpot_p99_ms", percentile(r.tpot_ms, 99)},
        {"goodput_rps", static_cast<double>(r.slo_met) / r.duration_s},
        {"slo_attained_frac", static_cast<double>(r.slo_met) / static_cast<double>(r.requests)},
        {"hit_rate", hitRate(r)},
        {"oracle_hit_rate", oracle},
        {"rejected", r.rejected},
        {"transfer_bytes", r.transfer_bytes},
    });
  }
  boost::json::array bound_rows;
  for (const Bound& b : bounds) {
    bound_rows.push_back(boost::json::object{
        {"name", b.name},
        {"ttft_p50_ms", percentile(b.ttft_ms, 50)},
        {"ttft_p90_ms", percentile(b.ttft_ms, 90)},
        {"ttft_p99_ms", percentile(b.ttft_ms, 99)},
        {"hit_rate", hitRate(b)},
    });
  }
  boost::json::object root{{"trace", options.trace},
                           {"rate_scale", options.rate_scale},
                           {"policies", policies},
                           {"bounds", bound_rows}};
  std::ofstream out(options.json);
  out << boost::json::serialize(root) << "\n";
  out.close();
  if (!out) return ioError("write " + options.json, errno);
  return Status::ok();
}

Status run(int argc, char** argv) {
  ASSIGN_OR_RETURN(Options options, parseOptions(argc, argv));
  if (options.help) {
    std::fputs(kUsage.data(), stdout);
    return Status::ok();
  }
  ASSIGN_OR_RETURN(config::RouteSimConfig config, config::loadRouteSimConfig(options.cluster));
  ASSIGN_OR_RETURN(std::vector<TraceRequest> trace,
                   loadTrace(options.trace, options.rate_scale, options.max_requests));
  std::vector<Bound> bounds = computeBounds(config, trace);
  std::vector<PolicyResult> results;
  for (const std::string& name : options.policies) {
    ASSIGN_OR_RETURN(std::unique_ptr<Policy> policy,
                     scheduler::makePolicy(name, config.scheduler, options.seed));
    results.push_back(Simulation(config, trace, *policy).run());
  }
  std::printf("trace %s: %zu requests, rate scale %g, %u prefill + %u decode nodes\n",
              options.trace.c_str(), trace.size(), options.rate_scale, config.prefill_nodes,
              config.decode_nodes);
  printTable(results, bounds);
  if (!options.json.empty()) RETURN_IF_ERROR(writeJson(options, results, bounds));
  return Status::ok();
}

}  // namespace
}  // namespace kvferry::routesim

int main(int argc, char** argv) {
  kvferry::Status status = kvferry::routesim::run(argc, argv);
  if (!status.isOk()) {
    std::fprintf(stderr, "routesim: %s\n", status.message().c_str());
    return 2;
  }
  return 0;
}
