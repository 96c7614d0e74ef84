// engine_bench: prefill and decode throughput of the CPU model runtime at real model shapes.
//
// Each model is generated on the fly (random weights, model::randomLlamaModel) at the shape of a
// public checkpoint, loaded into the engine, and timed: prefill of one prompt, then decode steps
// of batches of sequences. Next to decode tokens/s it prints the memory-bandwidth ceiling measured
// in the same run: a decode step reads every weight matrix once plus each sequence's KV, so
// tokens/s ≤ batch × bandwidth ÷ (weight bytes + batch × context × KV bytes per token).
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/engine_bench_cuda.h"
#include "bench/random_prompt.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/random_shapes.h"
#include "node_agent/engine/cpu/cpu_kernels.h"
#include "node_agent/engine/cpu/thread_pool.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/llama_weights.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::engine {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUsage[] = R"(usage: engine_bench [options]

Prefill and decode tokens/s of the CPU engine on random-weight models of real shapes, with the
memory-bandwidth ceiling of decode measured in the same run.

  --models LIST          comma-separated, from: stories15M, stories110M (default), tinyllama-1.1b,
                         llama-3.2-1b (the last two need --large: 4.4 and 5 GB of float weights)
  --large                also run tinyllama-1.1b and llama-3.2-1b
  --prompt-tokens N      prompt length for prefill, and the context decode starts from (default 128)
  --decode-steps N       decode steps per batch size (default 16)
  --batch LIST           decode batch sizes (default 1,8)
  --threads N            kernel threads; 0 = all cores (default 0)
  --json PATH            also write the results as JSON
  -h, --help             this text

Runs take seconds with the defaults; weights are F16 in the generated file, float32 in memory.

With --device cuda, the CUDA engine on one GPU instead (scripts/bench_gpu.sh runs it):

  --device cuda          required first
  --model GGUF           the model to load (kvferry-make-model writes real shapes)
  --name NAME            its name in the output (default: model)
  --gpu N                the device (default 0)
  --prefill LIST         prompt lengths to prefill (default 1024,8192)
  --batch LIST           decode batch sizes (default 1,32,128,256)
  --context N            prompt tokens of each sequence of a batch > 1 (default 512)
  --decode-steps N       timed steps of a batch > 1 (default 64; batch 1 runs 256 from 128)
  --json PATH            also write the results as JSON
  --profile WHAT         prefill or decode: profiler collection on only around one more,
                         untimed, prefill of each length or two more decode steps of each batch,
                         for `ncu --profile-from-start off` (scripts/bench_gpu.sh's profile stage)
)";

// The shapes this benchmark runs on the CPU (model/random_shapes.h), the large ones behind --large.
struct Shape {
  const model::RandomModelShape* model;
  bool large;
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> kShapes = {
      {model::findRandomModelShape("stories15M"), false},
      {model::findRandomModelShape("stories110M"), false},
      {model::findRandomModelShape("tinyllama-1.1b"), true},
      {model::findRandomModelShape("llama-3.2-1b"), true},
  };
  return kShapes;
}

struct Options {
  std::vector<std::string> models = {"stories15M", "stories110M"};
  bool large = false;
  uint32_t prompt_tokens = 128;
  uint32_t decode_steps = 16;
  std::vector<uint32_t> batches = {1, 8};
  uint32_t threads = 0;
  std::string json_path;
};

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Bytes per second of the pool's threads reading one buffer far larger than the last-level
// cache, and of one memcpy of it: what streaming weights out of DRAM can reach here.
struct Bandwidth {
  double read_bytes_per_s = 0;
  double copy_bytes_per_s = 0;  // bytes read + bytes written
  float checksum = 0;           // of what was read and copied: keeps it from being optimized out
};

