#include "model/hf_writer.h"

#include <sys/stat.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "model/hf_config.h"
#include "model/pre_tokenizer.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;

std::string_view dtypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return "F32";
    case GgmlType::kF16:
      return "F16";
    case GgmlType::kBF16:
      return "BF16";
    default:
      return "";
  }
}

Status writeText(const std::string& path, std::string_view text) {
  return writeFileStreamed(path, [&](const ByteSink& sink) {
    return sink({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  });
}

// A float as the shortest decimal that reads back as the same float.
json::value floatValue(float value) {
  char text[32];
  for (int digits = 6; digits <= 9; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, static_cast<double>(value));
    if (std::strtof(text, nullptr) == value) break;
  }
  return json::value(std::strtod(text, nullptr));
}

}  // namespace

void SafetensorsWriter::addTensor(std::string name, std::vector<uint64_t> shape, GgmlType type,
                                  GgufWriter::TensorFill fill) {
  if (!error_.isOk()) return;
  if (dtypeName(type).empty()) {
    error_ = invalidArgument("tensor '" + name + "': " + ggmlTypeName(type) +
                             " has no safetensors dtype (F32, F16 and BF16 do)");
    return;
  }
  for (const Tensor& tensor : tensors_) {
    if (tensor.name == name) {
      error_ = invalidArgument("duplicate tensor name '" + name + "'");
      return;
    }
  }
  uint64_t elements = 1;
  for (uint64_t dim : shape) elements *= dim;
  const uint64_t bytes = elements * (type == GgmlType::kF32 ? 4 : 2);
  tensors_.push_back(
      {std::move(name), std::move(shape), type, elements, data_bytes_, bytes, std::move(fill)});
  data_bytes_ += bytes;
}

