#include "model/model_files.h"

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "common/json_kind.h"
#include "model/hf_config.h"
#include "model/json_document.h"
#include "model/mapped_file.h"
#include "model/safetensors.h"
#include "model/tokenizer_files.h"

namespace kvferry::model {

namespace fs = std::filesystem;
namespace json = boost::json;

struct ModelFiles::Contents {
  std::string path;
  ModelFormat format = ModelFormat::kGguf;
  std::optional<GgufFile> gguf;
  std::vector<SafetensorsFile> shards;
  std::vector<std::string> view_names;  // the engine names the views point into
  std::vector<GgufTensor> views;        // the safetensors tensors, GGUF-shaped
  LlamaParams params;
  LlamaTensors tensors;
  Vocabulary vocabulary;
  std::string chat_template;
  std::string tool_use_chat_template;
  std::vector<TokenId> stop_tokens;
  uint64_t fingerprint = 0;
};

namespace {

constexpr std::string_view kIndexJson = "model.safetensors.index.json";
constexpr std::string_view kSingleFile = "model.safetensors";

Result<std::string> readText(const fs::path& path) {
  ASSIGN_OR_RETURN(MappedFile file, MappedFile::open(path.string()));
  return std::string(reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size());
}

bool present(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// The shard files: the index's weight_map (tensor → file), or model.safetensors alone. Each
// tensor's file when there is an index.
struct ShardList {
  std::vector<std::string> files;                      // base names, in first-mention order
  std::unordered_map<std::string, std::string> owner;  // tensor → file, from the index
  bool indexed = false;
};

Result<ShardList> listShards(const fs::path& dir) {
  ShardList list;
  if (present(dir / kIndexJson)) {
    list.indexed = true;
    ASSIGN_OR_RETURN(std::string text, readText(dir / kIndexJson));
    ASSIGN_OR_RETURN(json::value document, internal::parseJsonDocument(text, kIndexJson));
    const json::object* root = document.if_object();
    const json::value* map = root != nullptr ? root->if_contains("weight_map") : nullptr;
    if (map == nullptr || !map->is_object()) {
      return invalidArgument(std::string(kIndexJson) + ": no weight_map object");
    }
    for (const auto& [tensor, file_value] : map->get_object()) {
      const json::string* file = file_value.if_string();
      if (file == nullptr) {
        return invalidArgument(std::string(kIndexJson) + ": weight_map." + std::string(tensor) +
                               " is " + std::string(jsonKindName(file_value)) + ", not a string");
      }
      const std::string_view name(*file);
      // A plain file name beside the index: never a path out of the directory.
      if (name.empty() || name.find('/') != std::string_view::npos || name == "." || name == ".." ||
          !name.ends_with(".safetensors")) {
        return invalidArgument(std::string(kIndexJson) + ": weight_map." + std::string(tensor) +
                               " names '" + printable(name) +
                               "', not a .safetensors file in the model's directory");
      }
      if (std::ranges::find(list.files, name) == list.files.end()) list.files.emplace_back(name);
      list.owner.emplace(tensor, name);
    }
    if (list.files.empty()) return invalidArgument(std::string(kIndexJson) + ": empty weight_map");
    return list;
  }
  if (present(dir / kSingleFile)) {
    list.files.emplace_back(kSingleFile);
    return list;
  }
  std::error_code ec;
  size_t others = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") ++others;
  }
  if (others > 0) {
    return notFound(std::to_string(others) + " .safetensors files but no " +
                    std::string(kIndexJson) + " naming which tensor is in which");
  }
  return notFound("no " + std::string(kSingleFile) + " or " + std::string(kIndexJson) +
                  " (a Hugging Face model directory holds its weights as safetensors)");
}

// The extra end-of-turn ids of generation_config.json, when the directory has one.
Result<std::vector<TokenId>> readGenerationStops(const fs::path& dir, size_t vocab_size) {
  std::vector<TokenId> ids;
  const fs::path path = dir / "generation_config.json";
  if (!present(path)) return ids;
  ASSIGN_OR_RETURN(std::string text, readText(path));
  ASSIGN_OR_RETURN(json::value document,
                   internal::parseJsonDocument(text, "generation_config.json"));
  const json::object* root = document.if_object();
  const json::value* eos = root != nullptr ? root->if_contains("eos_token_id") : nullptr;
  if (eos == nullptr || eos->is_null()) return ids;
  std::vector<const json::value*> values;
  if (const json::array* list = eos->if_array()) {
    for (const json::value& v : *list) values.push_back(&v);
  } else {
    values.push_back(eos);
  }
  for (const json::value* v : values) {
    boost::system::error_code ec;
    const auto id = v->to_number<int64_t>(ec);
    if (ec || id < 0 || static_cast<uint64_t>(id) >= vocab_size) {
      return invalidArgument("generation_config.json: eos_token_id holds " + json::serialize(*v) +
                             ", not a token id of the vocabulary");
    }
    if (std::ranges::find(ids, id) == ids.end()) ids.push_back(static_cast<TokenId>(id));
  }
  return ids;
}

// tokenizer_config.json's chat_template: a string, or a list of {name, template}.
Status readChatTemplates(const fs::path& dir, std::string& main, std::string& tool_use) {
  if (present(dir / "chat_template.jinja")) {
    ASSIGN_OR_RETURN(main, readText(dir / "chat_template.jinja"));
    return Status::ok();
  }
  if (!present(dir / "tokenizer_config.json")) return Status::ok();
  ASSIGN_OR_RETURN(std::string text, readText(dir / "tokenizer_config.json"));
  ASSIGN_OR_RETURN(json::value document,
                   internal::parseJsonDocument(text, "tokenizer_config.json"));
  const json::object* root = document.if_object();
  const json::value* value = root != nullptr ? root->if_contains("chat_template") : nullptr;
  if (value == nullptr || value->is_null()) return Status::ok();
  if (const json::string* source = value->if_string()) {
    main = *source;
    return Status::ok();
  }
  const json::array* list = value->if_array();
  if (list == nullptr) {
    return invalidArgument("tokenizer_config.json: chat_template is " +
                           std::string(jsonKindName(*value)) + ", not a string or a list");
  }
  for (const json::value& item : *list) {
    const json::object* named = item.if_object();
    const json::value* name = named != nullptr ? named->if_contains("name") : nullptr;
    const json::value* source = named != nullptr ? named->if_contains("template") : nullptr;
    if (name == nullptr || !name->is_string() || source == nullptr || !source->is_string()) {
      return invalidArgument(
          "tokenizer_config.json: chat_template lists an entry without a string name and "
          "template");
    }
    if (name->get_string() == "default") main = source->get_string();
    if (name->get_string() == "tool_use") tool_use = source->get_string();
  }
  return Status::ok();
}

Status openDirectory(const fs::path& dir, ModelFiles::Contents& c);

}  // namespace

std::string_view modelFormatName(ModelFormat format) {
  return format == ModelFormat::kGguf ? "gguf" : "safetensors";
}

ModelFiles::ModelFiles(std::unique_ptr<Contents> contents) : contents_(std::move(contents)) {}
ModelFiles::ModelFiles(ModelFiles&&) noexcept = default;
ModelFiles& ModelFiles::operator=(ModelFiles&&) noexcept = default;
ModelFiles::~ModelFiles() = default;

const std::string& ModelFiles::path() const { return contents_->path; }
ModelFormat ModelFiles::format() const { return contents_->format; }
const LlamaParams& ModelFiles::params() const { return contents_->params; }
const LlamaTensors& ModelFiles::tensors() const { return contents_->tensors; }
const Vocabulary& ModelFiles::vocabulary() const { return contents_->vocabulary; }
const std::string& ModelFiles::chatTemplate() const { return contents_->chat_template; }
const std::string& ModelFiles::toolUseChatTemplate() const {
  return contents_->tool_use_chat_template;
}
const std::vector<TokenId>& ModelFiles::generationStopTokens() const {
  return contents_->stop_tokens;
}
uint64_t ModelFiles::fingerprint() const { return contents_->fingerprint; }
const GgufFile* ModelFiles::gguf() const { return contents_->gguf ? &*contents_->gguf : nullptr; }

Result<ModelFiles> ModelFiles::open(const std::string& path) {
  auto c = std::make_unique<Contents>();
  c->path = path;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return notFound(path +
                    ": no such file or directory (expected a GGUF file or a Hugging Face model "
                    "directory)");
  }
  if (fs::is_directory(status)) {
    c->format = ModelFormat::kSafetensors;
    RETURN_IF_ERROR(openDirectory(path, *c).withContext(path));
    return ModelFiles(std::move(c));
  }
  c->format = ModelFormat::kGguf;
  ASSIGN_OR_RETURN(c->gguf, GgufFile::open(path));
  const GgufFile& file = *c->gguf;
  Status status_read = [&]() -> Status {
    ASSIGN_OR_RETURN(c->params, readLlamaParams(file));
    ASSIGN_OR_RETURN(c->tensors, findLlamaTensors(file, c->params));
    ASSIGN_OR_RETURN(c->vocabulary, readVocabulary(file));
    std::string_view chat_template;
    RETURN_IF_ERROR(file.getIfPresent("tokenizer.chat_template", chat_template));
    c->chat_template = chat_template;
    return Status::ok();
  }();
  RETURN_IF_ERROR(status_read.withContext(path));
  c->fingerprint = modelFingerprint(file, c->params);
  return ModelFiles(std::move(c));
}

