#include "model/random_shapes.h"

#include <vector>

namespace kvferry::model {
namespace {

struct Dims {
  Architecture architecture;
  uint32_t dim, layers, heads, kv_heads, head_dim, ff, vocab;
  float rope_base;
  uint32_t context;
  float rms_epsilon = 1e-5f;
};

RandomModelShape shape(std::string_view name, std::string_view description, const Dims& d,
                       bool tied, bool bpe,
                       std::optional<Llama3RopeScaling> scaling = std::nullopt) {
  RandomModelShape s{name, description, {}, scaling};
  LlamaParams& p = s.spec.params;
  p.architecture = d.architecture;
  p.vocab_size = d.vocab;
  p.embedding_length = d.dim;
  p.feed_forward_length = d.ff;
  p.block_count = d.layers;
  p.head_count = d.heads;
  p.head_count_kv = d.kv_heads;
  p.head_dim = d.head_dim == d.dim / d.heads ? 0 : d.head_dim;
  p.rope_dimension_count = d.head_dim;
  p.rope_freq_base = d.rope_base;
  p.rms_epsilon = d.rms_epsilon;
  p.context_length = d.context;
  p.rope_neox = d.architecture != Architecture::kLlama;  // as a GGUF file of it says
  if (scaling) {
    p.rope_freq_factors = llama3RopeFactors(p.rope_freq_base, p.rope_dimension_count,
                                            scaling->factor, scaling->low_freq_factor,
                                            scaling->high_freq_factor, scaling->original_context);
  }
  s.spec.tied_output = tied;
  s.spec.bpe_vocabulary = bpe;
  return s;
}

std::vector<RandomModelShape> makeShapes() {
  using A = Architecture;
  return {
      shape("llama-3.2-1b", "Llama 3.2 1B",
            {A::kLlama, 2048, 16, 32, 8, 64, 8192, 128256, 500000.0f, 131072}, true, false,
            Llama3RopeScaling{32.0f, 1.0f, 4.0f, 8192}),
      shape("llama-3.1-8b", "Llama 3.1 8B",
            {A::kLlama, 4096, 32, 32, 8, 128, 14336, 128256, 500000.0f, 131072}, false, false,
            Llama3RopeScaling{8.0f, 1.0f, 4.0f, 8192}),
      shape("qwen2.5-0.5b", "Qwen2.5 0.5B",
            {A::kQwen2, 896, 24, 14, 2, 64, 4864, 151936, 1000000.0f, 32768, 1e-6f}, true, true),
      shape("qwen3-0.6b", "Qwen3 0.6B",
            {A::kQwen3, 1024, 28, 16, 8, 128, 3072, 151936, 1000000.0f, 40960, 1e-6f}, true, true),
      shape("qwen3-8b", "Qwen3 8B",
            {A::kQwen3, 4096, 36, 32, 8, 128, 12288, 151936, 1000000.0f, 40960, 1e-6f}, false,
            true),
      shape("mistral-7b-v0.3", "Mistral 7B v0.3 (a llama)",
            {A::kLlama, 4096, 32, 32, 8, 128, 14336, 32768, 1000000.0f, 32768}, false, true),
      shape("tinyllama-1.1b", "TinyLlama 1.1B",
            {A::kLlama, 2048, 22, 32, 4, 64, 5632, 32000, 10000.0f, 2048}, false, false),
      shape("stories15M", "llama2.c stories15M",
            {A::kLlama, 288, 6, 6, 6, 48, 768, 32000, 10000.0f, 256}, true, false),
      shape("stories110M", "llama2.c stories110M",
            {A::kLlama, 768, 12, 12, 12, 64, 2048, 32000, 10000.0f, 1024}, true, false),
      shape("tiny", "a 2-layer llama of width 256",
            {A::kLlama, 256, 2, 4, 2, 64, 768, 32000, 10000.0f, 4096}, false, false),
      shape("test-llama", "test: llama", {A::kLlama, 64, 2, 4, 2, 16, 160, 384, 10000.0f, 256},
            false, true),
      shape("test-llama3", "test: llama, Llama 3 RoPE scaling, tied embeddings",
            {A::kLlama, 64, 2, 4, 2, 16, 160, 384, 500000.0f, 256}, true, true,
            Llama3RopeScaling{8.0f, 1.0f, 4.0f, 32}),
      shape("test-mistral", "test: llama with head_dim 32 at width 64 (as Mistral Nemo)",
            {A::kLlama, 64, 2, 4, 2, 32, 160, 384, 1000000.0f, 256}, false, true),
      shape("test-qwen2", "test: qwen2 (q/k/v biases), tied embeddings",
            {A::kQwen2, 64, 2, 4, 2, 16, 160, 384, 1000000.0f, 256, 1e-6f}, true, true),
      shape("test-qwen3", "test: qwen3 (q/k norms), head_dim 32 at width 64",
            {A::kQwen3, 64, 2, 4, 2, 32, 160, 384, 1000000.0f, 256, 1e-6f}, false, true),
  };
}

}  // namespace

std::span<const RandomModelShape> randomModelShapes() {
  static const std::vector<RandomModelShape> shapes = makeShapes();
  return shapes;
}

const RandomModelShape* findRandomModelShape(std::string_view name) {
  for (const RandomModelShape& s : randomModelShapes()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace kvferry::model