std::string SafetensorsWriter::header() const {
  json::object root;
  root["__metadata__"] = json::object{{"format", "pt"}};
  for (const Tensor& tensor : tensors_) {
    json::array shape(tensor.shape.begin(), tensor.shape.end());
    root[tensor.name] =
        json::object{{"dtype", dtypeName(tensor.type)},
                     {"shape", std::move(shape)},
                     {"data_offsets", json::array{tensor.begin, tensor.begin + tensor.bytes}}};
  }
  std::string text = json::serialize(root);
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

Status SafetensorsWriter::emit(const ByteSink& sink) const {
  if (!error_.isOk()) return error_;
  const std::string text = header();
  const uint64_t length = text.size();
  uint8_t prefix[8];
  std::memcpy(prefix, &length, 8);
  RETURN_IF_ERROR(sink(prefix));
  RETURN_IF_ERROR(sink({reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
  for (const Tensor& tensor : tensors_) {
    RETURN_IF_ERROR(emitGeneratedTensor(tensor.type, tensor.elements, tensor.fill, sink)
                        .withContext("tensor '" + tensor.name + "'"));
  }
  return Status::ok();
}

Result<std::vector<uint8_t>> SafetensorsWriter::serialize() const {
  std::vector<uint8_t> out;
  RETURN_IF_ERROR(emit([&](std::span<const uint8_t> bytes) {
    out.insert(out.end(), bytes.begin(), bytes.end());
    return Status::ok();
  }));
  return out;
}

Status SafetensorsWriter::writeFile(const std::string& path) const {
  if (!error_.isOk()) return error_;
  return writeFileStreamed(path, [&](const ByteSink& sink) { return emit(sink); });
}

std::string hfConfigJson(const RandomLlamaSpec& spec,
                         const std::optional<Llama3RopeScaling>& scaling) {
  const LlamaParams& p = spec.params;
  const Vocabulary vocab = randomLlamaVocabulary(spec);
  std::string_view model_type = "llama";
  std::string_view class_name = "LlamaForCausalLM";
  if (p.architecture == Architecture::kQwen2) {
    model_type = "qwen2";
    class_name = "Qwen2ForCausalLM";
  } else if (p.architecture == Architecture::kQwen3) {
    model_type = "qwen3";
    class_name = "Qwen3ForCausalLM";
  }
  json::object config;
  config["architectures"] = json::array{class_name};
  config["model_type"] = model_type;
  config["vocab_size"] = p.vocab_size;
  config["hidden_size"] = p.embedding_length;
  config["intermediate_size"] = p.feed_forward_length;
  config["num_hidden_layers"] = p.block_count;
  config["num_attention_heads"] = p.head_count;
  config["num_key_value_heads"] = p.head_count_kv;
  config["head_dim"] = p.headDim();
  config["max_position_embeddings"] = p.context_length;
  config["rms_norm_eps"] = floatValue(p.rms_epsilon);
  config["rope_theta"] = floatValue(p.rope_freq_base);
  if (scaling) {
    config["rope_scaling"] =
        json::object{{"rope_type", "llama3"},
                     {"factor", floatValue(scaling->factor)},
                     {"low_freq_factor", floatValue(scaling->low_freq_factor)},
                     {"high_freq_factor", floatValue(scaling->high_freq_factor)},
                     {"original_max_position_embeddings", scaling->original_context}};
  } else {
    config["rope_scaling"] = nullptr;
  }
  config["tie_word_embeddings"] = spec.tied_output;
  config["hidden_act"] = "silu";
  if (p.architecture == Architecture::kQwen2) {
    config["use_sliding_window"] = false;
  } else {
    config["attention_bias"] = false;
    if (p.architecture == Architecture::kQwen3) config["use_sliding_window"] = false;
    if (p.architecture == Architecture::kLlama) config["mlp_bias"] = false;
  }
  config["bos_token_id"] = vocab.bos_id;
  config["eos_token_id"] = vocab.eos_id;
  config["torch_dtype"] = spec.matrix_type == GgmlType::kF32
                              ? "float32"
                              : (spec.matrix_type == GgmlType::kF16 ? "float16" : "bfloat16");
  return json::serialize(config) + "\n";
}

std::string hfTokenizerJson(const Vocabulary& vocab) {
  const auto byte_level = [] {
    return json::object{{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", false},
                        {"use_regex", false}};
  };
  json::array added;
  json::object ids;
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    if (vocab.types[id] == TokenType::kControl) {
      added.push_back(json::object{{"id", id},
                                   {"content", vocab.tokens[id]},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}});
    }
    ids[vocab.tokens[id]] = id;
  }
  const std::optional<PreTokenizer> pre = preTokenizerFromName(vocab.pre);
  json::object root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = std::move(added);
  root["normalizer"] =
      vocab.normalizer == "nfc" ? json::value(json::object{{"type", "NFC"}}) : json::value();
  root["pre_tokenizer"] = json::object{
      {"type", "Sequence"},
      {"pretokenizers",
       json::array{json::object{{"type", "Split"},
                                {"pattern", json::object{{"Regex", pre ? preTokenizerRegex(*pre)
                                                                       : std::string_view()}}},
                                {"behavior", "Isolated"},
                                {"invert", false}},
                   byte_level()}}};
  root["post_processor"] = byte_level();
  root["decoder"] = byte_level();
  root["model"] = json::object{{"type", "BPE"},
                               {"dropout", nullptr},
                               {"unk_token", nullptr},
                               {"continuing_subword_prefix", ""},
                               {"end_of_word_suffix", ""},
                               {"fuse_unk", false},
                               {"byte_fallback", false},
                               {"ignore_merges", vocab.ignore_merges},
                               {"vocab", std::move(ids)},
                               {"merges", json::array(vocab.merges.begin(), vocab.merges.end())}};
  return json::serialize(root) + "\n";
}

Status writeRandomHfModel(const std::string& dir, const RandomLlamaSpec& spec, uint64_t seed,
                          const HfDirectoryOptions& options) {
  RETURN_IF_ERROR(checkRandomLlamaSpec(spec));
  const LlamaParams& p = spec.params;
  if (!spec.bpe_vocabulary) {
    return invalidArgument("a Hugging Face directory needs bpe_vocabulary (tokenizer.json)");
  }
  if (dtypeName(spec.matrix_type).empty()) {
    return invalidArgument(ggmlTypeName(spec.matrix_type) +
                           " matrices have no safetensors dtype (F32, F16 and BF16 do)");
  }
  if (p.rope_dimension_count != p.headDim()) {
    return invalidArgument("config.json cannot say rope_dimension_count " +
                           std::to_string(p.rope_dimension_count) + " < head dimension " +
                           std::to_string(p.headDim()));
  }
  if (!p.rope_freq_factors.empty()) {
    const std::optional<Llama3RopeScaling>& s = options.llama3_scaling;
    if (!s ||
        llama3RopeFactors(p.rope_freq_base, p.rope_dimension_count, s->factor, s->low_freq_factor,
                          s->high_freq_factor, s->original_context) != p.rope_freq_factors) {
      return invalidArgument("rope_freq_factors are not the llama3_scaling given");
    }
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return ioError("mkdir " + dir, errno);

  // llama.cpp's converter permutes each head's Q and K rows of a llama so that RoPE pairs are
  // adjacent: GGUF row h·hd + 2i + j is Hugging Face row h·hd + j·hd/2 + i. Undo it.
  const uint64_t hd = p.headDim();
  const auto gguf_row = [hd](uint64_t hf_row) {
    const uint64_t h = hf_row / hd;
    const uint64_t j = hf_row % hd / (hd / 2);
    const uint64_t i = hf_row % hd % (hd / 2);
    return h * hd + 2 * i + j;
  };
  std::vector<SafetensorsWriter> shards(1);
  std::vector<std::pair<std::string, size_t>> shard_of;  // tensor → shard index
  for (RandomTensor& tensor : randomLlamaTensors(spec, seed)) {
    if (tensor.name == "rope_freqs.weight") continue;  // config.json's rope_scaling says it
    const std::optional<std::string> name = hfNameOfGgufTensor(tensor.name);
    if (!name) return internalError("no Hugging Face name for '" + tensor.name + "'");
    const std::vector<uint64_t> shape(tensor.dims.rbegin(), tensor.dims.rend());
    GgufWriter::TensorFill fill = std::move(tensor.fill);
    const bool permuted =
        p.architecture == Architecture::kLlama &&
        (tensor.name.ends_with(".attn_q.weight") || tensor.name.ends_with(".attn_k.weight"));
    if (permuted) {
      const uint64_t cols = tensor.dims[0];
      fill = [fill = std::move(fill), cols, gguf_row](uint64_t first, std::span<float> out) {
        for (uint64_t done = 0; done < out.size();) {
          const uint64_t element = first + done;
          const uint64_t row = element / cols;
          const uint64_t col = element % cols;
          const uint64_t count = std::min<uint64_t>(cols - col, out.size() - done);
          fill(gguf_row(row) * cols + col, out.subspan(done, count));
          done += count;
        }
      };
    }
    if (options.shard_bytes > 0 && shards.back().dataBytes() > 0 &&
        shards.back().dataBytes() >= options.shard_bytes) {
      shards.emplace_back();
    }
    shards.back().addTensor(*name, shape, tensor.type, std::move(fill));
    shard_of.emplace_back(*name, shards.size() - 1);
  }

  if (options.shard_bytes == 0) {
    RETURN_IF_ERROR(shards[0].writeFile(dir + "/model.safetensors"));
  } else {
    std::vector<std::string> files;
    uint64_t total = 0;
    for (size_t s = 0; s < shards.size(); ++s) {
      char file[64];
      std::snprintf(file, sizeof(file), "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      files.emplace_back(file);
      RETURN_IF_ERROR(shards[s].writeFile(dir + "/" + file));
      total += shards[s].dataBytes();
    }
    json::object weight_map;
    for (const auto& [tensor_name, shard] : shard_of) weight_map[tensor_name] = files[shard];
    json::object index{{"metadata", json::object{{"total_size", total}}},
                       {"weight_map", std::move(weight_map)}};
    RETURN_IF_ERROR(
        writeText(dir + "/model.safetensors.index.json", json::serialize(index) + "\n"));
  }

  const Vocabulary vocab = randomLlamaVocabulary(spec);
  RETURN_IF_ERROR(writeText(dir + "/config.json", hfConfigJson(spec, options.llama3_scaling)));
  RETURN_IF_ERROR(writeText(dir + "/tokenizer.json", hfTokenizerJson(vocab)));
  json::object tokenizer_config{
      {"add_bos_token", vocab.add_bos},          {"add_eos_token", false},
      {"bos_token", vocab.tokens[vocab.bos_id]}, {"eos_token", vocab.tokens[vocab.eos_id]},
      {"model_max_length", p.context_length},    {"tokenizer_class", "PreTrainedTokenizerFast"}};
  if (!spec.chat_template.empty()) tokenizer_config["chat_template"] = spec.chat_template;
  return writeText(dir + "/tokenizer_config.json", json::serialize(tokenizer_config) + "\n");
}

}  // namespace kvferry::model
