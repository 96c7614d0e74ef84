// engine_bench --device cuda: the CUDA runtime's prefill and decode rates on one GPU, each next to
// its ceiling measured in the same run (DESIGN.md §7):
//   decode:  tokens/s ≤ batch × copy rate ÷ (weight bytes + batch × context × KV bytes/token),
//            the copy rate being the bytes a large device-to-device copy reads and writes per
//            second;
//   prefill: tokens/s ≤ bf16 GEMM rate ÷ FLOPs per token (2 × the layers' matrix parameters,
//            plus causal attention's 2 × layers × q_dim × (L + 1) averaged over the prompt).
#include "bench/engine_bench_cuda.h"

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench/random_prompt.h"
#include "model/model_files.h"
#include "node_agent/engine/cuda_runner.h"
#include "node_agent/engine/engine.h"

namespace kvferry::engine {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Greedy decode of `ids` (last tokens in `tokens`) for `steps` steps on the device.
Status decodeSteps(Engine& engine, std::vector<SequenceId>& ids,
                   std::vector<model::TokenId>& tokens, uint32_t steps) {
  const std::vector<TokenDraw> draws(ids.size());
  std::vector<model::TokenId> next(ids.size());
  for (uint32_t step = 0; step < steps; ++step) {
    RETURN_IF_ERROR(engine.decode(ids, tokens, draws, next));
    tokens.swap(next);
  }
  return Status::ok();
}

}  // namespace

