// llama.cpp as an independent reference for kvferry's engine (scripts/llama_cpp_goldens.sh): runs
// a GGUF model over fixed token ids in one batch, on the CPU, with float32 KV cache and no flash
// attention, and prints the logits of every position as JSON. Built against llama.cpp's library
// at dev time only; kvferry never links it.
//
//   logits MODEL.gguf ID,ID,...   →   {"n_vocab": V, "logits": [[...V floats], ...]}
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf ID,ID,...\n", argv[0]);
    return 2;
  }
  std::vector<llama_token> tokens;
  std::stringstream list(argv[2]);
  for (std::string id; std::getline(list, id, ',');) tokens.push_back(std::atoi(id.c_str()));

  llama_log_set(
      [](ggml_log_level level, const char* text, void*) {
        if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
      },
      nullptr);
  llama_backend_init();
  llama_model_params model_params = llama_model_default_params();
  model_params.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(argv[1], model_params);
  if (model == nullptr) {
    std::fprintf(stderr, "cannot load %s\n", argv[1]);
    return 1;
  }
  llama_context_params params = llama_context_default_params();
  params.n_ctx = 256;
  params.n_batch = 256;
  params.n_ubatch = 256;
  params.n_threads = 1;  // one summation order
  params.n_threads_batch = 1;
  params.type_k = GGML_TYPE_F32;  // the default cache is F16: it would round K and V
  params.type_v = GGML_TYPE_F32;
  params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, params);
  if (ctx == nullptr) return 1;

  llama_batch batch = llama_batch_init(static_cast<int32_t>(tokens.size()), 0, 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = static_cast<llama_pos>(i);
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = static_cast<int32_t>(tokens.size());
  if (llama_decode(ctx, batch) != 0) {
    std::fprintf(stderr, "llama_decode failed\n");
    return 1;
  }
  const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  std::printf("{\"n_vocab\": %d, \"logits\": [", n_vocab);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float* logits = llama_get_logits_ith(ctx, static_cast<int32_t>(i));
    std::printf("%s[", i == 0 ? "" : ",\n");
    for (int32_t v = 0; v < n_vocab; ++v) std::printf("%s%.9g", v == 0 ? "" : ",", logits[v]);
    std::printf("]");
  }
  std::printf("]}\n");
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
