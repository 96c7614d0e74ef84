// What the orchestrator reads from its model once, at start (DESIGN.md §2–§3) — a GGUF file or a
// Hugging Face directory, through model::ModelFiles as the agents read it: the model id the API
// serves, the tokenizer and chat template it applies to prompts, the stop tokens, the block-hash
// seed, and the cluster identity every agent is checked against at registration.
// Immutable after load(); any thread may read it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "model/block_hash.h"
#include "model/llama_params.h"
#include "model/tokenizer.h"
#include "orchestrator/openai/chat_template.h"
#include "orchestrator/registry.h"

namespace kvferry::orchestrator {

struct ServedModel {
  // The model id of the API: config model.name, else the GGUF file's stem or the directory's name.
  std::string name;
  model::LlamaParams params;
  std::unique_ptr<model::Tokenizer> tokenizer;
  openai::ChatTemplate chat_template;
  std::vector<model::TokenId> stop_tokens;  // EOS, generation_config's, the template's end of turn
  model::BlockHashSeed hash_seed;
  ClusterIdentity identity;

  // Opens config.path; errors name the file (or model.hash_seed).
  static Result<ServedModel> load(const config::ModelConfig& config);
};

}  // namespace kvferry::orchestrator
