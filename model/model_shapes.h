// The hyper-parameters of public checkpoints, for random-weight models at real shapes
// (kvferry-make-model, engine_bench): the tests and benchmarks run these shapes without
// downloading any weights.
#pragma once

#include <string_view>
#include <vector>

#include "model/llama_params.h"

namespace kvferry::model {

// Hugging Face's rope_scaling of rope_type "llama3"; factor 0: none.
struct Llama3Scaling {
  float factor = 0;
  float low_freq_factor = 1;
  float high_freq_factor = 4;
  uint32_t original_context = 8192;
};

struct ModelShape {
  std::string_view name;
  LlamaParams params;  // rope_freq_factors filled from `scaling`
  bool tied = false;   // the output matrix is the token embedding
  Llama3Scaling scaling;
};

// stories15M, stories110M (llama2.c), tinyllama-1.1b, llama-3.2-1b, llama-3.1-8b, as their
// config files describe them, and tiny (2 layers, dim 256) for quick checks.
const std::vector<ModelShape>& modelShapes();
// nullptr when no shape has that name.
const ModelShape* findModelShape(std::string_view name);

}  // namespace kvferry::model
