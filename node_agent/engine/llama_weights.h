// A llama-family model's weights in float32, loaded once from a GGUF file or a Hugging Face
// directory (model::ModelFiles; F32, F16, BF16 and Q8_0 tensors are converted at load). Every
// matrix is row-major with one row per output: GGUF stores a weight as dims {in, out} (ggml ne0 =
// the contiguous row length), which is exactly W[out][in] with y = W·x, as llama2.c and llama.cpp
// compute it. Q, K and V are fused into one matrix, and so are the FFN gate and up projections, so
// each step runs one GEMM where the model has two or three; the results are the same rows, bit for
// bit.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/llama_params.h"
#include "model/model_files.h"

namespace kvferry::engine {

// A row-major float matrix: rows × cols, row r at data() + r × cols. Move-only owner.
class Matrix {
 public:
  Matrix() = default;
  Matrix(uint32_t rows, uint32_t cols);  // uninitialized contents

  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  uint64_t size() const { return uint64_t{rows_} * cols_; }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  const float* row(uint64_t r) const { return data_.get() + r * cols_; }
  std::span<const float> values() const { return {data_.get(), size()}; }

 private:
  std::unique_ptr<float[]> data_;
  uint32_t rows_ = 0;
  uint32_t cols_ = 0;
};

struct LlamaLayerWeights {
  Matrix attn_norm;  // 1 × dim
  Matrix wqkv;       // (q_dim + 2·kv_dim) × dim: the rows of Wq, then Wk, then Wv
  Matrix qkv_bias;   // 1 × (q_dim + 2·kv_dim): the q, k and v biases (qwen2), else empty
  Matrix q_norm;     // 1 × head_dim: RMSNorm weight of each q head (qwen3), else empty
  Matrix k_norm;     // 1 × head_dim: of each k head (qwen3), else empty
  Matrix wo;         // dim × q_dim
  Matrix ffn_norm;   // 1 × dim
  Matrix w_gate_up;  // (2·ff) × dim: the rows of W_gate, then W_up
  Matrix w_down;     // dim × ff
};

// Immutable after load: any number of engines and threads may share one (shared_ptr<const>).
class LlamaWeights {
 public:
  // Reads the hyper-parameters and every weight (model::findLlamaTensors decides what a valid
  // file is). The files may be closed afterwards: nothing points into them.
  static Result<std::shared_ptr<const LlamaWeights>> load(const model::ModelFiles& files);
  static Result<std::shared_ptr<const LlamaWeights>> load(const model::GgufFile& file);
  // A GGUF file or a Hugging Face directory (model::ModelFiles::open).
  static Result<std::shared_ptr<const LlamaWeights>> loadFile(const std::string& path);
  static Result<std::shared_ptr<const LlamaWeights>> load(const model::LlamaParams& params,
                                                          const model::LlamaTensors& tensors);

  const model::LlamaParams& params() const { return params_; }
  const Matrix& tokenEmbedding() const { return token_embd_; }  // vocab × dim
  const Matrix& outputNorm() const { return output_norm_; }     // 1 × dim
  // vocab × dim: output.weight, or the token embedding when the file ties them.
  const Matrix& output() const { return tied_output_ ? token_embd_ : output_; }
  bool tiedOutput() const { return tied_output_; }
  const LlamaLayerWeights& layer(uint32_t index) const { return layers_[index]; }
  // Bytes of float weights one token's forward pass reads (the embedding row aside): the matrix
  // traffic that bounds decode speed.
  uint64_t matrixBytesPerToken() const;
  uint64_t parameterCount() const;

 private:
  LlamaWeights() = default;

  model::LlamaParams params_;
  Matrix token_embd_;
  Matrix output_norm_;
  Matrix output_;  // empty when tied
  bool tied_output_ = false;
  std::vector<LlamaLayerWeights> layers_;
};

}  // namespace kvferry::engine
