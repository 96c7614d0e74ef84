// A model, whatever form it comes in — a GGUF file or a Hugging Face directory — read into the
// one description both engines (CPU and CUDA) and the orchestrator use: hyper-parameters
// (LlamaParams), weights (LlamaTensors: views of the mapped files, GgufTensor-shaped whichever the
// format), vocabulary, chat template and the cluster fingerprint.
//
// A Hugging Face directory holds config.json (model/hf_config.h), the weights as model.safetensors
// or as shards listed by model.safetensors.index.json (its weight_map: tensor → file), and
// tokenizer.json with tokenizer_config.json (model/tokenizer_files.h). Tensors are F32, F16 or
// BF16, named as transformers names them (model/hf_config.h maps them to the engine's names) and
// presented in ggml order (a [out, in] weight is dims {in, out}); their shapes are checked against
// config.json with errors naming the file, the tensor and expected vs found (in PyTorch order).
// The rotary embedding's inv_freq buffer that old checkpoints saved is ignored (it is recomputed),
// and so is lm_head.weight when tie_word_embeddings is true (transformers ties it); any other
// tensor the runtime would not use is refused.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/llama_params.h"
#include "model/token_id.h"
#include "model/tokenizer.h"

namespace kvferry::model {

enum class ModelFormat { kGguf, kSafetensors };
std::string_view modelFormatName(ModelFormat format);  // "gguf", "safetensors"

// Move-only; immutable after open(), so any thread may read it. Every view it hands out (tensors'
// names and data, the GGUF file) lives as long as the ModelFiles, and survives moving it.
class ModelFiles {
 public:
  // A GGUF file or a Hugging Face model directory. Errors name the path, the file inside it and
  // what is wrong.
  static Result<ModelFiles> open(const std::string& path);

  ModelFiles(ModelFiles&&) noexcept;
  ModelFiles& operator=(ModelFiles&&) noexcept;
  ~ModelFiles();

  const std::string& path() const;
  ModelFormat format() const;
  const LlamaParams& params() const;
  const LlamaTensors& tensors() const;
  const Vocabulary& vocabulary() const;
  // The Jinja chat template: GGUF tokenizer.chat_template; in a directory chat_template.jinja,
  // else tokenizer_config.json's chat_template (of a list of named templates, "default"). Empty
  // when the model has none (a base model).
  const std::string& chatTemplate() const;
  // tokenizer_config.json's template named "tool_use", which transformers renders instead when
  // tools are given; empty when there is none.
  const std::string& toolUseChatTemplate() const;
  // generation_config.json's eos_token_id (one id or a list): the tokens that end a turn, which
  // transformers' generate() stops on. Empty for GGUF files.
  const std::vector<TokenId>& generationStopTokens() const;
  // The cluster's model identity (DESIGN.md §3). GGUF: modelFingerprint(file, params), so a
  // file's value is the one earlier kvferry versions computed. Safetensors: the same hash with
  // "safetensors/<architecture>" in place of the architecture name, u32 head_dim, u32 rope_neox
  // and u64 count + f32 of each rope_freq_factor after rms_epsilon, over the tensors under their
  // engine names. So a GGUF and a safetensors copy of the same weights never share a fingerprint:
  // besides the per-format conversions, a GGUF llama keeps Q and K in llama.cpp's permuted row
  // order, which changes the layout of K in the cache.
  uint64_t fingerprint() const;
  // The GGUF file when format() is kGguf, else nullptr.
  const GgufFile* gguf() const;

  struct Contents;  // what a ModelFiles holds (model_files.cc)

 private:
  explicit ModelFiles(std::unique_ptr<Contents> contents);

  std::unique_ptr<Contents> contents_;  // on the heap: views into it stay put when this moves
};

}  // namespace kvferry::model
