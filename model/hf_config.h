// A Hugging Face model's config.json → LlamaParams, for the architectures the runtime computes:
// model_type llama (LlamaForCausalLM), mistral (MistralForCausalLM, read as llama), qwen2
// (Qwen2ForCausalLM) and qwen3 (Qwen3ForCausalLM), with transformers' defaults for absent keys.
//
// Read: vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// num_key_value_heads (default: the heads), head_dim (default hidden_size / heads),
// max_position_embeddings, rms_norm_eps (1e-6), rope_theta (10000), rope_scaling (null, rope_type
// "default", or "llama3" with factor, low_freq_factor, high_freq_factor and
// original_max_position_embeddings: turned into rope_freq_factors as llama.cpp's converter does),
// transformers 5's rope_parameters (the same, rope_theta inside), tie_word_embeddings (false).
// rope_neox is true: checkpoints keep Hugging Face's rotate_half layout.
//
// Refused, naming the key and the value: another model_type or architecture, hidden_act other
// than silu, attention_bias (llama, mistral, qwen3: biases on q, k, v and o) or mlp_bias,
// partial_rotary_factor other than 1, another rope type, a sliding window that would act inside
// the context (mistral's sliding_window below max_position_embeddings, qwen's use_sliding_window,
// a sliding_attention entry in layer_types). Other keys are ignored.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/llama_params.h"

namespace kvferry::model {

struct HfModelConfig {
  LlamaParams params;  // validated (validateLlamaParams)
  bool tie_word_embeddings = false;
  std::string model_type;  // as written: "llama", "mistral", "qwen2", "qwen3"
};

// Errors start with "config.json: ".
Result<HfModelConfig> parseHfConfig(std::string_view config_json);

// Tensor names of a Hugging Face checkpoint ↔ the engine's (GGUF) names: model.embed_tokens.weight
// ↔ token_embd.weight, model.norm.weight ↔ output_norm.weight, lm_head.weight ↔ output.weight, and
// per layer model.layers.N.X ↔ blk.N.Y for input_layernorm.weight ↔ attn_norm.weight,
// self_attn.{q,k,v}_proj.{weight,bias} ↔ attn_{q,k,v}.{weight,bias}, self_attn.o_proj.weight ↔
// attn_output.weight, self_attn.{q,k}_norm.weight ↔ attn_{q,k}_norm.weight,
// post_attention_layernorm.weight ↔ ffn_norm.weight, mlp.{gate,up,down}_proj.weight ↔
// ffn_{gate,up,down}.weight. nullopt for any other name.
std::optional<std::string> ggufNameOfHfTensor(std::string_view hf_name);
std::optional<std::string> hfNameOfGgufTensor(std::string_view gguf_name);

}  // namespace kvferry::model
