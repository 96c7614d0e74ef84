// What main() builds from the config for the agent: the model runtime over the GGUF file
// (model.path) with the engine settings, and the model's identity in the cluster.
#pragma once

#include <memory>

#include "common/status.h"
#include "config/config.h"
#include "node_agent/agent.h"
#include "node_agent/engine/engine.h"

namespace kvferry::agent {

struct LoadedModel {
  std::unique_ptr<engine::Engine> engine;
  ModelIdentity identity;
};

// Reads the model, its tokenizer and the block-hash seed, and creates a CPU engine with
// engine.kv_blocks blocks of model.block_tokens tokens.
Result<LoadedModel> loadModel(const config::NodeAgentConfig& config);

}  // namespace kvferry::agent
