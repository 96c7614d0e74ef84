// Mooncake-format request traces (github.com/kvcache-ai/Mooncake, FAST25-release/traces/): JSONL,
// one request per line: {"timestamp": ms, "input_length": tokens, "output_length": tokens,
// "hash_ids": [ids]}, each id naming one block of 512 prompt tokens; equal leading ids mean
// equal prompt prefixes. One reader for every bench tool: routesim chains the ids into block
// hashes, benchmark_client synthesizes prompts whose blocks are shared exactly when the ids are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvferry::bench {

struct TraceRecord {
  uint64_t timestamp_ms = 0;
  uint32_t input_length = 0;   // > 0
  uint32_t output_length = 0;  // as written; 0 is possible
  std::vector<uint64_t> hash_ids;
};

// The first `max_records` requests of `path` (blank lines skipped). INVALID_ARGUMENT naming
// file:line for a line that is not such an object, or for timestamps that decrease; IO_ERROR when
// the file cannot be read; INVALID_ARGUMENT for a file with no requests.
Result<std::vector<TraceRecord>> readMooncakeTrace(const std::string& path,
                                                   uint64_t max_records = UINT64_MAX);

}  // namespace kvferry::bench
