// kvferry-generate: runs the CPU engine on one prompt and prints the text, as an agent would
// compute it. A usage error or a bad model stops it with one line on stderr.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "model/model_files.h"
#include "model/tokenizer.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/generate.h"
#include "node_agent/engine/llama_weights.h"

namespace kvferry::engine {
namespace {

constexpr char kUsage[] =
    "usage: kvferry-generate --model PATH --prompt TEXT [options]\n"
    "\n"
    "Generates text from a llama, qwen2 or qwen3 model (F32, F16, BF16 or Q8_0 weights) on the "
    "CPU.\n"
    "\n"
    "  --model PATH     a GGUF file or a Hugging Face model directory\n"
    "  --prompt TEXT    the prompt (BOS is added when the model asks for it)\n"
    "  -n N             tokens to generate at most (default 128)\n"
    "  --temp T         temperature; 0 = greedy (default 0)\n"
    "  --top-k K        sample from the K most likely tokens; 0 = all (default 0)\n"
    "  --top-p P        nucleus sampling mass, in (0, 1] (default 1)\n"
    "  --seed S         random seed for sampling (default 0)\n"
    "  --threads N      CPU threads; 0 = all (default 0)\n"
    "  -h, --help       this text\n"
    "\n"
    "The prompt and the generated text go to stdout; timings to stderr. Generation stops at the\n"
    "model's end-of-sequence token, after N tokens, or at the end of its context.\n";

struct Options {
  std::string model;
  std::optional<std::string> prompt;
  uint32_t max_new_tokens = 128;
  SamplingParams sampling;
  uint32_t threads = 0;
};

template <typename T>
Status parseNumber(std::string_view flag, std::string_view text, T& out) {
  const char* end = text.data() + text.size();
  const auto [ptr, error] = std::from_chars(text.data(), end, out);
  if (error != std::errc() || ptr != end) {
    return invalidArgument(std::string(flag) + ": '" + std::string(text) + "' is not a valid " +
                           (std::is_floating_point_v<T> ? "number" : "non-negative integer"));
  }
  return Status::ok();
}

// Returns nullopt after printing the usage for --help.
Result<std::optional<Options>> parseArgs(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") return std::optional<Options>();
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + ": missing value");
    const std::string_view value = argv[++i];
    if (flag == "--model") {
      options.model = value;
    } else if (flag == "--prompt") {
      options.prompt = std::string(value);
    } else if (flag == "-n") {
      RETURN_IF_ERROR(parseNumber(flag, value, options.max_new_tokens));
    } else if (flag == "--temp") {
      RETURN_IF_ERROR(parseNumber(flag, value, options.sampling.temperature));
    } else if (flag == "--top-k") {
      RETURN_IF_ERROR(parseNumber(flag, value, options.sampling.top_k));
    } else if (flag == "--top-p") {
      RETURN_IF_ERROR(parseNumber(flag, value, options.sampling.top_p));
    } else if (flag == "--seed") {
      RETURN_IF_ERROR(parseNumber(flag, value, options.sampling.seed));
    } else if (flag == "--threads") {
      RETURN_IF_ERROR(parseNumber(flag, value, options.threads));
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (options.model.empty()) return invalidArgument("--model is required (see --help)");
  if (!options.prompt) return invalidArgument("--prompt is required (see --help)");
  RETURN_IF_ERROR(validateSamplingParams(options.sampling));
  return std::optional<Options>(std::move(options));
}

Status run(const Options& options) {
  ASSIGN_OR_RETURN(const model::ModelFiles files, model::ModelFiles::open(options.model));
  Result<std::unique_ptr<model::Tokenizer>> made = model::makeTokenizer(files.vocabulary());
  if (!made.isOk()) return made.status().withContext(options.model);
  const std::unique_ptr<model::Tokenizer> tokenizer = std::move(made).value();
  const model::Vocabulary& vocab = tokenizer->vocabulary();
  ASSIGN_OR_RETURN(const std::vector<model::TokenId> prompt,
                   tokenizer->encode(*options.prompt, {.add_bos = vocab.add_bos}));
  if (prompt.empty()) return invalidArgument("the prompt is empty and the model adds no BOS");
  Result<std::shared_ptr<const LlamaWeights>> weights = LlamaWeights::load(files);
  if (!weights.isOk()) return weights.status();

  // Blocks for the prompt and every token asked for, within the model's context.
  EngineConfig config;
  const uint64_t tokens = std::min<uint64_t>(prompt.size() + uint64_t{options.max_new_tokens},
                                             (*weights)->params().context_length);
  config.num_blocks =
      static_cast<uint32_t>((tokens + config.block_tokens - 1) / config.block_tokens);
  config.num_blocks = std::max(config.num_blocks, 1u);
  config.threads = options.threads;
  ASSIGN_OR_RETURN(const std::unique_ptr<Engine> engine, Engine::create(*weights, config));

  GenerateOptions generate_options;
  generate_options.sampling = options.sampling;
  generate_options.max_new_tokens = options.max_new_tokens;
  if (vocab.eos_id != model::kNoToken) generate_options.stop_tokens.push_back(vocab.eos_id);
  for (model::TokenId id : files.generationStopTokens()) {
    if (id != vocab.eos_id) generate_options.stop_tokens.push_back(id);
  }

  // Text is printed as it comes: the new suffix of the whole sequence's text, so SentencePiece's
  // leading-space rule and multi-byte characters split over tokens come out right.
  std::vector<model::TokenId> all = prompt;
  ASSIGN_OR_RETURN(std::string text, tokenizer->decode(all));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  size_t printed = text.size();
  Status print_status;
  const auto on_token = [&](model::TokenId token) {
    all.push_back(token);
    Result<std::string> now = tokenizer->decode(all);
    if (!now.isOk()) {
      print_status = now.status();
      return false;
    }
    std::fwrite(now->data() + printed, 1, now->size() - printed, stdout);
    std::fflush(stdout);
    printed = now->size();
    return true;
  };

  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const GenerateResult result,
                   generate(*engine, prompt, generate_options, on_token));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RETURN_IF_ERROR(print_status);
  std::fputc('\n', stdout);
  const char* reason = result.finish_reason == FinishReason::kStop ? "the end-of-sequence token"
                       : result.finish_reason == FinishReason::kContextFull
                           ? "the end of the model's context"
                           : "the token limit (-n)";
  std::fprintf(stderr,
               "kvferry-generate: %zu prompt tokens, %zu generated in %.3f s with the prefill "
               "(%.1f generated tokens/s); stopped at %s\n",
               prompt.size(), result.tokens.size(), seconds,
               seconds > 0 ? static_cast<double>(result.tokens.size()) / seconds : 0.0, reason);
  return Status::ok();
}

}  // namespace
}  // namespace kvferry::engine

int main(int argc, char** argv) {
  using kvferry::engine::kUsage;
  kvferry::Result<std::optional<kvferry::engine::Options>> options =
      kvferry::engine::parseArgs(argc, argv);
  if (!options.isOk()) {
    std::fprintf(stderr, "kvferry-generate: %s\n", options.status().message().c_str());
    return 2;
  }
  if (!options->has_value()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const kvferry::Status status = kvferry::engine::run(**options);
  if (!status.isOk()) {
    std::fprintf(stderr, "kvferry-generate: %s\n", status.toString().c_str());
    return 1;
  }
  return 0;
}