Status runCudaBench(const CudaBenchOptions& options) {
  ASSIGN_OR_RETURN(const GpuInfo gpu, describeGpu(options.gpu));
  ASSIGN_OR_RETURN(const DeviceCeilings ceilings, measureDeviceCeilings(options.gpu));
  std::printf(
      "engine_bench (cuda): GPU %d %s, %.1f GiB; device copy %.0f GB/s (read + write), "
      "bf16 GEMM %.0f TFLOP/s (8192³)\n",
      gpu.index, gpu.name.c_str(), gpu.total_bytes / 1073741824.0, ceilings.copy_bytes_per_s / 1e9,
      ceilings.bf16_gemm_flops / 1e12);
  std::fflush(stdout);

  const Clock::time_point load_start = Clock::now();
  ASSIGN_OR_RETURN(const model::ModelFiles files, model::ModelFiles::open(options.model));
  uint32_t max_batch = 1;
  for (uint32_t b : options.decode_batches) max_batch = std::max(max_batch, b);
  CudaRunnerConfig runner_config;
  runner_config.device = options.gpu;
  runner_config.max_batch_tokens = 8192;
  runner_config.max_batch_sequences = max_batch;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   createCudaModelRunner(files.params(), files.tensors(), runner_config));
  EngineConfig config;
  config.block_tokens = runner_config.block_tokens;
  config.num_blocks = runner->kvGeometry().num_blocks;
  config.max_batch_tokens = runner_config.max_batch_tokens;
  config.prefix_caching = false;
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(std::move(runner), config));
  const double load_s = secondsSince(load_start);

  const model::LlamaParams& p = engine->params();
  const uint64_t q_dim = uint64_t{p.head_count} * p.headDim();
  const uint64_t layer_params = uint64_t{p.embedding_length} * (q_dim + 2 * p.kvDim()) +
                                q_dim * p.embedding_length +
                                3 * uint64_t{p.embedding_length} * p.feed_forward_length;
  const uint64_t weight_bytes =
      2 * (p.block_count * layer_params + uint64_t{p.vocab_size} * p.embedding_length);
  const uint64_t kv_per_token = engine->kvGeometry().bytesPerToken();
  std::printf(
      "model %s: %u layers, dim %u, %.2f GB of matrices per decode step, %llu KV "
      "blocks (%llu B/token), loaded in %.1f s\n\n",
      options.name.c_str(), p.block_count, p.embedding_length, weight_bytes / 1e9,
      static_cast<unsigned long long>(engine->kvGeometry().num_blocks),
      static_cast<unsigned long long>(kv_per_token), load_s);
  std::printf("| measure | engine tok/s | ceiling tok/s | of ceiling |\n|---|---:|---:|---:|\n");

  boost::json::object json{{"model", options.name},
                           {"gpu", gpu.name},
                           {"gpu_memory_bytes", gpu.total_bytes},
                           {"copy_bytes_per_s", ceilings.copy_bytes_per_s},
                           {"bf16_gemm_flops", ceilings.bf16_gemm_flops},
                           {"weight_bytes", weight_bytes},
                           {"kv_bytes_per_token", kv_per_token},
                           {"load_s", load_s}};
  const auto row = [&](const std::string& what, double rate, double ceiling) {
    std::printf("| %s | %.1f | %.1f | %.2f |\n", what.c_str(), rate, ceiling, rate / ceiling);
    std::fflush(stdout);
    json[what] = boost::json::object{{"tokens_per_s", rate}, {"ceiling_tokens_per_s", ceiling}};
  };

  for (uint32_t length : options.prefill_tokens) {
    if (length > engine->maxSequenceTokens()) continue;
    double best = 0;
    for (int rep = 0; rep < 4; ++rep) {  // the first warms up
      const std::vector<model::TokenId> prompt =
          bench::randomPrompt(length, p.vocab_size, 10 + rep);
      model::TokenId first = 0;
      const Clock::time_point start = Clock::now();
      ASSIGN_OR_RETURN(const PrefillResult r, engine->prefill(prompt, TokenDraw{}, first));
      const double seconds = secondsSince(start);
      RETURN_IF_ERROR(engine->release(r.id));
      if (rep > 0) best = std::max(best, length / seconds);
    }
    if (options.profile == CudaBenchOptions::Profile::kPrefill) {
      model::TokenId first = 0;
      RETURN_IF_ERROR(setCudaProfiling(true));
      ASSIGN_OR_RETURN(
          const PrefillResult r,
          engine->prefill(bench::randomPrompt(length, p.vocab_size, 20), TokenDraw{}, first));
      RETURN_IF_ERROR(setCudaProfiling(false));
      RETURN_IF_ERROR(engine->release(r.id));
    }
    const double flops = 2.0 * p.block_count * layer_params +
                         2.0 * p.block_count * static_cast<double>(q_dim) * (length + 1);
    row("prefill " + std::to_string(length), best, ceilings.bf16_gemm_flops / flops);
  }

  for (uint32_t batch : options.decode_batches) {
    const uint32_t context = batch == 1 ? 128 : options.decode_context;
    const uint32_t steps = batch == 1 ? 256 : options.decode_steps;
    std::vector<SequenceId> ids;
    std::vector<model::TokenId> tokens;
    for (uint32_t i = 0; i < batch; ++i) {
      model::TokenId first = 0;
      ASSIGN_OR_RETURN(const PrefillResult r,
                       engine->prefill(bench::randomPrompt(context, p.vocab_size, 1000 + i),
                                       TokenDraw{}, first));
      ids.push_back(r.id);
      tokens.push_back(first);
    }
    RETURN_IF_ERROR(decodeSteps(*engine, ids, tokens, 4));  // captures the graphs
    const Clock::time_point start = Clock::now();
    RETURN_IF_ERROR(decodeSteps(*engine, ids, tokens, steps));
    const double rate = batch * steps / secondsSince(start);
    if (options.profile == CudaBenchOptions::Profile::kDecode) {
      RETURN_IF_ERROR(setCudaProfiling(true));
      RETURN_IF_ERROR(decodeSteps(*engine, ids, tokens, 2));
      RETURN_IF_ERROR(setCudaProfiling(false));
    }
    for (SequenceId id : ids) RETURN_IF_ERROR(engine->release(id));
    const double mean_context = context + 4 + steps / 2.0;
    const double step_bytes = static_cast<double>(weight_bytes) +
                              batch * mean_context * static_cast<double>(kv_per_token);
    row("decode batch " + std::to_string(batch) + " (context " + std::to_string(context) + ")",
        rate, batch * ceilings.copy_bytes_per_s / step_bytes);
  }
  if (!options.json_path.empty()) {
    std::ofstream out(options.json_path);
    out << boost::json::serialize(json) << "\n";
    if (!out) return ioError("write " + options.json_path, errno);
  }
  return Status::ok();
}

}  // namespace kvferry::engine