Bandwidth measureBandwidth(cpu::ThreadPool& pool) {
  using Vec4 = float __attribute__((vector_size(16)));
  constexpr size_t kBytes = size_t{1} << 30;
  const size_t floats = kBytes / sizeof(float);
  std::vector<float> source(floats, 1.0f);
  std::vector<float> target(floats, 0.0f);
  Bandwidth bw;
  std::vector<float> sinks(pool.size());
  for (int pass = 0; pass < 5; ++pass) {  // best of five: this is a shared, noisy machine
    const Clock::time_point start = Clock::now();
    pool.run(floats / 32, [&](size_t begin, size_t end, uint32_t thread) {
      Vec4 sums[8] = {};
      for (size_t i = begin * 32; i < end * 32; i += 32) {
        __builtin_prefetch(source.data() + i + 256);  // as the kernels do: ~20 % more here
        Vec4 v[8];
        std::memcpy(v, source.data() + i, sizeof(v));
        for (int k = 0; k < 8; ++k) sums[k] += v[k];
      }
      const Vec4 s =
          ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]));
      sinks[thread] += s[0] + s[1] + s[2] + s[3];
    });
    bw.read_bytes_per_s = std::max(bw.read_bytes_per_s, kBytes / secondsSince(start));
    const Clock::time_point copy_start = Clock::now();
    std::memcpy(target.data(), source.data(), kBytes);
    bw.copy_bytes_per_s = std::max(bw.copy_bytes_per_s, 2.0 * kBytes / secondsSince(copy_start));
  }
  for (float sink : sinks) bw.checksum += sink;
  bw.checksum += target[floats / 2];
  return bw;
}

struct DecodeResult {
  uint32_t batch = 0;
  double tokens_per_s = 0;
  double ceiling_tokens_per_s = 0;
};

struct ModelResult {
  std::string name;
  uint64_t parameters = 0;
  uint64_t weight_bytes = 0;  // float matrices one token's forward pass reads
  uint64_t kv_bytes_per_token = 0;
  double load_s = 0;
  double prefill_tokens_per_s = 0;
  std::vector<DecodeResult> decode;
};

