#include "orchestrator/served_model.h"

#include <filesystem>
#include <utility>

#include "model/cluster_identity.h"
#include "model/gguf.h"

namespace kvferry::orchestrator {

Result<ServedModel> ServedModel::load(const config::ModelConfig& config) {
  if (config.path.empty()) {
    return invalidArgument("no model file: set model.path in the config or pass --model PATH");
  }
  ASSIGN_OR_RETURN(model::GgufFile file, model::GgufFile::open(config.path));
  ServedModel served;
  Result<model::LlamaParams> params = model::readLlamaParams(file);
  if (!params.isOk()) return params.status().withContext(config.path);
  served.params = *params;
  Result<std::unique_ptr<model::Tokenizer>> tokenizer = model::makeTokenizer(file);
  if (!tokenizer.isOk()) return tokenizer.status().withContext(config.path);
  served.tokenizer = std::move(tokenizer).value();
  served.chat_template = openai::ChatTemplate::fromGguf(file);
  served.stop_tokens = served.chat_template.stopTokens(*served.tokenizer);
  Result<model::BlockHashSeed> seed = model::parseHashSeed(config.hash_seed);
  if (!seed.isOk()) return seed.status().withContext("model.hash_seed");
  served.hash_seed = *seed;
  served.name =
      config.name.empty() ? std::filesystem::path(config.path).stem().string() : config.name;
  served.identity.model_fingerprint = model::hex64(model::modelFingerprint(file, served.params));
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
