// The CUDA backend of ModelRunner (DESIGN.md §5), behind a factory so that nothing outside
// node_agent/engine/cuda/ includes a CUDA header: bfloat16 weights and paged bfloat16 KV pools in
// device memory, cuBLAS GEMMs for prefill chunks, our kernels for the rest (cuda/kernels.h,
// cuda/attention.h, cuda/sampling.h), decode steps replayed as CUDA graphs, and tokens sampled on
// the device. In a build without CUDA the factory answers UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"
#include "model/llama_params.h"
#include "node_agent/engine/model_runner.h"

namespace kvferry::engine {

struct CudaRunnerConfig {
  int device = 0;
  uint32_t block_tokens = 16;
  // KV capacity in blocks; 0: as many as fit in memory_fraction of the device once the weights
  // and working buffers are placed.
  uint32_t num_blocks = 0;
  // Of the device's total memory, the share this runner may hold (weights, KV, buffers).
  float memory_fraction = 0.9f;
  uint32_t max_batch_tokens = 8192;    // tokens of one forward pass: the prefill chunk
  uint32_t max_batch_sequences = 256;  // sequences of one decode step
  bool cuda_graphs = true;             // replay decode steps as CUDA graphs
};

// Whether this build has the CUDA backend.
bool cudaRuntimeBuilt();

// A GPU as the agent reports it at registration.
struct GpuInfo {
  int index = 0;
  std::string name;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};
// Describes GPU `device`. UNAVAILABLE without CUDA (in the build, the driver, or a device),
// NOT_FOUND for an index past the devices present.
Result<GpuInfo> describeGpu(int device);

// GPU `device`'s PCI address as CUDA gives it ("0000:41:00.0"), to find the NICs nearest it
// (rdma/nic_topology.h). UNAVAILABLE without CUDA, NOT_FOUND for an index past the devices present.
Result<std::string> gpuPciBusId(int device);

// What one GPU can do, measured: the ceilings engine_bench prints next to the engine's rates.
struct DeviceCeilings {
  double copy_bytes_per_s = 0;  // bytes read + written per second by a 4 GiB device-to-device copy
  double bf16_gemm_flops = 0;   // a cuBLAS 8192³ bfloat16 GEMM (float32 accumulation), random data
};
// Best of several runs each; takes a few seconds and about 9 GiB of device memory.
Result<DeviceCeilings> measureDeviceCeilings(int device);

// Starts (true) or stops (false) the CUDA profilers' collection (cudaProfilerStart/Stop), so a
// profiler started with collection off (`ncu --profile-from-start off`) sees only that range.
Status setCudaProfiling(bool on);

// Digests (kv_digest.h) of KV blocks in device memory, computed on the device: what
// agent.kv_checksum hashes when the pools are on a GPU. Keeps a stream and buffers it grows as
// needed; one per user (not thread-safe), any thread.
class DeviceBlockDigester {
 public:
  virtual ~DeviceBlockDigester() = default;
  // out[p · ids.size() + i] = kvBlockDigest of block ids[i] of the pool at pools[p] (device
  // addresses of this digester's GPU; block b at b · block_bytes, a multiple of kDigestWordBytes;
  // the caller checks the ids against the pools). Returns when the digests are in `out`.
  virtual Status digest(std::span<const void* const> pools, uint64_t block_bytes,
                        std::span<const uint32_t> ids, std::span<uint64_t> out) = 0;
};
// A digester for GPU `device`. UNAVAILABLE without CUDA (in the build, the driver, or a device).
Result<std::unique_ptr<DeviceBlockDigester>> createDeviceBlockDigester(int device);

// Loads a model's weights (F32, F16, BF16 or Q8_0 tensors, converted to bfloat16; llama, qwen2
// with its q/k/v biases, qwen3 with its q/k norms; either RoPE pairing) onto the device and sizes
// the KV pools. `params` and `tensors` come from model::ModelFiles (a GGUF file or a Hugging Face
// directory) or from readLlamaParams/findLlamaTensors of a GgufFile; the files may be closed
// afterwards. RESOURCE_EXHAUSTED, naming what was needed and what the device has, for a model or
// a num_blocks that does not fit; INVALID_ARGUMENT for bad settings.
Result<std::unique_ptr<ModelRunner>> createCudaModelRunner(const model::LlamaParams& params,
                                                           const model::LlamaTensors& tensors,
                                                           const CudaRunnerConfig& config);

}  // namespace kvferry::engine
