#include "model/hf_config.h"

#include <boost/json.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "model/json_document.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;
using internal::JsonFields;

constexpr std::string_view kFile = "config.json";

struct KnownModel {
  std::string_view model_type;
  std::string_view class_name;
  Architecture architecture;
};
constexpr KnownModel kKnownModels[] = {
    {"llama", "LlamaForCausalLM", Architecture::kLlama},
    {"mistral", "MistralForCausalLM", Architecture::kLlama},
    {"qwen2", "Qwen2ForCausalLM", Architecture::kQwen2},
    {"qwen3", "Qwen3ForCausalLM", Architecture::kQwen3},
};

// A required (or defaulted) positive count that fits in uint32.
Result<uint32_t> count(const JsonFields& fields, std::string_view key,
                       std::optional<uint32_t> fallback = std::nullopt) {
  ASSIGN_OR_RETURN(std::optional<int64_t> value, fields.integer(key));
  if (!value) {
    if (fallback) return *fallback;
    return fields.error(key, "is missing");
  }
  if (*value <= 0 || *value > std::numeric_limits<uint32_t>::max()) {
    return fields.error(key, std::to_string(*value) + " is out of range (1..4294967295)");
  }
  return static_cast<uint32_t>(*value);
}

Result<float> positive(const JsonFields& fields, std::string_view key, double fallback) {
  ASSIGN_OR_RETURN(std::optional<double> value, fields.number(key));
  const double v = value.value_or(fallback);
  if (!(v > 0) || !std::isfinite(static_cast<float>(v))) {
    return fields.error(key, std::to_string(v) + " must be positive and finite");
  }
  return static_cast<float>(v);
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5): the type and, for llama3,
// the factors. `theta` is read from rope_parameters when it is there.
Status readRopeScaling(const json::object& scaling, const std::string& path, LlamaParams& p) {
  const JsonFields fields(scaling, kFile, path);
  std::string_view type_key = "rope_type";
  ASSIGN_OR_RETURN(std::optional<std::string_view> type, fields.string(type_key));
  if (!type) {
    type_key = "type";  // the older name
    ASSIGN_OR_RETURN(type, fields.string(type_key));
  }
  if (path == "rope_parameters") {
    ASSIGN_OR_RETURN(p.rope_freq_base, positive(fields, "rope_theta", p.rope_freq_base));
  }
  if (!type || *type == "default") return Status::ok();
  if (*type != "llama3") {
    return fields.error(type_key,
                        "'" + printable(*type) + "' is not supported (default and llama3 are)");
  }
  ASSIGN_OR_RETURN(const float factor, positive(fields, "factor", 8.0));
  ASSIGN_OR_RETURN(const float low, positive(fields, "low_freq_factor", 1.0));
  ASSIGN_OR_RETURN(const float high, positive(fields, "high_freq_factor", 4.0));
  ASSIGN_OR_RETURN(const uint32_t original, count(fields, "original_max_position_embeddings"));
  if (!(high > low)) {
    return fields.error("high_freq_factor", "must be greater than low_freq_factor");
  }
  p.rope_freq_factors =
      llama3RopeFactors(p.rope_freq_base, p.rope_dimension_count, factor, low, high, original);
  return Status::ok();
}

struct NamePair {
  std::string_view hf;
  std::string_view gguf;
};
constexpr NamePair kModelNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};
constexpr NamePair kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

