#include "model/model_shapes.h"

namespace kvferry::model {
namespace {

LlamaParams llama(uint32_t dim, uint32_t layers, uint32_t heads, uint32_t kv_heads, uint32_t ff,
                  uint32_t vocab, float rope_base, uint32_t context) {
  LlamaParams p;
  p.vocab_size = vocab;
  p.embedding_length = dim;
  p.feed_forward_length = ff;
  p.block_count = layers;
  p.head_count = heads;
  p.head_count_kv = kv_heads;
  p.rope_dimension_count = dim / heads;
  p.rope_freq_base = rope_base;
  p.rms_epsilon = 1e-5f;
  p.context_length = context;
  return p;
}

ModelShape withScaling(ModelShape shape) {
  const Llama3Scaling& s = shape.scaling;
  if (s.factor > 0) {
    shape.params.rope_freq_factors =
        llama3RopeFactors(shape.params.rope_freq_base, shape.params.rope_dimension_count, s.factor,
                          s.low_freq_factor, s.high_freq_factor, s.original_context);
  }
  return shape;
}

}  // namespace

const std::vector<ModelShape>& modelShapes() {
  static const std::vector<ModelShape> kShapes = {
      withScaling({"stories15M", llama(288, 6, 6, 6, 768, 32000, 10000.0f, 256), true, {}}),
      withScaling({"stories110M", llama(768, 12, 12, 12, 2048, 32000, 10000.0f, 1024), true, {}}),
      withScaling(
          {"tinyllama-1.1b", llama(2048, 22, 32, 4, 5632, 32000, 10000.0f, 2048), false, {}}),
      withScaling({"llama-3.2-1b",
                   llama(2048, 16, 32, 8, 8192, 128256, 500000.0f, 131072),
                   true,
                   {32.0f, 1.0f, 4.0f, 8192}}),
      withScaling({"llama-3.1-8b",
                   llama(4096, 32, 32, 8, 14336, 128256, 500000.0f, 131072),
                   false,
                   {8.0f, 1.0f, 4.0f, 8192}}),
      withScaling({"tiny", llama(256, 2, 4, 2, 768, 32000, 10000.0f, 4096), false, {}}),
  };
  return kShapes;
}

const ModelShape* findModelShape(std::string_view name) {
  for (const ModelShape& shape : modelShapes()) {
    if (shape.name == name) return &shape;
  }
  return nullptr;
}

}  // namespace kvferry::model
