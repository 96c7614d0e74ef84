// benchmark_client's command line: parsed once into a const Options; every flag is explained by
// kUsage (--help).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/benchmark_client/dataset.h"
#include "bench/benchmark_client/metrics.h"
#include "common/status.h"

namespace kvferry::bench {

struct Options {
  bool help = false;
  // Target
  std::string host_port = "127.0.0.1:8000";  // from --base-url http://IP:PORT[/prefix]
  std::string path_prefix;                   // "/prefix" or empty
  std::string endpoint = "/v1/completions";
  bool chat = false;                   // the endpoint ends in /chat/completions
  std::string model;                   // empty: the first id of GET /v1/models
  std::string api_key;                 // --api-key, else OPENAI_API_KEY; empty: none sent
  std::optional<uint32_t> max_tokens;  // overrides the dataset's output lengths
  double temperature = 0;
  bool ignore_eos = false;
  std::string tokenizer_path;
  // Workload
  DatasetOptions dataset;
  // Load
  double request_rate = 0;  // +inf: all at once (the default)
  double burstiness = 1;
  uint32_t max_concurrency = 0;  // 0: unlimited
  uint64_t warmup_requests = 0;
  double duration_limit_s = 0;  // 0: none
  double timeout_s = 600;
  // Output
  std::vector<double> percentiles = {50, 90, 99};
  Slo goodput;
  std::string result_json;
  std::string plot;
  bool progress = false;
};

// The --help text.
extern const std::string_view kUsage;

// argv → Options, or INVALID_ARGUMENT with one line saying which flag is wrong. Flags take their
// value as the next argument or after '=' (--seed=3).
Result<Options> parseOptions(int argc, const char* const* argv);

}  // namespace kvferry::bench
