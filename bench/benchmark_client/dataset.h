// The workloads benchmark_client sends: prompts of exact token lengths (text_synth.h), built
// entirely before the run from --seed, so the run itself only sends.
//
//   random         N prompts of input_len ± range_ratio tokens, max_tokens output_len ± ratio.
//   shared-prefix  G system prefixes of prefix_len tokens × N questions of suffix_len tokens each;
//                  prompt = prefix + " " + question; the G·N prompts in a seeded shuffled order.
//   multi-turn     S sessions of T turns; every turn's user message is input_len ± ratio tokens;
//                  the runner resends the whole conversation (with the model's answers).
//   trace          a Mooncake trace (trace.h): block j of a prompt is the text of hash_ids[j], a
//                  function of (seed, hash id) only, so two requests share their leading k blocks
//                  of text exactly when their leading k hash ids are equal; the last block is cut
//                  to input_length. A prompt longer than its blocks (only with
//                  --trace-block-tokens smaller than the trace's 512) is padded with text unique
//                  to the request. Arrivals are the timestamps, relative to the first, × scale.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/benchmark_client/text_synth.h"
#include "bench/mooncake_trace.h"
#include "common/status.h"

namespace kvferry::bench {

enum class DatasetKind { kRandom, kSharedPrefix, kMultiTurn, kTrace };

Result<DatasetKind> parseDatasetKind(std::string_view name);
std::string_view datasetName(DatasetKind kind);

struct DatasetOptions {
  DatasetKind kind = DatasetKind::kRandom;
  uint64_t seed = 0;
  uint64_t num_prompts = 0;  // 0: the dataset's own count (random: 1000)
  // random, and the user turns of multi-turn
  uint32_t input_len = 1024;
  uint32_t output_len = 128;
  double range_ratio = 0;  // lengths uniform in [len·(1 − r), len·(1 + r)], at least 1
  // shared-prefix
  uint32_t num_groups = 8;
  uint32_t prompts_per_group = 16;
  uint32_t prefix_len = 1024;
  uint32_t suffix_len = 128;
  // multi-turn
  uint32_t num_sessions = 32;
  uint32_t turns = 4;
  // trace
  std::string trace_path;
  uint32_t trace_block_tokens = 512;
  double trace_time_scale = 1.0;  // arrival = (timestamp − first timestamp) · scale
};

struct Turn {
  std::string prompt;  // completions: the prompt; chat: this turn's user message
  uint32_t prompt_tokens = 0;
  uint32_t max_tokens = 1;
};

// A single request is a conversation of one turn.
struct Conversation {
  double arrival_s = 0;  // set for traces; the runner's schedule otherwise
  std::vector<Turn> turns;
};

struct Workload {
  std::vector<Conversation> conversations;
  bool timed = false;  // arrival_s comes from the trace
  uint64_t requests() const {
    uint64_t n = 0;
    for (const Conversation& c : conversations) n += c.turns.size();
    return n;
  }
};

// Every prompt is then encoded (on all cores) and its count checked: INTERNAL naming the first
// prompt whose count is off, i.e. when the word-list scheme does not hold for this tokenizer.
Result<Workload> buildWorkload(const DatasetOptions& options, const TextSynthesizer& synth);

// `count` single-turn requests with fresh text (no prefix shared with the workload) and the
// lengths of the workload's first turns, in order, cycling.
Result<Workload> warmupWorkload(uint64_t count, const Workload& like, uint64_t seed,
                                const TextSynthesizer& synth);

// Text of one trace block: `tokens` tokens, a function of (seed, hash_id); a shorter block is a
// prefix of the longer one when every word is one token.
std::string traceBlockText(const TextSynthesizer& synth, uint64_t seed, uint64_t hash_id,
                           uint32_t tokens);
// The prompt of one trace record (index: its position, for the padding text).
Turn traceTurn(const TextSynthesizer& synth, uint64_t seed, const TraceRecord& record,
               uint64_t index, uint32_t block_tokens);

}  // namespace kvferry::bench
