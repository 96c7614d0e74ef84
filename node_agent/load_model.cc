#include "node_agent/load_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <vector>

#include "model/cluster_identity.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "node_agent/engine/cuda_runner.h"
#include "node_agent/engine/llama_weights.h"
#include "rdma/nic_topology.h"

namespace kvferry::agent {

Result<ModelIdentity> modelIdentity(const model::ModelFiles& files, std::string_view hash_seed) {
  ASSIGN_OR_RETURN(model::BlockHashSeed seed, model::parseHashSeed(hash_seed));
  ModelIdentity identity;
  identity.model_fingerprint = model::hex64(files.fingerprint());
  identity.tokenizer_hash = model::hex64(model::vocabularyHash(files.vocabulary()));
  identity.hash_seed_id = model::hashSeedId(seed);
  return identity;
}

Result<LoadedModel> loadModel(const config::NodeAgentConfig& config) {
  if (config.model.path.empty()) return invalidArgument("model.path is not set");
  // A GGUF file or a Hugging Face directory: params, weights, vocabulary and fingerprint alike.
  ASSIGN_OR_RETURN(model::ModelFiles files, model::ModelFiles::open(config.model.path));
  ASSIGN_OR_RETURN(model::BlockHashSeed seed, model::parseHashSeed(config.model.hash_seed));
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.identity, modelIdentity(files, config.model.hash_seed));

  engine::EngineConfig ec;
  ec.block_tokens = config.model.block_tokens;
  ec.num_blocks = config.kv_blocks;
  ec.prefix_caching = config.prefix_caching;
  ec.hash_seed = seed;
  ec.max_batch_tokens = std::max(config.max_batch_tokens, config.max_batch_sequences);
  ec.threads = config.threads;
  if (config.gpu < 0) {
    if (config.kv_blocks == 0) {
      return invalidArgument(
          "engine.kv_blocks: 0 (as many as fit) needs engine.gpu; the CPU "
          "runtime takes a block count");
    }
    ASSIGN_OR_RETURN(auto weights, engine::LlamaWeights::load(files));
    ASSIGN_OR_RETURN(loaded.engine, engine::Engine::create(weights, ec));
    return loaded;
  }
  // The CUDA runtime: bfloat16 weights and KV on engine.gpu, the pools sized from its memory
  // when kv_blocks is 0.
  ASSIGN_OR_RETURN(engine::GpuInfo gpu, engine::describeGpu(config.gpu));
  engine::CudaRunnerConfig cuda;
  cuda.device = config.gpu;
  cuda.block_tokens = config.model.block_tokens;
  cuda.num_blocks = config.kv_blocks;
  cuda.memory_fraction = static_cast<float>(config.gpu_memory_fraction);
  cuda.max_batch_tokens = ec.max_batch_tokens;
  cuda.max_batch_sequences = config.max_batch_sequences;
  ASSIGN_OR_RETURN(std::unique_ptr<engine::ModelRunner> runner,
                   engine::createCudaModelRunner(files.params(), files.tensors(), cuda));
  ec.num_blocks = runner->kvGeometry().num_blocks;
  ASSIGN_OR_RETURN(loaded.engine, engine::Engine::create(std::move(runner), ec));
  loaded.identity.device = gpu.name + " (GPU " + std::to_string(gpu.index) + ")";
  loaded.identity.device_memory_bytes = gpu.total_bytes;
  return loaded;
}

Status resolveAutoRails(config::NodeAgentConfig& config, const std::filesystem::path& sysfs) {
  config::TransportConfig& transport = config.transport;
  if (transport.kind != config::TransportKind::kVerbs || transport.rails.size() != 1 ||
      transport.rails.front() != config::kAutoRails) {
    return Status::ok();
  }
  std::string bus_id;  // empty on the CPU runtime: no GPU to be near, so by name
  if (config.gpu >= 0) {
    Result<std::string> id = engine::gpuPciBusId(config.gpu);
    if (!id.isOk()) {
      return id.status().withContext("transport.rails: auto: the PCI address of engine.gpu " +
                                     std::to_string(config.gpu));
    }
    bus_id = std::move(id).value();
  }
  Result<std::vector<std::string>> devices = rdma::rdmaDevicesNearest(bus_id, sysfs);
  if (!devices.isOk()) return devices.status().withContext("transport.rails: auto");
  transport.rails = std::move(devices).value();
  std::string order;
  for (const std::string& rail : transport.rails) order += (order.empty() ? "" : ", ") + rail;
  if (bus_id.empty()) {
    spdlog::info("transport.rails: auto: {} (by name: the CPU runtime has no GPU)", order);
  } else {
    spdlog::info("transport.rails: auto: {} (nearest GPU {} at {} first)", order, config.gpu,
                 bus_id);
  }
  return Status::ok();
}

}  // namespace kvferry::agent
