// Named shapes of random-weight models (model/gguf_writer.h, model/hf_writer.h): real
// checkpoints' shapes for the GPU machine's benchmarks and references, and small ones of every
// architecture for tests and the llama.cpp goldens (scripts/llama_cpp_goldens.sh). One table, so
// kvferry-make-model and the tests build exactly the same models.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "model/hf_writer.h"

namespace kvferry::model {

struct RandomModelShape {
  std::string_view name;
  std::string_view description;
  RandomLlamaSpec spec;  // F32 matrices; params.rope_freq_factors set from llama3_scaling
  std::optional<Llama3RopeScaling> llama3_scaling;
};

// llama-3.2-1b, llama-3.1-8b, qwen2.5-0.5b, qwen3-0.6b, qwen3-8b, mistral-7b-v0.3 (their
// config.json's shapes), tinyllama-1.1b, stories15M and stories110M (the CPU engine_bench's),
// tiny (a 2-layer llama of width 256), and the test shapes test-llama,
// test-llama3 (Llama 3 RoPE scaling, tied embeddings), test-mistral (llama with head_dim 32 at
// width 64, as Mistral Nemo's heads are narrower than width / heads), test-qwen2 (q/k/v biases,
// tied) and test-qwen3 (q/k norms, head_dim 32 at width 64). The llama-3.x shapes and tiny have
// the SentencePiece vocabulary (the GGUF files they have always written), the others byte-level
// BPE; a Hugging Face directory always carries BPE (kvferry-make-model switches it on).
std::span<const RandomModelShape> randomModelShapes();
const RandomModelShape* findRandomModelShape(std::string_view name);

}  // namespace kvferry::model
