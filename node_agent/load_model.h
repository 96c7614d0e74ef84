// What main() builds from the config for the agent: the model runtime over the GGUF file
// (model.path) with the engine settings, and the model's identity in the cluster.
#pragma once

#include <filesystem>
#include <memory>

#include "common/status.h"
#include "config/config.h"
#include "model/model_files.h"
#include "node_agent/agent.h"
#include "node_agent/engine/engine.h"

namespace kvferry::agent {

struct LoadedModel {
  std::unique_ptr<engine::Engine> engine;
  ModelIdentity identity;
};

// The model's identity in the cluster (what the orchestrator compares at registration) from its
// files and the config's `model.hash_seed`; INVALID_ARGUMENT for a malformed seed. The device is
// the CPU's.
Result<ModelIdentity> modelIdentity(const model::ModelFiles& files, std::string_view hash_seed);

// Reads the model, its tokenizer and the block-hash seed, and creates the engine: the CPU runtime
// with engine.kv_blocks blocks of model.block_tokens tokens, or with engine.gpu set the CUDA
// runtime on that GPU (kv_blocks 0: as many as engine.gpu_memory_fraction of its memory holds).
// A GPU index that does not exist, a model that does not fit, a build without CUDA: each a clear
// error.
Result<LoadedModel> loadModel(const config::NodeAgentConfig& config);

// Resolves `transport.rails: [auto]` (verbs) in place: every RDMA device in <sysfs>, the one
// nearest engine.gpu on the PCIe tree first, by name on the CPU runtime (engine.gpu < 0); logs
// the order. Anything else is left as it is (rdma::makeTransport refuses an `auto` left there).
// Errors name transport.rails: no RDMA device, a GPU whose PCI address CUDA or sysfs lacks.
Status resolveAutoRails(config::NodeAgentConfig& config,
                        const std::filesystem::path& sysfs = "/sys");

}  // namespace kvferry::agent
