// The five policies and their factory. The baselines follow their projects' published
// descriptions; docs/routesim.md says where each deviates and why.
#include "orchestrator/scheduler/policy.h"

#include <algorithm>
#include <array>
#include <limits>
#include <random>
#include <set>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace kvferry::scheduler {
namespace {

constexpr std::array<std::string_view, 5> kPolicyNames = {
    "round_robin", "least_loaded", "sglang_cache_aware", "dynamo_kv_cost", "kvferry"};

uint64_t ceilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Prompt tokens left to compute when `cached_blocks` leading blocks are cached (0 if all are).
uint64_t uncachedTokens(const Request& request, uint32_t cached_blocks, uint32_t block_tokens) {
  uint64_t cached_tokens = uint64_t{cached_blocks} * block_tokens;
  return request.input_tokens - std::min<uint64_t>(cached_tokens, request.input_tokens);
}

std::vector<NodeId> liveNodes(const ClusterView& view, bool (*capable)(NodeRole)) {
  std::vector<NodeId> out;
  for (NodeId id = 0; id < view.nodes().size(); ++id) {
    if (view.node(id).alive && capable(view.node(id).role)) out.push_back(id);
  }
  return out;
}

// The live prefill and decode candidates, or FAILED_PRECONDITION when either side is empty.
struct Candidates {
  std::vector<NodeId> prefill;
  std::vector<NodeId> decode;
};
Result<Candidates> candidates(const ClusterView& view) {
  Candidates out{liveNodes(view, canPrefill), liveNodes(view, canDecode)};
  if (out.prefill.empty()) return failedPrecondition("no live node can prefill");
  if (out.decode.empty()) return failedPrecondition("no live node can decode");
  return out;
}

// The first node minimising `key` (a value comparable with <): ties go to the lowest id.
template <typename Key>
NodeId argmin(const std::vector<NodeId>& nodes, Key key) {
  NodeId best = nodes.front();
  auto best_key = key(best);
  for (NodeId id : nodes) {
    auto k = key(id);
    if (k < best_key) {
      best = id;
      best_key = k;
    }
  }
  return best;
}

Decision decisionFor(const Request& request, const ClusterView& view, NodeId prefill,
                     NodeId decode) {
  return Decision{prefill, decode, prefill == decode,
                  view.index().cachedPrefixBlocks(prefill, request.block_hashes), 0.0};
}

// Decode side of the baselines that balance it by load: fewest active sequences, then most free
// blocks.
NodeId leastLoadedDecode(const ClusterView& view, const std::vector<NodeId>& decode) {
  return argmin(decode, [&](NodeId id) {
    return std::pair(view.node(id).active_decode_seqs,
                     -static_cast<int64_t>(view.node(id).free_kv_blocks));
  });
}

class RoundRobinPolicy final : public Policy {
 public:
  std::string_view name() const override { return "round_robin"; }
  Result<Decision> choose(const Request& request, const ClusterView& view) override {
    ASSIGN_OR_RETURN(Candidates nodes, candidates(view));
    NodeId prefill = nodes.prefill[next_prefill_++ % nodes.prefill.size()];
    NodeId decode = nodes.decode[next_decode_++ % nodes.decode.size()];
    return decisionFor(request, view, prefill, decode);
  }

 private:
  uint64_t next_prefill_ = 0;
  uint64_t next_decode_ = 0;
};

class LeastLoadedPolicy final : public Policy {
 public:
  std::string_view name() const override { return "least_loaded"; }
  Result<Decision> choose(const Request& request, const ClusterView& view) override {
    ASSIGN_OR_RETURN(Candidates nodes, candidates(view));
    NodeId prefill = argmin(nodes.prefill, [&](NodeId id) {
      return std::pair(view.node(id).queued_prefill_tokens, view.node(id).queued_prefill_requests);
    });
    return decisionFor(request, view, prefill, leastLoadedDecode(view, nodes.decode));
  }
};

// SGLang router's cache_aware policy (sgl-router): an approximate radix tree per worker built
// only from the requests the router itself sent there, never from the workers' real caches.
// Trees hold block-hash chains instead of characters; each tree keeps its most recently used
// kMaxTreeBlocks blocks (SGLang caps trees at max_tree_size characters and evicts LRU leaves).
class SglangCacheAwarePolicy final : public Policy {
 public:
  static constexpr size_t kMaxTreeBlocks = 1 << 15;  // ≈ 2^26 characters at 4 chars/token

  explicit SglangCacheAwarePolicy(const config::SchedulerConfig& config) : config_(config) {}
  std::string_view name() const override { return "sglang_cache_aware"; }

