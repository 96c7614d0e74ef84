// benchmark_client's outputs: the table on stdout (laid out like vLLM `bench serve`'s), the
// result JSON (vLLM's field names), and CDF plots through gnuplot.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "bench/benchmark_client/metrics.h"
#include "common/status.h"

namespace kvferry::bench {

// What the report says about the run's set-up.
struct RunInfo {
  std::string backend;  // "openai" (completions) or "openai-chat"
  std::string model_id;
  std::string tokenizer_id;
  std::string dataset;
  uint64_t seed = 0;
  uint64_t num_prompts = 0;  // requests planned
  uint64_t not_sent = 0;
  double request_rate = 0;  // +inf: all at once; NaN: the trace's timestamps
  double burstiness = 1;
  uint32_t max_concurrency = 0;  // 0: unlimited
  std::vector<double> percentiles;
  bool goodput = false;
};

void printTable(std::FILE* out, const RunInfo& info, const Summary& summary);

// The result document. Per-request lists ("input_lens", "output_lens", "ttfts", "itls",
// "latencies", "start_times", "errors") hold one entry per request sent, in order; a failed
// request has output length 0, TTFT 0 and no ITLs, and its error string ("" when it succeeded).
boost::json::object resultJson(const RunInfo& info, const Summary& summary,
                               const std::vector<RequestResult>& results, const std::string& date);
Status writeJson(const std::string& path, const boost::json::object& document);

// The path of gnuplot on $PATH, if any.
std::optional<std::string> findGnuplot();
// Writes FILE.dat (the four CDFs) and FILE.gp (the script) next to `png_path` and runs gnuplot.
Status plotCdfs(const std::string& gnuplot, const std::string& png_path,
                const std::vector<RequestResult>& results);

}  // namespace kvferry::bench
