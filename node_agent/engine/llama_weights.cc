#include "node_agent/engine/llama_weights.h"

#include <initializer_list>

namespace kvferry::engine {
namespace {

// The elements of `parts`, one after another, as a rows × cols matrix.
Result<Matrix> loadElements(std::initializer_list<const model::GgufTensor*> parts, uint64_t rows,
                            uint64_t cols) {
  if (rows > UINT32_MAX || cols > UINT32_MAX) return invalidArgument("matrix too large");
  Matrix matrix(static_cast<uint32_t>(rows), static_cast<uint32_t>(cols));
  float* out = matrix.data();
  for (const model::GgufTensor* part : parts) {
    RETURN_IF_ERROR(model::toFloat(part->type, part->data, {out, part->element_count})
                        .withContext("tensor '" + model::printable(part->name) + "'"));
    out += part->element_count;
  }
  return matrix;
}

// Concatenates the rows of `parts` (all with the same row length) into one matrix.
Result<Matrix> loadRows(std::initializer_list<const model::GgufTensor*> parts) {
  uint64_t rows = 0;
  for (const model::GgufTensor* part : parts) rows += part->rowCount();
  return loadElements(parts, rows, (*parts.begin())->rowLength());
}

// Concatenates vectors into one row.
Result<Matrix> loadRow(std::initializer_list<const model::GgufTensor*> parts) {
  uint64_t elements = 0;
  for (const model::GgufTensor* part : parts) elements += part->element_count;
  return loadElements(parts, 1, elements);
}

}  // namespace

Matrix::Matrix(uint32_t rows, uint32_t cols)
    : data_(std::make_unique_for_overwrite<float[]>(uint64_t{rows} * cols)),
      rows_(rows),
      cols_(cols) {}

Result<std::shared_ptr<const LlamaWeights>> LlamaWeights::load(const model::GgufFile& file) {
  ASSIGN_OR_RETURN(model::LlamaParams params, model::readLlamaParams(file));
  ASSIGN_OR_RETURN(model::LlamaTensors tensors, model::findLlamaTensors(file, params));
  return load(params, tensors);
}

Result<std::shared_ptr<const LlamaWeights>> LlamaWeights::load(const model::ModelFiles& files) {
  Result<std::shared_ptr<const LlamaWeights>> weights = load(files.params(), files.tensors());
  if (!weights.isOk()) return weights.status().withContext(files.path());
  return weights;
}

Result<std::shared_ptr<const LlamaWeights>> LlamaWeights::load(const model::LlamaParams& params,
                                                               const model::LlamaTensors& tensors) {
  std::shared_ptr<LlamaWeights> weights(new LlamaWeights());
  weights->params_ = params;
  weights->tied_output_ = tensors.tied_output;
  ASSIGN_OR_RETURN(weights->token_embd_, loadRows({tensors.token_embd}));
  ASSIGN_OR_RETURN(weights->output_norm_, loadRows({tensors.output_norm}));
  if (!tensors.tied_output) {
    ASSIGN_OR_RETURN(weights->output_, loadRows({tensors.output}));
  }
  weights->layers_.reserve(tensors.layers.size());
  for (const model::LlamaLayerTensors& t : tensors.layers) {
    LlamaLayerWeights layer;
    ASSIGN_OR_RETURN(layer.attn_norm, loadRows({t.attn_norm}));
    ASSIGN_OR_RETURN(layer.wqkv, loadRows({t.attn_q, t.attn_k, t.attn_v}));
    if (t.attn_q_bias != nullptr) {
      ASSIGN_OR_RETURN(layer.qkv_bias, loadRow({t.attn_q_bias, t.attn_k_bias, t.attn_v_bias}));
    }
    if (t.attn_q_norm != nullptr) {
      ASSIGN_OR_RETURN(layer.q_norm, loadRows({t.attn_q_norm}));
      ASSIGN_OR_RETURN(layer.k_norm, loadRows({t.attn_k_norm}));
    }
    ASSIGN_OR_RETURN(layer.wo, loadRows({t.attn_output}));
    ASSIGN_OR_RETURN(layer.ffn_norm, loadRows({t.ffn_norm}));
    ASSIGN_OR_RETURN(layer.w_gate_up, loadRows({t.ffn_gate, t.ffn_up}));
    ASSIGN_OR_RETURN(layer.w_down, loadRows({t.ffn_down}));
    weights->layers_.push_back(std::move(layer));
  }
  return std::shared_ptr<const LlamaWeights>(std::move(weights));
}

Result<std::shared_ptr<const LlamaWeights>> LlamaWeights::loadFile(const std::string& path) {
  ASSIGN_OR_RETURN(model::ModelFiles files, model::ModelFiles::open(path));
  return load(files);
}

uint64_t LlamaWeights::matrixBytesPerToken() const {
  uint64_t floats = output().size();
  for (const LlamaLayerWeights& layer : layers_) {
    floats += layer.wqkv.size() + layer.wo.size() + layer.w_gate_up.size() + layer.w_down.size();
  }
  return floats * sizeof(float);
}

uint64_t LlamaWeights::parameterCount() const {
  uint64_t count = token_embd_.size() + output_norm_.size() + output_.size();
  for (const LlamaLayerWeights& layer : layers_) {
    count += layer.attn_norm.size() + layer.wqkv.size() + layer.qkv_bias.size() +
             layer.q_norm.size() + layer.k_norm.size() + layer.wo.size() + layer.ffn_norm.size() +
             layer.w_gate_up.size() + layer.w_down.size();
  }
  return count;
}

}  // namespace kvferry::engine
