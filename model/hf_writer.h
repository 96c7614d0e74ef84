// Hugging Face model directories, written by kvferry for tests and tools: a safetensors writer,
// and a random llama-family model (model/gguf_writer.h) as the directory transformers loads —
// config.json, model.safetensors (or shards with model.safetensors.index.json), tokenizer.json,
// tokenizer_config.json — holding the same weights and vocabulary as the GGUF file of the same
// spec and seed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"

namespace kvferry::model {

// Tensors are written in the order added, each generated when written (any size), after a JSON
// header padded with spaces to a multiple of 8 bytes that carries {"__metadata__": {"format":
// "pt"}} (transformers refuses files without it). Misuse (a duplicate name, a type other than F32,
// F16 and BF16) is remembered and returned by serialize() / writeFile(). Not thread-safe.
class SafetensorsWriter {
 public:
  // `shape` outermost first; fill(first, out) gives elements first.. in row-major order.
  void addTensor(std::string name, std::vector<uint64_t> shape, GgmlType type,
                 GgufWriter::TensorFill fill);

  uint64_t dataBytes() const { return data_bytes_; }
  Result<std::vector<uint8_t>> serialize() const;
  Status writeFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> shape;
    GgmlType type;
    uint64_t elements = 0;
    uint64_t begin = 0;  // data offset
    uint64_t bytes = 0;
    GgufWriter::TensorFill fill;
  };
  std::string header() const;
  Status emit(const ByteSink& sink) const;

  std::vector<Tensor> tensors_;
  uint64_t data_bytes_ = 0;
  Status error_;
};

// Llama 3's RoPE scaling as config.json's rope_scaling writes it.
struct Llama3RopeScaling {
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  uint32_t original_context = 8192;
};

struct HfDirectoryOptions {
  // Shards of at most about this many bytes (at least one tensor each) with an index; 0: one
  // model.safetensors.
  uint64_t shard_bytes = 0;
  // Set when params.rope_freq_factors are Llama 3's scaling (config.json cannot carry factors).
  std::optional<Llama3RopeScaling> llama3_scaling;
};

// The directory of writeRandomLlamaModel(spec, seed)'s model, created if missing: the same tensors
// under Hugging Face names, shapes outermost-first, and llama's Q and K rows in Hugging Face's
// order (llama.cpp's converter permutes them for GGUF; this undoes it), so model::ModelFiles reads
// the same params and, tensor for tensor, the same values (in another row order for llama's Q and
// K). Needs spec.bpe_vocabulary (tokenizer.json holds byte-level BPE), matrices of F32, F16 or
// BF16, and rope_dimension_count equal to the head dimension; rope_freq_factors only with
// options.llama3_scaling that gives them.
Status writeRandomHfModel(const std::string& dir, const RandomLlamaSpec& spec, uint64_t seed,
                          const HfDirectoryOptions& options = {});

// config.json of a spec's model (LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM).
std::string hfConfigJson(const RandomLlamaSpec& spec,
                         const std::optional<Llama3RopeScaling>& scaling);
// tokenizer.json of a byte-level BPE vocabulary whose control tokens are the added tokens, with
// the Split regex of vocab.pre and vocab.normalizer.
std::string hfTokenizerJson(const Vocabulary& vocab);

}  // namespace kvferry::model
