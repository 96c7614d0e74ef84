// engine_bench's CUDA mode (engine_bench_cuda.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvferry::engine {

struct CudaBenchOptions {
  std::string model;  // a GGUF file
  std::string name = "model";
  int gpu = 0;
  std::vector<uint32_t> prefill_tokens = {1024, 8192};
  std::vector<uint32_t> decode_batches = {1, 32, 128, 256};
  uint32_t decode_context = 512;  // prompt tokens of each sequence of a batch > 1
  uint32_t decode_steps = 64;     // timed steps of a batch > 1 (batch 1: 256 from 128 tokens)
  std::string json_path;
  // Profiler collection on (setCudaProfiling) around one more prefill of each length, or two
  // more decode steps of each batch, for `ncu --profile-from-start off`.
  enum class Profile { kNone, kPrefill, kDecode } profile = Profile::kNone;
};

Status runCudaBench(const CudaBenchOptions& options);

}  // namespace kvferry::engine