namespace {

Status openDirectory(const fs::path& dir, ModelFiles::Contents& c) {
  if (!present(dir / "config.json")) {
    return notFound("no config.json (expected a Hugging Face model directory)");
  }
  ASSIGN_OR_RETURN(std::string config_text, readText(dir / "config.json"));
  ASSIGN_OR_RETURN(HfModelConfig config, parseHfConfig(config_text));
  c.params = config.params;

  ASSIGN_OR_RETURN(ShardList shards, listShards(dir));
  c.shards.reserve(shards.files.size());
  for (const std::string& file : shards.files) {
    ASSIGN_OR_RETURN(SafetensorsFile shard, SafetensorsFile::open((dir / file).string()));
    c.shards.push_back(std::move(shard));
  }

  // Every tensor of every shard, named as the engine names it.
  struct Source {
    const SafetensorsTensor* tensor;
    std::string_view file;  // base name
  };
  std::map<std::string, Source, std::less<>> by_engine_name;
  std::unordered_map<std::string, std::string_view> hf_files;  // for messages about HF names
  for (size_t s = 0; s < c.shards.size(); ++s) {
    const std::string_view file = shards.files[s];
    for (const SafetensorsTensor& tensor : c.shards[s].tensors()) {
      const std::string where = std::string(file) + ": tensor '" + printable(tensor.name) + "'";
      if (shards.indexed) {
        const auto owner = shards.owner.find(tensor.name);
        if (owner == shards.owner.end()) {
          return invalidArgument(where + " is not listed in " + std::string(kIndexJson));
        }
        if (owner->second != file) continue;  // another copy, in the file the index names
      }
      if (tensor.name.ends_with(".self_attn.rotary_emb.inv_freq")) continue;  // recomputed
      if (tensor.name == "lm_head.weight" && config.tie_word_embeddings) continue;
      const std::optional<std::string> engine_name = ggufNameOfHfTensor(tensor.name);
      if (!engine_name) {
        return invalidArgument(where + " is not part of a " + config.model_type +
                               " model this runtime computes");
      }
      if (!ggmlTypeOfDtype(tensor.dtype)) {
        return invalidArgument(where + " has dtype " + tensor.dtype +
                               " (F32, F16 and BF16 are supported)");
      }
      if (tensor.shape.size() > kGgufMaxDims) {
        return invalidArgument(where + " has " + std::to_string(tensor.shape.size()) +
                               " dimensions");
      }
      by_engine_name.emplace(*engine_name, Source{&tensor, file});
      hf_files.emplace(tensor.name, file);
    }
  }
  if (shards.indexed) {
    for (const auto& [tensor, file] : shards.owner) {
      if (!hf_files.contains(tensor) && !tensor.ends_with(".self_attn.rotary_emb.inv_freq") &&
          !(tensor == "lm_head.weight" && config.tie_word_embeddings)) {
        return invalidArgument(std::string(kIndexJson) + " puts tensor '" + printable(tensor) +
                               "' in " + file + ", which does not hold it");
      }
    }
  }
  if (!config.tie_word_embeddings && !by_engine_name.contains("output.weight")) {
    return invalidArgument(
        "missing tensor 'lm_head.weight' (config.json: tie_word_embeddings is false)");
  }

  // The views: GgufTensor-shaped, names and data pointing into this Contents and the mappings.
  c.view_names.reserve(by_engine_name.size());
  for (const auto& entry : by_engine_name) c.view_names.push_back(entry.first);
  c.views.reserve(by_engine_name.size());
  for (const std::string& name : c.view_names) {
    const SafetensorsTensor& tensor = *by_engine_name.at(name).tensor;
    GgufTensor view;
    view.name = name;
    view.n_dims = static_cast<uint32_t>(tensor.shape.size());
    std::ranges::reverse_copy(tensor.shape, view.dims.begin());
    view.type = *ggmlTypeOfDtype(tensor.dtype);
    view.offset = tensor.data_begin;
    view.element_count = tensor.element_count;
    view.data = tensor.data;
    c.views.push_back(view);
  }
  TensorNaming naming;
  naming.pytorch_order = true;
  naming.describe = [&](std::string_view engine_name) {
    const std::string hf = hfNameOfGgufTensor(engine_name).value_or(std::string(engine_name));
    const auto found = by_engine_name.find(engine_name);
    return "tensor '" + hf + "'" +
           (found != by_engine_name.end() ? " (" + std::string(found->second.file) + ")" : "");
  };
  ASSIGN_OR_RETURN(c.tensors, findLlamaTensors(c.views, c.params, naming));

  ASSIGN_OR_RETURN(c.vocabulary, loadVocabulary(dir.string()));
  if (c.vocabulary.tokens.size() > c.params.vocab_size) {
    return invalidArgument("tokenizer.json has " + std::to_string(c.vocabulary.tokens.size()) +
                           " tokens, more than config.json's vocab_size " +
                           std::to_string(c.params.vocab_size));
  }
  RETURN_IF_ERROR(readChatTemplates(dir, c.chat_template, c.tool_use_chat_template));
  ASSIGN_OR_RETURN(c.stop_tokens, readGenerationStops(dir, c.vocabulary.tokens.size()));

  const std::string kind = "safetensors/" + std::string(architectureName(c.params.architecture));
  c.fingerprint = modelFingerprint(kind, c.views, c.params, [&](SipHasher& hasher) {
    hasher.addU32(c.params.head_dim).addU32(c.params.rope_neox ? 1 : 0);
    hasher.addU64(c.params.rope_freq_factors.size());
    for (float factor : c.params.rope_freq_factors) hasher.addF32(factor);
  });
  return Status::ok();
}

}  // namespace
}  // namespace kvferry::model
