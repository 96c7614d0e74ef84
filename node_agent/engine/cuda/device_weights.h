// A llama model's weights in device memory, bfloat16, in one allocation: converted from the GGUF
// tensors (F32, F16, BF16, Q8_0) through pinned staging buffers, with Q/K/V and gate/up fused into
// one matrix each as the CPU backend fuses them (llama_weights.h). Only CUDA code includes this.
#pragma once

#include <cstdint>
#include <vector>

#include "model/gguf.h"
#include "model/llama_params.h"
#include "node_agent/engine/cuda/cuda_util.h"
#include "node_agent/engine/cuda/kernels.h"

namespace kvferry::engine::cuda {

struct DeviceLayer {
  const bf16* attn_norm = nullptr;  // [dim]
  const bf16* wqkv = nullptr;       // [(q_dim + 2·kv_dim) × dim]
  const bf16* qkv_bias = nullptr;   // [q_dim + 2·kv_dim] (qwen2), else null
  const bf16* q_norm = nullptr;     // [head_dim] (qwen3), else null
  const bf16* k_norm = nullptr;     // [head_dim] (qwen3), else null
  const bf16* wo = nullptr;         // [dim × q_dim]
  const bf16* ffn_norm = nullptr;   // [dim]
  const bf16* w_gate_up = nullptr;  // [2·ff × dim]
  const bf16* w_down = nullptr;     // [dim × ff]
};

class DeviceWeights {
 public:
  // The bytes the weights of `tensors` take on the device.
  static uint64_t bytesFor(const model::LlamaTensors& tensors);
  // Copies every tensor to the device (current device of the calling thread).
  static Result<DeviceWeights> load(const model::LlamaTensors& tensors, cudaStream_t stream);

  const bf16* embedding() const { return embedding_; }     // [vocab × dim]
  const bf16* output() const { return output_; }           // [vocab × dim] (embedding if tied)
  const bf16* outputNorm() const { return output_norm_; }  // [dim]
  const DeviceLayer& layer(uint32_t index) const { return layers_[index]; }
  uint64_t bytes() const { return memory_.bytes(); }
  // Bytes of the matrices one decode step reads (all but the embedding).
  uint64_t matrixBytesPerToken() const { return matrix_bytes_per_token_; }

 private:
  DeviceBuffer memory_;
  const bf16* embedding_ = nullptr;
  const bf16* output_ = nullptr;
  const bf16* output_norm_ = nullptr;
  std::vector<DeviceLayer> layers_;
  uint64_t matrix_bytes_per_token_ = 0;
};

}  // namespace kvferry::engine::cuda