// `name` = prefix + decimal layer index + "." + rest (the index without leading zeros).
std::optional<std::string> renameLayerTensor(std::string_view name, std::string_view from_prefix,
                                             std::string_view to_prefix, bool from_hf) {
  if (!name.starts_with(from_prefix)) return std::nullopt;
  name.remove_prefix(from_prefix.size());
  const size_t dot = name.find('.');
  const std::string_view index = name.substr(0, dot);
  if (dot == std::string_view::npos || index.empty() || index.size() > 9 ||
      (index.size() > 1 && index[0] == '0') ||
      index.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view rest = name.substr(dot + 1);
  for (const NamePair& pair : kLayerNames) {
    if (rest == (from_hf ? pair.hf : pair.gguf)) {
      return std::string(to_prefix) + std::string(index) + "." +
             std::string(from_hf ? pair.gguf : pair.hf);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ggufNameOfHfTensor(std::string_view hf_name) {
  for (const NamePair& pair : kModelNames) {
    if (hf_name == pair.hf) return std::string(pair.gguf);
  }
  return renameLayerTensor(hf_name, "model.layers.", "blk.", true);
}

std::optional<std::string> hfNameOfGgufTensor(std::string_view gguf_name) {
  for (const NamePair& pair : kModelNames) {
    if (gguf_name == pair.gguf) return std::string(pair.hf);
  }
  return renameLayerTensor(gguf_name, "blk.", "model.layers.", false);
}

Result<HfModelConfig> parseHfConfig(std::string_view config_json) {
  ASSIGN_OR_RETURN(json::value document, internal::parseJsonDocument(config_json, kFile));
  const json::object* root = document.if_object();
  if (root == nullptr) return invalidArgument("config.json: not a JSON object");
  const JsonFields fields(*root, kFile);

  HfModelConfig config;
  LlamaParams& p = config.params;
  ASSIGN_OR_RETURN(std::optional<std::string_view> model_type, fields.string("model_type"));
  if (!model_type) return fields.error("model_type", "is missing");
  const KnownModel* known = nullptr;
  for (const KnownModel& candidate : kKnownModels) {
    if (candidate.model_type == *model_type) known = &candidate;
  }
  if (known == nullptr) {
    return fields.error(
        "model_type",
        "'" + printable(*model_type) + "' is not supported (llama, mistral, qwen2 and qwen3 are)");
  }
  config.model_type = *model_type;
  p.architecture = known->architecture;
  if (const json::value* architectures = root->if_contains("architectures");
      architectures != nullptr && !architectures->is_null()) {
    const json::array* list = architectures->if_array();
    if (list == nullptr || list->size() != 1 || !(*list)[0].is_string() ||
        (*list)[0].get_string() != known->class_name) {
      return fields.error("architectures", json::serialize(*architectures) + " is not [\"" +
                                               std::string(known->class_name) + "\"]");
    }
  }

  ASSIGN_OR_RETURN(p.vocab_size, count(fields, "vocab_size"));
  ASSIGN_OR_RETURN(p.embedding_length, count(fields, "hidden_size"));
  ASSIGN_OR_RETURN(p.feed_forward_length, count(fields, "intermediate_size"));
  ASSIGN_OR_RETURN(p.block_count, count(fields, "num_hidden_layers"));
  ASSIGN_OR_RETURN(p.head_count, count(fields, "num_attention_heads"));
  ASSIGN_OR_RETURN(p.head_count_kv, count(fields, "num_key_value_heads", p.head_count));
  ASSIGN_OR_RETURN(p.context_length, count(fields, "max_position_embeddings"));
  const uint32_t default_head_dim = p.embedding_length / p.head_count;
  ASSIGN_OR_RETURN(const uint32_t head_dim, count(fields, "head_dim", default_head_dim));
  if (head_dim != default_head_dim || p.embedding_length % p.head_count != 0) {
    p.head_dim = head_dim;
  }
  p.rope_dimension_count = p.headDim();
  p.rope_neox = true;
  ASSIGN_OR_RETURN(p.rms_epsilon, positive(fields, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(p.rope_freq_base, positive(fields, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(std::optional<bool> tied, fields.boolean("tie_word_embeddings"));
  config.tie_word_embeddings = tied.value_or(false);

  // What this runtime does not compute, refused rather than silently mis-run.
  ASSIGN_OR_RETURN(std::optional<std::string_view> act, fields.string("hidden_act"));
  if (act && *act != "silu") {
    return fields.error("hidden_act", "'" + printable(*act) + "' is not supported (silu is)");
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (p.architecture == Architecture::kQwen2 && std::string_view(key) == "attention_bias") {
      continue;  // Qwen2's q/k/v biases are part of the architecture
    }
    ASSIGN_OR_RETURN(std::optional<bool> bias, fields.boolean(key));
    if (bias.value_or(false)) {
      return fields.error(key, std::string("true is not supported (") +
                                   (std::string_view(key) == "mlp_bias"
                                        ? "biases on the MLP projections"
                                        : "biases on the q, k, v and o projections") +
                                   ")");
    }
  }
  ASSIGN_OR_RETURN(std::optional<double> partial, fields.number("partial_rotary_factor"));
  if (partial && *partial != 1.0) {
    return fields.error("partial_rotary_factor",
                        std::to_string(*partial) + " is not supported (RoPE over whole heads)");
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> window, fields.integer("sliding_window"));
  ASSIGN_OR_RETURN(std::optional<bool> use_window, fields.boolean("use_sliding_window"));
  const bool window_acts = p.architecture == Architecture::kLlama
                               ? window.has_value() && *window < p.context_length
                               : use_window.value_or(false);
  if (window_acts) {
    return fields.error(
        p.architecture == Architecture::kLlama ? "sliding_window" : "use_sliding_window",
        (p.architecture == Architecture::kLlama
             ? std::to_string(*window) + " (below max_position_embeddings " +
                   std::to_string(p.context_length) + ")"
             : std::string("true")) +
            ": sliding-window attention is not implemented");
  }
  if (const json::value* layer_types = root->if_contains("layer_types");
      layer_types != nullptr && layer_types->is_array()) {
    for (const json::value& type : layer_types->get_array()) {
      if (type.is_string() && type.get_string() != "full_attention") {
        return fields.error("layer_types", "holds '" + printable(type.get_string()) +
                                               "': only full_attention layers are implemented");
      }
    }
  }

  RETURN_IF_ERROR(validateLlamaParams(p).withContext(kFile));
  ASSIGN_OR_RETURN(const json::object* scaling, fields.object("rope_scaling"));
  if (scaling != nullptr) RETURN_IF_ERROR(readRopeScaling(*scaling, "rope_scaling", p));
  ASSIGN_OR_RETURN(const json::object* parameters, fields.object("rope_parameters"));
  if (parameters != nullptr) RETURN_IF_ERROR(readRopeScaling(*parameters, "rope_parameters", p));
  RETURN_IF_ERROR(validateLlamaParams(p).withContext(kFile));
  return config;
}

}  // namespace kvferry::model