Result<ModelResult> benchModel(const Shape& shape, const Options& options,
                               const Bandwidth& bandwidth) {
  ModelResult result;
  result.name = std::string(shape.model->name);
  const Clock::time_point load_start = Clock::now();
  std::shared_ptr<const LlamaWeights> weights;
  {
    model::RandomLlamaSpec spec = shape.model->spec;
    spec.matrix_type = model::GgmlType::kF16;
    ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, model::randomLlamaModel(spec, 1));
    ASSIGN_OR_RETURN(const model::GgufFile file, model::GgufFile::parse(bytes));
    ASSIGN_OR_RETURN(weights, LlamaWeights::load(file));
  }
  result.load_s = secondsSince(load_start);
  result.parameters = weights->parameterCount();
  result.weight_bytes = weights->matrixBytesPerToken();

  uint32_t max_batch = 1;
  for (uint32_t b : options.batches) max_batch = std::max(max_batch, b);
  const uint32_t context = options.prompt_tokens + options.decode_steps;
  if (context > shape.model->spec.params.context_length) {
    return invalidArgument(std::string(shape.model->name) + ": " + std::to_string(context) +
                           " tokens exceed its context of " +
                           std::to_string(shape.model->spec.params.context_length));
  }
  EngineConfig config;
  config.prefix_caching = false;  // every sequence computes (or holds a copy of) its own KV
  config.max_batch_tokens = std::max(256u, max_batch);
  config.threads = options.threads;
  config.num_blocks = max_batch * ((context + config.block_tokens - 1) / config.block_tokens) + 1;
  ASSIGN_OR_RETURN(const std::unique_ptr<Engine> engine, Engine::create(weights, config));
  result.kv_bytes_per_token = engine->kvGeometry().bytesPerToken();
  const uint32_t vocab = shape.model->spec.params.vocab_size;
  std::vector<float> logits(vocab);

  // Prefill: best of two (the first also faults in the scratch buffers).
  for (int rep = 0; rep < 2; ++rep) {
    const std::vector<model::TokenId> prompt =
        bench::randomPrompt(options.prompt_tokens, vocab, rep);
    const Clock::time_point start = Clock::now();
    ASSIGN_OR_RETURN(const PrefillResult prefill, engine->prefill(prompt, logits));
    result.prefill_tokens_per_s =
        std::max(result.prefill_tokens_per_s, options.prompt_tokens / secondsSince(start));
    RETURN_IF_ERROR(engine->release(prefill.id));
  }

  for (uint32_t batch : options.batches) {
    // One prefill; the batch's other sequences get copies of its KV through the import path, as
    // a decode agent receives them, so each reads its own blocks without paying for a prefill.
    const std::vector<model::TokenId> prompt =
        bench::randomPrompt(options.prompt_tokens, vocab, 100);
    ASSIGN_OR_RETURN(const PrefillResult source, engine->prefill(prompt, logits));
    std::vector<SequenceId> ids = {source.id};
    std::vector<model::TokenId> tokens(batch, argmax(logits));
    const KvGeometry& geometry = engine->kvGeometry();
    for (uint32_t i = 1; i < batch; ++i) {
      ASSIGN_OR_RETURN(const ImportReservation copy, engine->reserveImport(prompt));
      ASSIGN_OR_RETURN(const SequenceView from, engine->sequence(source.id));
      ASSIGN_OR_RETURN(const SequenceView to, engine->sequence(copy.id));
      for (uint32_t layer = 0; layer < geometry.layers; ++layer) {
        for (const KvPoolRegion pool : {engine->keyPool(layer), engine->valuePool(layer)}) {
          auto* base = static_cast<uint8_t*>(pool.base);
          for (size_t b = 0; b < from.block_ids.size(); ++b) {
            std::memcpy(base + to.block_ids[b] * geometry.blockBytes(),
                        base + from.block_ids[b] * geometry.blockBytes(), geometry.blockBytes());
          }
        }
      }
      RETURN_IF_ERROR(engine->commitImport(copy.id));
      ids.push_back(copy.id);
    }
    std::vector<float> batch_logits(uint64_t{batch} * vocab);
    const Clock::time_point start = Clock::now();
    for (uint32_t step = 0; step < options.decode_steps; ++step) {
      RETURN_IF_ERROR(engine->decode(ids, tokens, batch_logits));
      for (uint32_t i = 0; i < batch; ++i) {
        tokens[i] =
            argmax(std::span<const float>(batch_logits).subspan(uint64_t{i} * vocab, vocab));
      }
    }
    const double seconds = secondsSince(start);
    for (SequenceId id : ids) RETURN_IF_ERROR(engine->release(id));
    const double mean_context = options.prompt_tokens + options.decode_steps / 2.0;
    const double step_bytes = static_cast<double>(result.weight_bytes) +
                              batch * mean_context * static_cast<double>(result.kv_bytes_per_token);
    result.decode.push_back({batch, batch * options.decode_steps / seconds,
                             batch * bandwidth.read_bytes_per_s / step_bytes});
  }
  return result;
}

Result<std::vector<uint32_t>> parseList(std::string_view flag, std::string_view text) {
  std::vector<uint32_t> out;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    uint32_t value = 0;
    const auto [ptr, error] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (error != std::errc() || ptr != item.data() + item.size() || value == 0) {
      return invalidArgument(std::string(flag) + ": '" + std::string(item) +
                             "' is not a positive integer");
    }
    out.push_back(value);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  if (out.empty()) return invalidArgument(std::string(flag) + ": empty list");
  return out;
}

