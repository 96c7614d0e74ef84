#include "node_agent/load_model.h"

#include <algorithm>

#include "model/cluster_identity.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "node_agent/engine/llama_weights.h"

namespace kvferry::agent {

Result<LoadedModel> loadModel(const config::NodeAgentConfig& config) {
  if (config.model.path.empty()) return invalidArgument("model.path is not set");
  ASSIGN_OR_RETURN(model::GgufFile file, model::GgufFile::open(config.model.path));
  ASSIGN_OR_RETURN(model::Vocabulary vocab, model::readVocabulary(file));
  ASSIGN_OR_RETURN(model::BlockHashSeed seed, model::parseHashSeed(config.model.hash_seed));
  ASSIGN_OR_RETURN(auto weights, engine::LlamaWeights::load(file));
  LoadedModel loaded;
  loaded.identity.model_fingerprint =
      model::hex64(model::modelFingerprint(file, weights->params()));
  loaded.identity.tokenizer_hash = model::hex64(model::vocabularyHash(vocab));
  loaded.identity.hash_seed_id = model::hashSeedId(seed);

  engine::EngineConfig ec;
  ec.block_tokens = config.model.block_tokens;
  ec.num_blocks = config.kv_blocks;
  ec.prefix_caching = config.prefix_caching;
  ec.hash_seed = seed;
  ec.max_batch_tokens = std::max(config.max_batch_tokens, config.max_batch_sequences);
  ec.threads = config.threads;
  ASSIGN_OR_RETURN(loaded.engine, engine::Engine::create(weights, ec));
  return loaded;
}

}  // namespace kvferry::agent
