#include "model/llama_params.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <unordered_set>

#include "model/hash.h"

namespace kvferry::model {
namespace {

std::string shapeText(std::span<const uint64_t> dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i > 0 ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

}  // namespace

Status validateLlamaParams(const LlamaParams& p) {
  const auto positive = [](uint32_t value, const char* name) -> Status {
    if (value == 0) return invalidArgument(std::string(name) + " must be positive");
    return Status::ok();
  };
  RETURN_IF_ERROR(positive(p.vocab_size, "vocab_size"));
  RETURN_IF_ERROR(positive(p.embedding_length, "llama.embedding_length"));
  RETURN_IF_ERROR(positive(p.feed_forward_length, "llama.feed_forward_length"));
  RETURN_IF_ERROR(positive(p.block_count, "llama.block_count"));
  RETURN_IF_ERROR(positive(p.head_count, "llama.attention.head_count"));
  RETURN_IF_ERROR(positive(p.head_count_kv, "llama.attention.head_count_kv"));
  RETURN_IF_ERROR(positive(p.context_length, "llama.context_length"));
  if (p.embedding_length % p.head_count != 0) {
    return invalidArgument("llama.attention.head_count " + std::to_string(p.head_count) +
                           " does not divide llama.embedding_length " +
                           std::to_string(p.embedding_length));
  }
  if (p.head_count % p.head_count_kv != 0) {
    return invalidArgument("llama.attention.head_count_kv " + std::to_string(p.head_count_kv) +
                           " does not divide llama.attention.head_count " +
                           std::to_string(p.head_count));
  }
  if (p.headDim() % 2 != 0) {
    return invalidArgument("head dimension " + std::to_string(p.headDim()) +
                           " is odd (RoPE rotates pairs)");
  }
  if (p.rope_dimension_count == 0 || p.rope_dimension_count % 2 != 0 ||
      p.rope_dimension_count > p.headDim()) {
    return invalidArgument("llama.rope.dimension_count " + std::to_string(p.rope_dimension_count) +
                           " must be even and in 2.." + std::to_string(p.headDim()));
  }
  if (!(p.rms_epsilon > 0.0f) || !std::isfinite(p.rms_epsilon)) {
    return invalidArgument("llama.attention.layer_norm_rms_epsilon must be positive and finite");
  }
  if (!(p.rope_freq_base > 0.0f) || !std::isfinite(p.rope_freq_base)) {
    return invalidArgument("llama.rope.freq_base must be positive and finite");
  }
  if (!p.rope_freq_factors.empty()) {
    if (p.rope_freq_factors.size() != p.rope_dimension_count / 2) {
      return invalidArgument("rope_freqs.weight holds " +
                             std::to_string(p.rope_freq_factors.size()) + " factors, expected " +
                             std::to_string(p.rope_dimension_count / 2) +
                             " (one per rotated pair)");
    }
    for (float factor : p.rope_freq_factors) {
      if (!(factor > 0.0f) || !std::isfinite(factor)) {
        return invalidArgument("rope_freqs.weight holds a factor that is not positive and finite");
      }
    }
  }
  return Status::ok();
}

std::vector<float> ropeInverseFrequencies(const LlamaParams& p) {
  const uint32_t rope_dims = p.rope_dimension_count;
  std::vector<float> inv_freq;
  for (uint32_t k = 0; k < rope_dims / 2; ++k) {
    float value = 1.0f / std::pow(p.rope_freq_base,
                                  static_cast<float>(2 * k) / static_cast<float>(rope_dims));
    if (!p.rope_freq_factors.empty()) value /= p.rope_freq_factors[k];
    inv_freq.push_back(value);
  }
  return inv_freq;
}

std::vector<float> llama3RopeFactors(float freq_base, uint32_t rope_dims, float factor,
                                     float low_freq_factor, float high_freq_factor,
                                     uint32_t original_context) {
  const double low_freq_wavelen = original_context / static_cast<double>(low_freq_factor);
  const double high_freq_wavelen = original_context / static_cast<double>(high_freq_factor);
  std::vector<float> factors;
  for (uint32_t k = 0; k < rope_dims / 2; ++k) {
    const double freq =
        1.0 / std::pow(static_cast<double>(freq_base), static_cast<double>(2 * k) / rope_dims);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_freq_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_freq_wavelen) {
      factors.push_back(factor);
    } else {
      const double smooth =
          (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      factors.push_back(static_cast<float>(1.0 / ((1 - smooth) / factor + smooth)));
    }
  }
  return factors;
}

Result<LlamaParams> readLlamaParams(const GgufFile& file) {
  ASSIGN_OR_RETURN(std::string_view architecture, file.getString("general.architecture"));
  if (architecture != "llama") {
    return invalidArgument("architecture '" + printable(architecture) +
                           "' is not supported (only llama)");
  }
  LlamaParams p;
  ASSIGN_OR_RETURN(p.context_length, file.getU32("llama.context_length"));
  ASSIGN_OR_RETURN(p.embedding_length, file.getU32("llama.embedding_length"));
  ASSIGN_OR_RETURN(p.feed_forward_length, file.getU32("llama.feed_forward_length"));
  ASSIGN_OR_RETURN(p.block_count, file.getU32("llama.block_count"));
  ASSIGN_OR_RETURN(p.head_count, file.getU32("llama.attention.head_count"));
  p.head_count_kv = p.head_count;
  RETURN_IF_ERROR(file.getIfPresent("llama.attention.head_count_kv", p.head_count_kv));
  ASSIGN_OR_RETURN(p.rms_epsilon, file.getF32("llama.attention.layer_norm_rms_epsilon"));
  RETURN_IF_ERROR(file.getIfPresent("llama.rope.freq_base", p.rope_freq_base));
  if (p.head_count != 0) p.rope_dimension_count = p.embedding_length / p.head_count;
  RETURN_IF_ERROR(file.getIfPresent("llama.rope.dimension_count", p.rope_dimension_count));
  if (file.findKey("llama.vocab_size") != nullptr) {
    ASSIGN_OR_RETURN(p.vocab_size, file.getU32("llama.vocab_size"));
  } else {
    const GgufKeyValue* tokens = file.findKey("tokenizer.ggml.tokens");
    if (tokens == nullptr || tokens->type != GgufType::kArray) {
      return invalidArgument(
          "neither llama.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size");
    }
    if (tokens->array_size > UINT32_MAX) return invalidArgument("vocabulary too large");
    p.vocab_size = static_cast<uint32_t>(tokens->array_size);
  }
  RETURN_IF_ERROR(validateLlamaParams(p));

  // Llama 3's frequency scaling comes as llama.cpp writes it: per-pair factors in a tensor.
  if (const GgufTensor* freqs = file.findTensor("rope_freqs.weight"); freqs != nullptr) {
    if (freqs->n_dims != 1 || freqs->element_count != p.rope_dimension_count / 2) {
      return invalidArgument("tensor 'rope_freqs.weight' must hold rope_dimension_count / 2 = " +
                             std::to_string(p.rope_dimension_count / 2) + " factors");
    }
    ASSIGN_OR_RETURN(p.rope_freq_factors, tensorToFloat(*freqs));
    RETURN_IF_ERROR(validateLlamaParams(p));
  }

  // Features this runtime does not implement: refuse them instead of computing another model.
  std::string_view rope_scaling = "none";
  RETURN_IF_ERROR(file.getIfPresent("llama.rope.scaling.type", rope_scaling));
  if (rope_scaling != "none") {
    return invalidArgument("llama.rope.scaling.type '" + printable(rope_scaling) +
                           "' is not supported yet");
  }
  uint32_t experts = 0;
  RETURN_IF_ERROR(file.getIfPresent("llama.expert_count", experts));
  if (experts != 0) return invalidArgument("mixture-of-experts llama models are not supported yet");
  for (const char* key : {"llama.attention.key_length", "llama.attention.value_length"}) {
    uint32_t width = p.headDim();
    RETURN_IF_ERROR(file.getIfPresent(key, width));
    if (width != p.headDim()) {
      return invalidArgument(std::string(key) + " " + std::to_string(width) +
                             " differs from the head dimension " + std::to_string(p.headDim()));
    }
  }
  return p;
}

Result<LlamaTensors> findLlamaTensors(const GgufFile& file, const LlamaParams& p) {
  std::unordered_set<std::string_view> used;
  const auto expect = [&](const std::string& name,
                          std::initializer_list<uint64_t> shape) -> Result<const GgufTensor*> {
    const GgufTensor* tensor = file.findTensor(name);
    if (tensor == nullptr) return invalidArgument("missing tensor '" + name + "'");
    const std::span<const uint64_t> dims(tensor->dims.data(), tensor->n_dims);
    if (!std::ranges::equal(dims, shape)) {
      return invalidArgument("tensor '" + name + "' has shape " + shapeText(dims) + ", expected " +
                             shapeText({shape.begin(), shape.size()}));
    }
    used.insert(tensor->name);
    return tensor;
  };
  const uint64_t dim = p.embedding_length;
  LlamaTensors t;
  ASSIGN_OR_RETURN(t.token_embd, expect("token_embd.weight", {dim, p.vocab_size}));
  ASSIGN_OR_RETURN(t.output_norm, expect("output_norm.weight", {dim}));
  t.tied_output = file.findTensor("output.weight") == nullptr;
  if (t.tied_output) {
    t.output = t.token_embd;
  } else {
    ASSIGN_OR_RETURN(t.output, expect("output.weight", {dim, p.vocab_size}));
  }
  if (!p.rope_freq_factors.empty()) {
    ASSIGN_OR_RETURN(t.rope_freqs, expect("rope_freqs.weight", {p.rope_dimension_count / 2}));
  }
  // The layer count comes from the file: bound it by the tensors present before allocating.
  constexpr size_t kTensorsPerLayer = 9;
  if (p.block_count > file.tensors().size() / kTensorsPerLayer) {
    return invalidArgument("llama.block_count " + std::to_string(p.block_count) + " needs " +
                           std::to_string(uint64_t{kTensorsPerLayer} * p.block_count) +
                           " layer tensors, the file has " + std::to_string(file.tensors().size()) +
                           " tensors in all");
  }
  t.layers.resize(p.block_count);
  for (uint32_t i = 0; i < p.block_count; ++i) {
    const std::string prefix = "blk." + std::to_string(i) + ".";
    LlamaLayerTensors& layer = t.layers[i];
    ASSIGN_OR_RETURN(layer.attn_norm, expect(prefix + "attn_norm.weight", {dim}));
    ASSIGN_OR_RETURN(layer.attn_q, expect(prefix + "attn_q.weight", {dim, dim}));
    ASSIGN_OR_RETURN(layer.attn_k, expect(prefix + "attn_k.weight", {dim, p.kvDim()}));
    ASSIGN_OR_RETURN(layer.attn_v, expect(prefix + "attn_v.weight", {dim, p.kvDim()}));
    ASSIGN_OR_RETURN(layer.attn_output, expect(prefix + "attn_output.weight", {dim, dim}));
    ASSIGN_OR_RETURN(layer.ffn_norm, expect(prefix + "ffn_norm.weight", {dim}));
    ASSIGN_OR_RETURN(layer.ffn_gate,
                     expect(prefix + "ffn_gate.weight", {dim, p.feed_forward_length}));
    ASSIGN_OR_RETURN(layer.ffn_up, expect(prefix + "ffn_up.weight", {dim, p.feed_forward_length}));
    ASSIGN_OR_RETURN(layer.ffn_down,
                     expect(prefix + "ffn_down.weight", {p.feed_forward_length, dim}));
  }
  for (const GgufTensor& tensor : file.tensors()) {
    if (!used.contains(tensor.name)) {
      return invalidArgument("unexpected tensor '" + printable(tensor.name) +
                             "' (not part of the llama model this runtime computes)");
    }
  }
  return t;
}

uint64_t modelFingerprint(const GgufFile& file, const LlamaParams& p) {
  SipHasher hasher(0, 0);
  hasher.addString("kvferry.model.v1").addString("llama");
  for (uint32_t value : {p.vocab_size, p.embedding_length, p.feed_forward_length, p.block_count,
                         p.head_count, p.head_count_kv, p.rope_dimension_count, p.context_length}) {
    hasher.addU32(value);
  }
  hasher.addF32(p.rope_freq_base).addF32(p.rms_epsilon);

  std::vector<const GgufTensor*> tensors;
  for (const GgufTensor& tensor : file.tensors()) tensors.push_back(&tensor);
  std::ranges::sort(tensors, {}, &GgufTensor::name);
  hasher.addU64(tensors.size());
  constexpr size_t kSampleBytes = 64;
  for (const GgufTensor* tensor : tensors) {
    hasher.addString(tensor->name).addU32(tensor->n_dims);
    for (uint32_t d = 0; d < tensor->n_dims; ++d) hasher.addU64(tensor->dims[d]);
    hasher.addU32(static_cast<uint32_t>(tensor->type)).addU64(tensor->data.size());
    const size_t sample = std::min(kSampleBytes, tensor->data.size());
    hasher.update(tensor->data.first(sample)).update(tensor->data.last(sample));
  }
  return hasher.finish();
}

}  // namespace kvferry::model
