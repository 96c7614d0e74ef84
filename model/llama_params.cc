#include "model/llama_params.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <unordered_map>
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

std::string_view architectureName(Architecture architecture) {
  switch (architecture) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kQwen3:
      return "qwen3";
  }
  return "llama";
}

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
  if (p.head_dim == 0 && p.embedding_length % p.head_count != 0) {
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
  ASSIGN_OR_RETURN(std::string_view name, file.getString("general.architecture"));
  LlamaParams p;
  if (name == "llama") {
    p.architecture = Architecture::kLlama;
  } else if (name == "qwen2") {
    p.architecture = Architecture::kQwen2;
  } else if (name == "qwen3") {
    p.architecture = Architecture::kQwen3;
  } else {
    return invalidArgument("general.architecture '" + printable(name) +
                           "' is not supported (llama, qwen2 and qwen3 are)");
  }
  // llama.cpp's converter permutes Q and K of llama models for adjacent pairs; qwen2 and qwen3
  // keep Hugging Face's layout and rotate in NeoX mode.
  p.rope_neox = p.architecture != Architecture::kLlama;
  const std::string prefix = std::string(architectureName(p.architecture)) + ".";
  const auto key = [&](const char* suffix) { return prefix + suffix; };
  ASSIGN_OR_RETURN(p.context_length, file.getU32(key("context_length")));
  ASSIGN_OR_RETURN(p.embedding_length, file.getU32(key("embedding_length")));
  ASSIGN_OR_RETURN(p.feed_forward_length, file.getU32(key("feed_forward_length")));
  ASSIGN_OR_RETURN(p.block_count, file.getU32(key("block_count")));
  ASSIGN_OR_RETURN(p.head_count, file.getU32(key("attention.head_count")));
  p.head_count_kv = p.head_count;
  RETURN_IF_ERROR(file.getIfPresent(key("attention.head_count_kv"), p.head_count_kv));
  ASSIGN_OR_RETURN(p.rms_epsilon, file.getF32(key("attention.layer_norm_rms_epsilon")));
  RETURN_IF_ERROR(file.getIfPresent(key("rope.freq_base"), p.rope_freq_base));
  // The head width: attention.key_length when given (Qwen3, Mistral Nemo), which the value width
  // must equal.
  const uint32_t default_head_dim = p.head_count != 0 ? p.embedding_length / p.head_count : 0;
  uint32_t key_length = default_head_dim;
  RETURN_IF_ERROR(file.getIfPresent(key("attention.key_length"), key_length));
  uint32_t value_length = key_length;
  RETURN_IF_ERROR(file.getIfPresent(key("attention.value_length"), value_length));
  if (value_length != key_length) {
    return invalidArgument(key("attention.value_length") + " " + std::to_string(value_length) +
                           " differs from " + key("attention.key_length") + " " +
                           std::to_string(key_length) + " (not supported)");
  }
  if (key_length != default_head_dim || (p.head_count != 0 && p.embedding_length % p.head_count)) {
    p.head_dim = key_length;
  }
  p.rope_dimension_count = p.headDim();
  RETURN_IF_ERROR(file.getIfPresent(key("rope.dimension_count"), p.rope_dimension_count));
  if (file.findKey(key("vocab_size")) != nullptr) {
    ASSIGN_OR_RETURN(p.vocab_size, file.getU32(key("vocab_size")));
  } else {
    const GgufKeyValue* tokens = file.findKey("tokenizer.ggml.tokens");
    if (tokens == nullptr || tokens->type != GgufType::kArray) {
      return invalidArgument("neither " + key("vocab_size") +
                             " nor tokenizer.ggml.tokens gives the vocabulary size");
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
  RETURN_IF_ERROR(file.getIfPresent(key("rope.scaling.type"), rope_scaling));
  if (rope_scaling != "none") {
    return invalidArgument(key("rope.scaling.type") + " '" + printable(rope_scaling) +
                           "' is not supported yet");
  }
  uint32_t experts = 0;
  RETURN_IF_ERROR(file.getIfPresent(key("expert_count"), experts));
  if (experts != 0) {
    return invalidArgument("mixture-of-experts " + std::string(name) +
                           " models are not supported yet");
  }
  uint32_t window = 0;
  RETURN_IF_ERROR(file.getIfPresent(key("attention.sliding_window"), window));
  if (window != 0) {
    return invalidArgument(key("attention.sliding_window") + " " + std::to_string(window) +
                           ": sliding-window attention is not implemented");
  }
  return p;
}

Result<LlamaTensors> findLlamaTensors(const GgufFile& file, const LlamaParams& p) {
  return findLlamaTensors(file.tensors(), p, {});
}

Result<LlamaTensors> findLlamaTensors(std::span<const GgufTensor> tensors, const LlamaParams& p,
                                      const TensorNaming& naming) {
  std::unordered_map<std::string_view, const GgufTensor*> by_name;
  for (const GgufTensor& tensor : tensors) by_name.emplace(tensor.name, &tensor);
  const auto find = [&](std::string_view name) -> const GgufTensor* {
    const auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second;
  };
  const auto describe = [&](std::string_view name) {
    return naming.describe ? naming.describe(name) : "tensor '" + printable(name) + "'";
  };
  std::unordered_set<std::string_view> used;
  const auto expect = [&](const std::string& name,
                          std::initializer_list<uint64_t> shape) -> Result<const GgufTensor*> {
    const GgufTensor* tensor = find(name);
    if (tensor == nullptr) {
      return invalidArgument("missing " +
                             (naming.describe ? naming.describe(name) : "tensor '" + name + "'"));
    }
    std::vector<uint64_t> found(tensor->dims.begin(), tensor->dims.begin() + tensor->n_dims);
    std::vector<uint64_t> wanted(shape);
    if (found != wanted) {
      if (naming.pytorch_order) {
        std::ranges::reverse(found);
        std::ranges::reverse(wanted);
      }
      return invalidArgument(describe(name) + " has shape " + shapeText(found) + ", expected " +
                             shapeText(wanted));
    }
    used.insert(tensor->name);
    return tensor;
  };
  const uint64_t dim = p.embedding_length;
  const uint64_t q_dim = p.queryDim();
  LlamaTensors t;
  ASSIGN_OR_RETURN(t.token_embd, expect("token_embd.weight", {dim, p.vocab_size}));
  ASSIGN_OR_RETURN(t.output_norm, expect("output_norm.weight", {dim}));
  t.tied_output = find("output.weight") == nullptr;
  if (t.tied_output) {
    t.output = t.token_embd;
  } else {
    ASSIGN_OR_RETURN(t.output, expect("output.weight", {dim, p.vocab_size}));
  }
  // Present exactly when the factors came from it (a Hugging Face config.json gives them instead).
  if (!p.rope_freq_factors.empty() && find("rope_freqs.weight") != nullptr) {
    ASSIGN_OR_RETURN(t.rope_freqs, expect("rope_freqs.weight", {p.rope_dimension_count / 2}));
  }
  // The layer count comes from the file: bound it by the tensors present before allocating.
  constexpr size_t kTensorsPerLayer = 9;
  if (p.block_count > tensors.size() / kTensorsPerLayer) {
    return invalidArgument("llama.block_count " + std::to_string(p.block_count) + " needs " +
                           std::to_string(uint64_t{kTensorsPerLayer} * p.block_count) +
                           " layer tensors, the file has " + std::to_string(tensors.size()) +
                           " tensors in all");
  }
  t.layers.resize(p.block_count);
  for (uint32_t i = 0; i < p.block_count; ++i) {
    const std::string prefix = "blk." + std::to_string(i) + ".";
    LlamaLayerTensors& layer = t.layers[i];
    ASSIGN_OR_RETURN(layer.attn_norm, expect(prefix + "attn_norm.weight", {dim}));
    ASSIGN_OR_RETURN(layer.attn_q, expect(prefix + "attn_q.weight", {dim, q_dim}));
    ASSIGN_OR_RETURN(layer.attn_k, expect(prefix + "attn_k.weight", {dim, p.kvDim()}));
    ASSIGN_OR_RETURN(layer.attn_v, expect(prefix + "attn_v.weight", {dim, p.kvDim()}));
    ASSIGN_OR_RETURN(layer.attn_output, expect(prefix + "attn_output.weight", {q_dim, dim}));
    ASSIGN_OR_RETURN(layer.ffn_norm, expect(prefix + "ffn_norm.weight", {dim}));
    ASSIGN_OR_RETURN(layer.ffn_gate,
                     expect(prefix + "ffn_gate.weight", {dim, p.feed_forward_length}));
    ASSIGN_OR_RETURN(layer.ffn_up, expect(prefix + "ffn_up.weight", {dim, p.feed_forward_length}));
    ASSIGN_OR_RETURN(layer.ffn_down,
                     expect(prefix + "ffn_down.weight", {p.feed_forward_length, dim}));
    if (p.hasQkvBias()) {
      ASSIGN_OR_RETURN(layer.attn_q_bias, expect(prefix + "attn_q.bias", {q_dim}));
      ASSIGN_OR_RETURN(layer.attn_k_bias, expect(prefix + "attn_k.bias", {p.kvDim()}));
      ASSIGN_OR_RETURN(layer.attn_v_bias, expect(prefix + "attn_v.bias", {p.kvDim()}));
    }
    if (p.hasQkNorm()) {
      ASSIGN_OR_RETURN(layer.attn_q_norm, expect(prefix + "attn_q_norm.weight", {p.headDim()}));
      ASSIGN_OR_RETURN(layer.attn_k_norm, expect(prefix + "attn_k_norm.weight", {p.headDim()}));
    }
  }
  for (const GgufTensor& tensor : tensors) {
    if (!used.contains(tensor.name)) {
      return invalidArgument("unexpected " + describe(tensor.name) + " (not part of the " +
                             std::string(architectureName(p.architecture)) +
                             " model this runtime computes)");
    }
  }
  return t;
}

uint64_t modelFingerprint(const GgufFile& file, const LlamaParams& p) {
  return modelFingerprint(architectureName(p.architecture), file.tensors(), p, nullptr);
}

uint64_t modelFingerprint(std::string_view kind, std::span<const GgufTensor> all,
                          const LlamaParams& p, const std::function<void(SipHasher&)>& extra) {
  SipHasher hasher(0, 0);
  hasher.addString("kvferry.model.v1").addString(kind);
  for (uint32_t value : {p.vocab_size, p.embedding_length, p.feed_forward_length, p.block_count,
                         p.head_count, p.head_count_kv, p.rope_dimension_count, p.context_length}) {
    hasher.addU32(value);
  }
  hasher.addF32(p.rope_freq_base).addF32(p.rms_epsilon);
  if (extra) extra(hasher);

  std::vector<const GgufTensor*> tensors;
  for (const GgufTensor& tensor : all) tensors.push_back(&tensor);
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
