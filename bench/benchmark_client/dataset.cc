#include "bench/benchmark_client/dataset.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <utility>

namespace kvferry::bench {
namespace {

// Labels of the independent random streams derived from --seed.
enum StreamLabel : uint64_t {
  kRandomPrompts = 1,
  kRandomLengths,
  kPrefixes,
  kSuffixes,
  kShuffle,
  kTurns,
  kTraceBlocks,
  kTracePadding,
  kWarmup,
};

uint32_t jitter(Rng& rng, uint32_t length, double ratio) {
  const auto lo = static_cast<uint64_t>(std::floor(length * (1.0 - ratio)));
  const auto hi = static_cast<uint64_t>(std::floor(length * (1.0 + ratio)));
  return static_cast<uint32_t>(std::max<uint64_t>(rng.between(lo, std::max(lo, hi)), 1));
}

Turn makeTurn(const TextSynthesizer& synth, Rng& text_rng, uint32_t tokens, uint32_t max_tokens) {
  return Turn{synth.text(text_rng, tokens), tokens, max_tokens};
}

// Encodes every prompt and compares its count, on all cores (long traces hold millions of
// tokens; the tokenizer is stateless, so threads share it). Reports the first bad turn.
Status verifyAll(const Workload& w, const TextSynthesizer& synth, std::string_view what) {
  std::vector<const Turn*> turns;
  for (const Conversation& c : w.conversations) {
    for (const Turn& t : c.turns) turns.push_back(&t);
  }
  std::atomic<size_t> next{0};
  std::atomic<size_t> first_bad{SIZE_MAX};
  auto work = [&] {
    for (size_t i = next++; i < turns.size() && i < first_bad.load(); i = next++) {
      if (!synth.verify(turns[i]->prompt, turns[i]->prompt_tokens).isOk()) {
        size_t seen = first_bad.load();
        while (i < seen && !first_bad.compare_exchange_weak(seen, i)) {
        }
      }
    }
  };
  const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 64u);
  {
    std::vector<std::jthread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
  }
  if (const size_t bad = first_bad.load(); bad != SIZE_MAX) {
    return synth.verify(turns[bad]->prompt, turns[bad]->prompt_tokens)
        .withContext(std::string(what) + " prompt " + std::to_string(bad + 1));
  }
  return Status::ok();
}

Result<Workload> randomWorkload(const DatasetOptions& o, const TextSynthesizer& synth) {
  Rng text(Rng::derive(o.seed, kRandomPrompts));
  Rng lengths(Rng::derive(o.seed, kRandomLengths));
  Workload w;
  const uint64_t count = o.num_prompts > 0 ? o.num_prompts : 1000;
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t in = jitter(lengths, o.input_len, o.range_ratio);
    const uint32_t out = jitter(lengths, o.output_len, o.range_ratio);
    w.conversations.push_back({0, {makeTurn(synth, text, in, out)}});
  }
  return w;
}

Result<Workload> sharedPrefixWorkload(const DatasetOptions& o, const TextSynthesizer& synth) {
  Rng prefix_rng(Rng::derive(o.seed, kPrefixes));
  Rng suffix_rng(Rng::derive(o.seed, kSuffixes));
  Workload w;
  for (uint32_t g = 0; g < o.num_groups; ++g) {
    const std::string prefix = synth.text(prefix_rng, o.prefix_len);
    for (uint32_t q = 0; q < o.prompts_per_group; ++q) {
      std::string prompt = prefix;
      synth.append(suffix_rng, o.suffix_len, prompt);
      const uint32_t tokens = o.prefix_len + o.suffix_len;
      w.conversations.push_back({0, {Turn{std::move(prompt), tokens, o.output_len}}});
    }
  }
  Rng shuffle(Rng::derive(o.seed, kShuffle));
  auto& c = w.conversations;
  for (size_t i = c.size(); i > 1; --i) std::swap(c[i - 1], c[shuffle.below(i)]);
  if (o.num_prompts > 0 && o.num_prompts < c.size()) c.resize(o.num_prompts);
  return w;
}

Result<Workload> multiTurnWorkload(const DatasetOptions& o, const TextSynthesizer& synth) {
  Rng rng(Rng::derive(o.seed, kTurns));
  Workload w;
  for (uint32_t s = 0; s < o.num_sessions; ++s) {
    Conversation c;
    for (uint32_t t = 0; t < o.turns; ++t) {
      const uint32_t in = jitter(rng, o.input_len, o.range_ratio);
      const uint32_t out = jitter(rng, o.output_len, o.range_ratio);
      c.turns.push_back(makeTurn(synth, rng, in, out));
    }
    w.conversations.push_back(std::move(c));
  }
  return w;
}

