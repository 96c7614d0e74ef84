// kvferry-dump-logits: what the engine computes for a few prompts, for comparison with an
// independent implementation (scripts/gpu_reference.py runs transformers on the same weights).
//
// For each prompt of --prompts (a JSON array of token-id arrays) it writes, as float32 rows of
// vocab_size logits to --out: the logits at every prompt position, each from a prefill of the
// prompt up to that position (the engine's prefill path), then --steps greedy decode steps (the
// decode path), feeding back the argmax. --tokens gets a JSON array with, per prompt, the greedy
// tokens (steps of them, the first from the prefill).
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/model_files.h"
#include "node_agent/engine/cuda_runner.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/llama_weights.h"
#include "node_agent/engine/sampler.h"

namespace kvferry::engine {
namespace {

constexpr char kUsage[] =
    R"(usage: kvferry-dump-logits --model GGUF --prompts JSON --out BIN --tokens JSON [options]

  --device cpu|cuda   the engine's backend (default cuda)
  --gpu N             the CUDA device (default 0)
  --steps N           greedy decode steps after each prompt (default 32)
  -h, --help          this text
)";

Result<std::unique_ptr<Engine>> makeEngine(const model::ModelFiles& files, bool cuda, int gpu) {
  EngineConfig config;
  config.block_tokens = 16;
  config.prefix_caching = false;  // every prefill computes every position
  config.max_batch_tokens = 2048;
  if (!cuda) {
    config.num_blocks = 512;
    ASSIGN_OR_RETURN(auto weights, LlamaWeights::load(files));
    return Engine::create(std::move(weights), config);
  }
  CudaRunnerConfig cuda_config;
  cuda_config.device = gpu;
  cuda_config.block_tokens = config.block_tokens;
  cuda_config.num_blocks = 1024;
  cuda_config.max_batch_tokens = config.max_batch_tokens;
  cuda_config.max_batch_sequences = 8;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   createCudaModelRunner(files.params(), files.tensors(), cuda_config));
  config.num_blocks = runner->kvGeometry().num_blocks;
  return Engine::create(std::move(runner), config);
}

Status run(int argc, char** argv) {
  std::string model_path, prompts_path, out_path, tokens_path;
  bool cuda = true;
  int gpu = 0;
  uint32_t steps = 32;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      return Status::ok();
    }
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + ": missing value");
    const std::string value = argv[++i];
    if (flag == "--model") {
      model_path = value;
    } else if (flag == "--prompts") {
      prompts_path = value;
    } else if (flag == "--out") {
      out_path = value;
    } else if (flag == "--tokens") {
      tokens_path = value;
    } else if (flag == "--device") {
      if (value != "cpu" && value != "cuda") return invalidArgument("--device: cpu or cuda");
      cuda = value == "cuda";
    } else if (flag == "--gpu") {
      gpu = std::stoi(value);
    } else if (flag == "--steps") {
      const auto [ptr, error] = std::from_chars(value.data(), value.data() + value.size(), steps);
      if (error != std::errc() || ptr != value.data() + value.size()) {
        return invalidArgument("--steps: '" + value + "' is not a number");
      }
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (model_path.empty() || prompts_path.empty() || out_path.empty() || tokens_path.empty()) {
    return invalidArgument("--model, --prompts, --out and --tokens are required (see --help)");
  }
  std::ifstream prompts_file(prompts_path);
  const std::string text((std::istreambuf_iterator<char>(prompts_file)),
                         std::istreambuf_iterator<char>());
  boost::system::error_code ec;
  const boost::json::value prompts = boost::json::parse(text, ec);
  if (ec || !prompts.is_array()) {
    return invalidArgument(prompts_path + ": not a JSON array of token-id arrays");
  }
  ASSIGN_OR_RETURN(const model::ModelFiles files, model::ModelFiles::open(model_path));
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, makeEngine(files, cuda, gpu));
  const uint32_t vocab = engine->vocabSize();
  std::FILE* out = std::fopen(out_path.c_str(), "wb");
  if (out == nullptr) return ioError("open " + out_path, errno);
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(out, &std::fclose);
  boost::json::array all_tokens;
  std::vector<float> logits(vocab);
  const auto write = [&]() -> Status {
    if (std::fwrite(logits.data(), sizeof(float), vocab, out) != vocab) {
      return ioError("write " + out_path, errno);
    }
    return Status::ok();
  };
  for (const boost::json::value& entry : prompts.as_array()) {
    if (!entry.is_array()) return invalidArgument(prompts_path + ": a prompt is not an array");
    std::vector<model::TokenId> prompt;
    for (const boost::json::value& id : entry.as_array()) {
      if (!id.is_int64()) return invalidArgument(prompts_path + ": a token id is not an integer");
      prompt.push_back(static_cast<model::TokenId>(id.as_int64()));
    }
    for (size_t length = 1; length <= prompt.size(); ++length) {
      ASSIGN_OR_RETURN(const PrefillResult r,
                       engine->prefill(std::span(prompt).first(length), logits));
      RETURN_IF_ERROR(write());
      RETURN_IF_ERROR(engine->release(r.id));
    }
    ASSIGN_OR_RETURN(const PrefillResult r, engine->prefill(prompt, logits));
    boost::json::array tokens;
    model::TokenId token = argmax(logits);
    for (uint32_t step = 0; step < steps; ++step) {
      tokens.push_back(token);
      RETURN_IF_ERROR(engine->decode({&r.id, 1}, {&token, 1}, logits));
      RETURN_IF_ERROR(write());
      token = argmax(logits);
    }
    RETURN_IF_ERROR(engine->release(r.id));
    all_tokens.push_back(std::move(tokens));
  }
  std::ofstream tokens_file(tokens_path);
  tokens_file << boost::json::serialize(all_tokens) << "\n";
  if (!tokens_file) return ioError("write " + tokens_path, errno);
  return Status::ok();
}

}  // namespace
}  // namespace kvferry::engine

int main(int argc, char** argv) {
  const kvferry::Status status = kvferry::engine::run(argc, argv);
  if (!status.isOk()) {
    std::fprintf(stderr, "kvferry-dump-logits: %s\n", status.toString().c_str());
    return 1;
  }
  return 0;
}