  Result<Decision> choose(const Request& request, const ClusterView& view) override {
    ASSIGN_OR_RETURN(Candidates nodes, candidates(view));
    auto load = [&](NodeId id) { return view.node(id).queued_prefill_requests; };
    auto [lightest, heaviest] =
        std::minmax_element(nodes.prefill.begin(), nodes.prefill.end(),
                            [&](NodeId a, NodeId b) { return load(a) < load(b); });
    uint32_t min_load = load(*lightest);
    uint32_t max_load = load(*heaviest);
    bool imbalanced = max_load - min_load > config_.sglang_balance_abs_threshold &&
                      max_load > config_.sglang_balance_rel_threshold * min_load;
    NodeId prefill = 0;
    if (imbalanced) {
      prefill = *lightest;
    } else {
      NodeId best_match =
          argmin(nodes.prefill, [&](NodeId id) { return -int64_t{matched(id, request)}; });
      double match_tokens = static_cast<double>(matched(best_match, request)) * view.blockTokens();
      double rate = match_tokens / std::max<double>(request.input_tokens, 1);
      prefill = rate > config_.sglang_cache_threshold
                    ? best_match
                    : argmin(nodes.prefill, [&](NodeId id) { return trees_[id].size(); });
    }
    insert(prefill, request);
    return decisionFor(request, view, prefill, leastLoadedDecode(view, nodes.decode));
  }

 private:
  struct Tree {
    std::unordered_map<uint64_t, uint64_t> last_used;  // block hash -> tick
    std::set<std::pair<uint64_t, uint64_t>> by_age;    // (tick, hash)
    size_t size() const { return last_used.size(); }
  };

  uint32_t matched(NodeId id, const Request& request) {
    const Tree& tree = trees_[id];
    return leadingBlocks(request.block_hashes,
                         [&](uint64_t hash) { return tree.last_used.contains(hash); });
  }

  void insert(NodeId id, const Request& request) {
    Tree& tree = trees_[id];
    ++tick_;
    for (uint64_t hash : request.block_hashes) {
      auto [it, inserted] = tree.last_used.try_emplace(hash, tick_);
      if (!inserted) {
        tree.by_age.erase({it->second, hash});
        it->second = tick_;
      }
      tree.by_age.insert({tick_, hash});
    }
    while (tree.size() > kMaxTreeBlocks) {
      tree.last_used.erase(tree.by_age.begin()->second);
      tree.by_age.erase(tree.by_age.begin());
    }
  }

  config::SchedulerConfig config_;
  std::unordered_map<NodeId, Tree> trees_;
  uint64_t tick_ = 0;
};

// Dynamo's KV router: cost = prefill_load_scale × (active prefill blocks + new blocks − overlap
// blocks) + decode blocks; the lowest cost wins, ties at random (Dynamo samples among equals).
// Applied to prefill candidates and, with their own overlap and load, to decode candidates.
class DynamoKvCostPolicy final : public Policy {
 public:
  DynamoKvCostPolicy(const config::SchedulerConfig& config, uint64_t seed)
      : config_(config), random_(seed) {}
  std::string_view name() const override { return "dynamo_kv_cost"; }

  Result<Decision> choose(const Request& request, const ClusterView& view) override {
    ASSIGN_OR_RETURN(Candidates nodes, candidates(view));
    return decisionFor(request, view, cheapest(request, view, nodes.prefill),
                       cheapest(request, view, nodes.decode));
  }

 private:
  double cost(const Request& request, const ClusterView& view, NodeId id) const {
    const NodeState& node = view.node(id);
    double active_prefill =
        static_cast<double>(ceilDiv(node.queued_prefill_tokens, view.blockTokens()));
    double new_blocks = static_cast<double>(request.block_hashes.size());
    double overlap = view.index().cachedPrefixBlocks(id, request.block_hashes);
    double decode_blocks = static_cast<double>(node.total_kv_blocks - node.free_kv_blocks);
    return config_.dynamo_prefill_load_scale * (active_prefill + new_blocks - overlap) +
           decode_blocks;
  }

  NodeId cheapest(const Request& request, const ClusterView& view,
                  const std::vector<NodeId>& nodes) {
    double best = std::numeric_limits<double>::infinity();
    std::vector<NodeId> ties;
    for (NodeId id : nodes) {
      double c = cost(request, view, id);
      if (c < best) {
        best = c;
        ties.clear();
      }
      if (c == best) ties.push_back(id);
    }
    return ties[std::uniform_int_distribution<size_t>(0, ties.size() - 1)(random_)];
  }

  config::SchedulerConfig config_;
  std::mt19937_64 random_;
};

// kvferry: scores (prefill, decode) pairs by estimated TTFT (estimatePair); the decode node must
// have room for the sequence (hard constraint, relaxed only when no node has room now); pairs
// within kvferry_ttft_tolerance_s of the best are equivalent and the least busy decode node wins.
// Conditional disaggregation: (d, d) is a candidate when d's uncached suffix is short or every
// prefill queue is deeper than kvferry_colocate_queue_s.
class KvferryPolicy final : public Policy {
 public:
  explicit KvferryPolicy(const config::SchedulerConfig& config) : config_(config) {}
  std::string_view name() const override { return "kvferry"; }