Result<Workload> traceWorkload(const DatasetOptions& o, const TextSynthesizer& synth) {
  ASSIGN_OR_RETURN(std::vector<TraceRecord> records,
                   readMooncakeTrace(o.trace_path, o.num_prompts > 0 ? o.num_prompts : UINT64_MAX));
  Workload w;
  w.timed = true;
  const uint64_t first_ms = records.front().timestamp_ms;
  for (uint64_t i = 0; i < records.size(); ++i) {
    Turn turn = traceTurn(synth, o.seed, records[i], i, o.trace_block_tokens);
    const double arrival_s =
        static_cast<double>(records[i].timestamp_ms - first_ms) / 1000.0 * o.trace_time_scale;
    w.conversations.push_back({arrival_s, {std::move(turn)}});
  }
  return w;
}

}  // namespace

Result<DatasetKind> parseDatasetKind(std::string_view name) {
  if (name == "random") return DatasetKind::kRandom;
  if (name == "shared-prefix") return DatasetKind::kSharedPrefix;
  if (name == "multi-turn") return DatasetKind::kMultiTurn;
  if (name == "trace") return DatasetKind::kTrace;
  return invalidArgument("--dataset: unknown dataset '" + std::string(name) +
                         "' (random, shared-prefix, multi-turn, trace)");
}

std::string_view datasetName(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kRandom:
      return "random";
    case DatasetKind::kSharedPrefix:
      return "shared-prefix";
    case DatasetKind::kMultiTurn:
      return "multi-turn";
    case DatasetKind::kTrace:
      return "trace";
  }
  return "?";
}

std::string traceBlockText(const TextSynthesizer& synth, uint64_t seed, uint64_t hash_id,
                           uint32_t tokens) {
  Rng rng(Rng::derive(Rng::derive(seed, kTraceBlocks), hash_id));
  return synth.text(rng, tokens);
}

Turn traceTurn(const TextSynthesizer& synth, uint64_t seed, const TraceRecord& record,
               uint64_t index, uint32_t block_tokens) {
  Turn turn;
  turn.prompt_tokens = record.input_length;
  turn.max_tokens = std::max<uint32_t>(record.output_length, 1);
  uint32_t remaining = record.input_length;
  for (uint64_t id : record.hash_ids) {
    if (remaining == 0) break;
    const uint32_t tokens = std::min(remaining, block_tokens);
    if (!turn.prompt.empty()) turn.prompt += ' ';
    turn.prompt += traceBlockText(synth, seed, id, tokens);
    remaining -= tokens;
  }
  if (remaining > 0) {
    Rng padding(Rng::derive(Rng::derive(seed, kTracePadding), index));
    synth.append(padding, remaining, turn.prompt);
  }
  return turn;
}

Result<Workload> buildWorkload(const DatasetOptions& options, const TextSynthesizer& synth) {
  Result<Workload> w = internalError("unknown dataset kind");
  switch (options.kind) {
    case DatasetKind::kRandom:
      w = randomWorkload(options, synth);
      break;
    case DatasetKind::kSharedPrefix:
      w = sharedPrefixWorkload(options, synth);
      break;
    case DatasetKind::kMultiTurn:
      w = multiTurnWorkload(options, synth);
      break;
    case DatasetKind::kTrace:
      w = traceWorkload(options, synth);
      break;
  }
  if (w.isOk()) RETURN_IF_ERROR(verifyAll(*w, synth, datasetName(options.kind)));
  return w;
}

Result<Workload> warmupWorkload(uint64_t count, const Workload& like, uint64_t seed,
                                const TextSynthesizer& synth) {
  Rng text(Rng::derive(seed, kWarmup));
  Workload w;
  for (uint64_t i = 0; i < count && !like.conversations.empty(); ++i) {
    const Turn& model = like.conversations[i % like.conversations.size()].turns.front();
    w.conversations.push_back({0, {makeTurn(synth, text, model.prompt_tokens, model.max_tokens)}});
  }
  RETURN_IF_ERROR(verifyAll(w, synth, "warmup"));
  return w;
}

}  // namespace kvferry::bench
