// What one request measured, and the run's summary: throughputs, latency distributions and
// goodput, with vLLM `bench serve`'s definitions (docs/benchmark_client.md lists them) except for
// percentiles, which are nearest-rank (bench/percentile.h, shared with bench/routesim). Pure
// functions; any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvferry::bench {

// Error kinds, as counted in the report.
inline constexpr std::string_view kErrorTimeout = "timeout";
inline constexpr std::string_view kErrorConnect = "connect";
inline constexpr std::string_view kErrorStream = "stream_error";
inline constexpr std::string_view kErrorIncomplete = "incomplete";
inline constexpr std::string_view kErrorCancelled = "cancelled";  // cut by --duration-limit-s
// HTTP errors are "http_<status>".

struct RequestResult {
  bool success = false;
  std::string error_kind;  // empty on success
  std::string error;       // detail, for the JSON's "errors"
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  double start_s = 0;  // send time, seconds from the start of the measured run
  double ttft_s = 0;   // send → first non-empty text chunk
  double e2el_s = 0;   // send → end of stream
  std::vector<double> itl_s;
  std::string text;                              // what was generated (multi-turn resends it)
  std::optional<uint32_t> server_prompt_tokens;  // usage.prompt_tokens, when the server sent it

  // (E2E − TTFT) / (output tokens − 1); 0 when output tokens <= 1 (vLLM's convention for goodput).
  double tpotSeconds() const {
    return output_tokens > 1 ? (e2el_s - ttft_s) / (output_tokens - 1) : 0.0;
  }
};

// Nearest-rank percentile: the smallest value with at least p% of the sample at or below it,
// i.e. sorted[ceil(p/100 · n) − 1] (clamped to the sample); 0 for an empty sample.
double percentile(const std::vector<double>& sorted, double p);

struct Distribution {
  double mean = 0;
  double median = 0;  // nearest-rank p50
  double stddev = 0;  // population standard deviation (numpy's default, as vLLM)
  std::vector<std::pair<double, double>> percentiles;  // (p, value)
};
// Values in any unit; the result is in the same unit. An empty sample gives zeros.
Distribution describe(std::vector<double> values, const std::vector<double>& ps);

// Service-level objectives for goodput, in milliseconds; an absent one is not checked.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;
  bool any() const { return ttft_ms || tpot_ms || e2el_ms; }
};
// "ttft:500 tpot:50" (space- or comma-separated KEY:MS pairs; keys ttft, tpot, e2el).
Result<Slo> parseSlo(std::string_view text);
// A successful request meets the SLO when it is at or under every given objective.
bool meetsSlo(const RequestResult& r, const Slo& slo);

// "50,90,99" → {50, 90, 99}; each in (0, 100].
Result<std::vector<double>> parsePercentiles(std::string_view text);
// vLLM's key spelling of a percentile: 99 → "99", 99.9 → "99.9".
std::string percentileName(double p);

struct Summary {
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t total_input_tokens = 0;   // successful requests
  uint64_t total_output_tokens = 0;  // successful requests
  double duration_s = 0;
  double request_throughput = 0;          // completed / duration
  std::optional<double> request_goodput;  // requests meeting the SLO / duration, when an SLO is set
  double output_throughput = 0;
  double total_token_throughput = 0;
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;  // over successful requests (TPOT: > 1 token)
  std::map<std::string, uint64_t> errors_by_kind;
};

Summary summarize(const std::vector<RequestResult>& results, double duration_s,
                  const std::vector<double>& ps, const Slo& slo);

}  // namespace kvferry::bench