  Result<Decision> choose(const Request& request, const ClusterView& view) override {
    ASSIGN_OR_RETURN(Candidates nodes, candidates(view));
    double shallowest_queue_s = std::numeric_limits<double>::infinity();
    for (NodeId p : nodes.prefill) {
      if (!canDecode(view.node(p).role)) {
        shallowest_queue_s = std::min(shallowest_queue_s, view.node(p).queued_prefill_s);
      }
    }
    bool queues_deep = shallowest_queue_s > config_.kvferry_colocate_queue_s;

    struct Scored {
      Decision decision;
      bool fits;
    };
    std::vector<Scored> scored;
    for (NodeId d : nodes.decode) {
      for (NodeId p : nodes.prefill) {
        if (p == d) continue;
        PairEstimate e = estimatePair(request, view, p, d);
        scored.push_back({{p, d, false, e.cached_blocks, e.ttft_s}, e.fits});
      }
      PairEstimate own = estimatePair(request, view, d, d);
      uint64_t suffix = uncachedTokens(request, own.cached_blocks, view.blockTokens());
      if (canPrefill(view.node(d).role) || queues_deep ||
          suffix <= config_.kvferry_colocate_max_tokens) {
        scored.push_back({{d, d, true, own.cached_blocks, own.ttft_s}, own.fits});
      }
    }
    bool any_fits =
        std::any_of(scored.begin(), scored.end(), [](const Scored& s) { return s.fits; });
    double best = std::numeric_limits<double>::infinity();
    for (const Scored& s : scored) {
      if (s.fits || !any_fits) best = std::min(best, s.decision.predicted_ttft_s);
    }
    const Scored* chosen = nullptr;
    for (const Scored& s : scored) {
      if ((any_fits && !s.fits) ||
          s.decision.predicted_ttft_s > best + config_.kvferry_ttft_tolerance_s) {
        continue;
      }
      auto key = [&](const Scored& x) {
        const NodeState& d = view.node(x.decision.decode);
        return std::tuple(d.active_decode_seqs, -static_cast<int64_t>(d.free_kv_blocks),
                          x.decision.predicted_ttft_s);
      };
      if (chosen == nullptr || key(s) < key(*chosen)) chosen = &s;
    }
    return chosen->decision;
  }

 private:
  config::SchedulerConfig config_;
};

}  // namespace

uint64_t prefillTokens(const Request& request, uint32_t cached_blocks, uint32_t block_tokens) {
  return std::max<uint64_t>(uncachedTokens(request, cached_blocks, block_tokens), 1);
}

PairEstimate estimatePair(const Request& request, const ClusterView& view, NodeId prefill,
                          NodeId decode) {
  const NodeState& p = view.node(prefill);
  const NodeState& d = view.node(decode);
  PairEstimate e;
  e.cached_blocks = view.index().cachedPrefixBlocks(prefill, request.block_hashes);
  uint64_t uncached = prefillTokens(request, e.cached_blocks, view.blockTokens());
  uint32_t on_decode = view.index().cachedPrefixBlocks(decode, request.block_hashes);
  e.transfer_blocks = prefill == decode ? 0 : request.block_hashes.size() - on_decode;
  e.fits = d.free_kv_blocks >= request.decodeBlocks(view.blockTokens());
  e.ttft_s = p.queued_prefill_s + p.prefill_model.seconds(uncached) +
             view.transferSeconds(prefill, decode, e.transfer_blocks);
  if (d.total_kv_blocks < request.decodeBlocks(view.blockTokens())) {
    e.ttft_s = std::numeric_limits<double>::infinity();
  }
  return e;
}

Result<Decision> chooseColocated(const Request& request, const ClusterView& view) {
  std::vector<NodeId> decode = liveNodes(view, canDecode);
  if (decode.empty()) return failedPrecondition("no live node can decode");
  const uint64_t blocks = request.decodeBlocks(view.blockTokens());
  std::vector<NodeId> fitting;
  for (NodeId id : decode) {
    if (view.node(id).free_kv_blocks >= blocks) fitting.push_back(id);
  }
  const NodeId node = leastLoadedDecode(view, fitting.empty() ? decode : fitting);
  return decisionFor(request, view, node, node);
}

bool anyPrefillNode(const ClusterView& view) { return !liveNodes(view, canPrefill).empty(); }

std::span<const std::string_view> policyNames() { return kPolicyNames; }

Result<std::unique_ptr<Policy>> makePolicy(std::string_view name,
                                           const config::SchedulerConfig& config, uint64_t seed) {
  if (name == "round_robin") return std::unique_ptr<Policy>(new RoundRobinPolicy());
  if (name == "least_loaded") return std::unique_ptr<Policy>(new LeastLoadedPolicy());
  if (name == "sglang_cache_aware") {
    return std::unique_ptr<Policy>(new SglangCacheAwarePolicy(config));
  }
  if (name == "dynamo_kv_cost")
    return std::unique_ptr<Policy>(new DynamoKvCostPolicy(config, seed));
  if (name == "kvferry") return std::unique_ptr<Policy>(new KvferryPolicy(config));
  std::string known;
  for (std::string_view n : kPolicyNames) known.append(known.empty() ? "" : ", ").append(n);
  return invalidArgument("unknown policy '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace kvferry::scheduler