Result<std::optional<CudaBenchOptions>> parseCudaArgs(int argc, char** argv) {
  CudaBenchOptions options;
  for (int i = 3; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") return std::optional<CudaBenchOptions>();
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + ": missing value");
    const std::string_view value = argv[++i];
    if (flag == "--model") {
      options.model = value;
    } else if (flag == "--name") {
      options.name = value;
    } else if (flag == "--json") {
      options.json_path = value;
    } else if (flag == "--prefill") {
      ASSIGN_OR_RETURN(options.prefill_tokens, parseList(flag, value));
    } else if (flag == "--batch") {
      ASSIGN_OR_RETURN(options.decode_batches, parseList(flag, value));
    } else if (flag == "--profile") {
      if (value != "prefill" && value != "decode") {
        return invalidArgument("--profile: 'prefill' or 'decode', not '" + std::string(value) +
                               "'");
      }
      options.profile = value == "prefill" ? CudaBenchOptions::Profile::kPrefill
                                           : CudaBenchOptions::Profile::kDecode;
    } else if (flag == "--gpu" || flag == "--context" || flag == "--decode-steps") {
      ASSIGN_OR_RETURN(const std::vector<uint32_t> number, parseList(flag, value));
      if (number.size() != 1) return invalidArgument(std::string(flag) + ": one number");
      if (flag == "--gpu") options.gpu = static_cast<int>(number[0]);
      if (flag == "--context") options.decode_context = number[0];
      if (flag == "--decode-steps") options.decode_steps = number[0];
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (options.model.empty()) return invalidArgument("--device cuda needs --model GGUF");
  return std::optional<CudaBenchOptions>(std::move(options));
}

Result<std::optional<Options>> parseArgs(int argc, char** argv) {
  Options options;
  bool models_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") return std::optional<Options>();
    if (flag == "--large") {
      options.large = true;
      continue;
    }
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + ": missing value");
    const std::string_view value = argv[++i];
    if (flag == "--models") {
      models_given = true;
      options.models.clear();
      std::string_view rest = value;
      while (!rest.empty()) {
        const size_t comma = rest.find(',');
        options.models.emplace_back(rest.substr(0, comma));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
    } else if (flag == "--prompt-tokens" || flag == "--decode-steps" || flag == "--threads") {
      ASSIGN_OR_RETURN(const std::vector<uint32_t> number, parseList(flag, value));
      if (number.size() != 1) return invalidArgument(std::string(flag) + ": one number");
      (flag == "--prompt-tokens"  ? options.prompt_tokens
       : flag == "--decode-steps" ? options.decode_steps
                                  : options.threads) = number[0];
    } else if (flag == "--batch") {
      ASSIGN_OR_RETURN(options.batches, parseList(flag, value));
    } else if (flag == "--json") {
      options.json_path = value;
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (options.large && !models_given) {
    options.models.emplace_back("tinyllama-1.1b");
    options.models.emplace_back("llama-3.2-1b");
  }
  for (const std::string& name : options.models) {
    const Shape* shape = nullptr;
    for (const Shape& s : shapes()) {
      if (s.model->name == name) shape = &s;
    }
    if (shape == nullptr) return invalidArgument("unknown model '" + name + "' (see --help)");
    if (shape->large && !options.large) {
      return invalidArgument(name + " holds gigabytes of float weights: add --large");
    }
  }
  return std::optional<Options>(std::move(options));
}

Status run(const Options& options) {
  cpu::ThreadPool pool(options.threads);
  const Bandwidth bandwidth = measureBandwidth(pool);
  std::printf(
      "engine_bench: %s kernels, %u threads; DRAM bandwidth (1 GiB): read %.1f GB/s with %u "
      "threads, memcpy %.1f GB/s (read + write)\n"
      "prefill: %u-token prompt; decode: %u steps from a %u-token context; ceiling = batch × "
      "read bandwidth ÷ (weights + batch × context × KV bytes/token)\n\n",
      std::string(cpu::isaName(cpu::detectIsa())).c_str(), pool.size(),
      bandwidth.read_bytes_per_s / 1e9, pool.size(), bandwidth.copy_bytes_per_s / 1e9,
      options.prompt_tokens, options.decode_steps, options.prompt_tokens);
  std::printf(
      "| model | params | weights MiB | KV B/token | prefill tok/s | batch | decode tok/s "
      "| ceiling tok/s | of ceiling |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  boost::json::array json_models;
  for (const std::string& name : options.models) {
    const Shape* shape = nullptr;
    for (const Shape& s : shapes()) {
      if (s.model->name == name) shape = &s;
    }
    Result<ModelResult> result = benchModel(*shape, options, bandwidth);
    if (!result.isOk()) return result.status().withContext(name);
    boost::json::array json_decode;
    for (const DecodeResult& d : result->decode) {
      std::printf("| %s | %.1fM | %.0f | %llu | %.1f | %u | %.1f | %.1f | %.2f |\n",
                  result->name.c_str(), result->parameters / 1e6, result->weight_bytes / 1048576.0,
                  static_cast<unsigned long long>(result->kv_bytes_per_token),
                  result->prefill_tokens_per_s, d.batch, d.tokens_per_s, d.ceiling_tokens_per_s,
                  d.tokens_per_s / d.ceiling_tokens_per_s);
      json_decode.push_back({{"batch", d.batch},
                             {"tokens_per_s", d.tokens_per_s},
                             {"ceiling_tokens_per_s", d.ceiling_tokens_per_s}});
    }
    std::fflush(stdout);
    json_models.push_back({{"model", result->name},
                           {"parameters", result->parameters},
                           {"weight_bytes", result->weight_bytes},
                           {"kv_bytes_per_token", result->kv_bytes_per_token},
                           {"load_s", result->load_s},
                           {"prefill_tokens_per_s", result->prefill_tokens_per_s},
                           {"decode", std::move(json_decode)}});
  }
  if (!options.json_path.empty()) {
    boost::json::object root{{"isa", cpu::isaName(cpu::detectIsa())},
                             {"threads", pool.size()},
                             {"read_bytes_per_s", bandwidth.read_bytes_per_s},
                             {"copy_bytes_per_s", bandwidth.copy_bytes_per_s},
                             {"prompt_tokens", options.prompt_tokens},
                             {"decode_steps", options.decode_steps},
                             {"models", std::move(json_models)}};
    std::ofstream out(options.json_path);
    out << boost::json::serialize(root) << "\n";
    if (!out) return ioError("write " + options.json_path, errno);
  }
  return Status::ok();
}

}  // namespace
}  // namespace kvferry::engine

int main(int argc, char** argv) {
  if (argc >= 3 && std::string_view(argv[1]) == "--device" && std::string_view(argv[2]) == "cuda") {
    auto cuda = kvferry::engine::parseCudaArgs(argc, argv);
    if (!cuda.isOk()) {
      std::fprintf(stderr, "engine_bench: %s\n", cuda.status().message().c_str());
      return 2;
    }
    if (!cuda->has_value()) {
      std::fputs(kvferry::engine::kUsage, stdout);
      return 0;
    }
    const kvferry::Status status = kvferry::engine::runCudaBench(**cuda);
    if (!status.isOk()) {
      std::fprintf(stderr, "engine_bench: %s\n", status.toString().c_str());
      return 1;
    }
    return 0;
  }
  kvferry::Result<std::optional<kvferry::engine::Options>> options =
      kvferry::engine::parseArgs(argc, argv);
  if (!options.isOk()) {
    std::fprintf(stderr, "engine_bench: %s\n", options.status().message().c_str());
    return 2;
  }
  if (!options->has_value()) {
    std::fputs(kvferry::engine::kUsage, stdout);
    return 0;
  }
  const kvferry::Status status = kvferry::engine::run(**options);
  if (!status.isOk()) {
    std::fprintf(stderr, "engine_bench: %s\n", status.toString().c_str());
    return 1;
  }
  return 0;
}
