// kvferry-make-model: writes a random-weight llama model at the shape of a public checkpoint, as
// a GGUF file plus the Hugging Face config.json of the same model, so the engine and an
// independent implementation (transformers, reading the GGUF's tensors) can run identical
// weights. Nothing is downloaded: the weights come from a seed (model/gguf_writer.h).

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "model/gguf_writer.h"
#include "model/llama_params.h"
#include "model/model_shapes.h"

namespace kvferry::model {
namespace {

constexpr char kUsage[] = R"(usage: kvferry-make-model --shape NAME --out DIR [options]

Writes DIR/model.gguf (random weights from a seed, a synthetic SentencePiece vocabulary) and
DIR/config.json (the same model's Hugging Face LlamaConfig, for transformers).

  --shape NAME   llama-3.2-1b, llama-3.1-8b (rope_scaling llama3, as the checkpoints),
                 tinyllama-1.1b, stories15M, stories110M, or tiny (2 layers, dim 256)
  --out DIR      created if missing
  --seed N       (default 1)
  --type T       bf16 (default), f16 or f32: the matrices' storage; norms stay f32
  --layers N     override the layer count (a shorter model of the same width)
  -h, --help     this text
)";

std::string configJson(const ModelShape& shape) {
  const LlamaParams& p = shape.params;
  char text[2048];
  std::string scaling = "null";
  if (shape.scaling.factor > 0) {
    char buffer[256];
    std::snprintf(buffer, sizeof(buffer),
                  "{\"rope_type\": \"llama3\", \"factor\": %g, \"low_freq_factor\": %g, "
                  "\"high_freq_factor\": %g, \"original_max_position_embeddings\": %u}",
                  shape.scaling.factor, shape.scaling.low_freq_factor,
                  shape.scaling.high_freq_factor, shape.scaling.original_context);
    scaling = buffer;
  }
  std::snprintf(
      text, sizeof(text),
      "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
      "  \"vocab_size\": %u,\n  \"hidden_size\": %u,\n  \"intermediate_size\": %u,\n"
      "  \"num_hidden_layers\": %u,\n  \"num_attention_heads\": %u,\n"
      "  \"num_key_value_heads\": %u,\n  \"head_dim\": %u,\n"
      "  \"max_position_embeddings\": %u,\n  \"rms_norm_eps\": %g,\n"
      "  \"rope_theta\": %.1f,\n  \"rope_scaling\": %s,\n  \"tie_word_embeddings\": %s,\n"
      "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"mlp_bias\": false,\n"
      "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"torch_dtype\": \"bfloat16\"\n}\n",
      p.vocab_size, p.embedding_length, p.feed_forward_length, p.block_count, p.head_count,
      p.head_count_kv, p.headDim(), p.context_length, static_cast<double>(p.rms_epsilon),
      static_cast<double>(p.rope_freq_base), scaling.c_str(), shape.tied ? "true" : "false");
  return text;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "kvferry-make-model: %s\n", message.c_str());
  return 2;
}

int run(int argc, char** argv) {
  std::string shape_name;
  std::string out;
  uint64_t seed = 1;
  uint32_t layers = 0;
  GgmlType type = GgmlType::kBF16;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return fail(std::string(flag) + ": missing value (see --help)");
    const std::string_view value = argv[++i];
    const auto number = [&](auto& target) {
      const auto [ptr, error] = std::from_chars(value.data(), value.data() + value.size(), target);
      return error == std::errc() && ptr == value.data() + value.size();
    };
    if (flag == "--shape") {
      shape_name = value;
    } else if (flag == "--out") {
      out = value;
    } else if (flag == "--seed") {
      if (!number(seed)) return fail("--seed: '" + std::string(value) + "' is not a number");
    } else if (flag == "--layers") {
      if (!number(layers) || layers == 0) return fail("--layers: a positive number");
    } else if (flag == "--type") {
      if (value == "bf16") {
        type = GgmlType::kBF16;
      } else if (value == "f16") {
        type = GgmlType::kF16;
      } else if (value == "f32") {
        type = GgmlType::kF32;
      } else {
        return fail("--type: '" + std::string(value) + "' is not bf16, f16 or f32");
      }
    } else {
      return fail("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (shape_name.empty() || out.empty()) return fail("--shape and --out are required (see --help)");
  const ModelShape* known = findModelShape(shape_name);
  if (known == nullptr) return fail("unknown shape '" + shape_name + "' (see --help)");
  ModelShape chosen = *known;
  ModelShape* shape = &chosen;
  if (layers != 0) shape->params.block_count = layers;
  std::error_code error;
  std::filesystem::create_directories(out, error);
  if (error) return fail("mkdir " + out + ": " + error.message());
  const std::string gguf = out + "/model.gguf";
  const Status written = writeRandomLlamaModel(gguf, {shape->params, type, shape->tied}, seed);
  if (!written.isOk()) return fail(written.toString());
  std::ofstream config(out + "/config.json");
  config << configJson(*shape);
  if (!config) return fail("write " + out + "/config.json");
  std::printf("kvferry-make-model: %s (%u layers, seed %llu) -> %s, %s/config.json\n",
              shape->name.data(), shape->params.block_count, static_cast<unsigned long long>(seed),
              gguf.c_str(), out.c_str());
  return 0;
}

}  // namespace
}  // namespace kvferry::model

int main(int argc, char** argv) { return kvferry::model::run(argc, argv); }
