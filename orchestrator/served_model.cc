#include "orchestrator/served_model.h"

#include <filesystem>
#include <utility>

#include "model/cluster_identity.h"
#include "model/model_files.h"

namespace kvferry::orchestrator {
namespace {

// The model id when the config names none: a GGUF file's name without its extension, a
// directory's name as it is ("Qwen2.5-7B-Instruct" keeps its dot).
std::string defaultName(const model::ModelFiles& files) {
  std::filesystem::path path(files.path());
  if (!path.has_filename()) path = path.parent_path();  // "dir/"
  return files.format() == model::ModelFormat::kGguf ? path.stem().string()
                                                     : path.filename().string();
}

}  // namespace

Result<ServedModel> ServedModel::load(const config::ModelConfig& config) {
  if (config.path.empty()) {
    return invalidArgument("no model file: set model.path in the config or pass --model PATH");
  }
  ASSIGN_OR_RETURN(model::ModelFiles files, model::ModelFiles::open(config.path));
  ServedModel served;
  served.params = files.params();
  Result<std::unique_ptr<model::Tokenizer>> tokenizer = model::makeTokenizer(files.vocabulary());
  if (!tokenizer.isOk()) return tokenizer.status().withContext(config.path);
  served.tokenizer = std::move(tokenizer).value();
  ASSIGN_OR_RETURN(served.chat_template, openai::ChatTemplate::fromModel(files));
  served.stop_tokens =
      served.chat_template.stopTokens(*served.tokenizer, files.generationStopTokens());
  Result<model::BlockHashSeed> seed = model::parseHashSeed(config.hash_seed);
  if (!seed.isOk()) return seed.status().withContext("model.hash_seed");
  served.hash_seed = *seed;
  served.name = config.name.empty() ? defaultName(files) : config.name;
  served.identity.model_fingerprint = model::hex64(files.fingerprint());
  served.identity.tokenizer_hash =
      model::hex64(model::vocabularyHash(served.tokenizer->vocabulary()));
  served.identity.block_tokens = config.block_tokens;
  served.identity.hash_seed_id = model::hashSeedId(served.hash_seed);
  served.identity.layers = served.params.block_count;
  served.identity.kv_heads = served.params.head_count_kv;
  served.identity.head_dim = served.params.headDim();
  return served;
}

}  // namespace kvferry::orchestrator
