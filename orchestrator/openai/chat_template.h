// Chat templates: messages → the prompt text a chat model was trained on. The model's own Jinja
// template (Hugging Face's chat_template: tokenizer_config.json or chat_template.jinja, a GGUF's
// tokenizer.chat_template; model::ModelFiles reads it) is rendered with minja (third_party/) as
// transformers' apply_chat_template renders it: Jinja with trim_blocks and lstrip_blocks, the
// variables messages, tools (None when there are none), add_generation_prompt, the tokenizer's
// bos_token and eos_token (when the vocabulary has them), strftime_now (UTC, of the time passed
// in) and raise_exception, plus extra keyword arguments (vLLM's chat_template_kwargs, e.g.
// Qwen3's enable_thinking). tests/orchestrator/openai/chat_template_test.cc checks the output
// byte for byte against Hugging Face's @huggingface/jinja on real Llama 3/3.1/3.2, Qwen2.5,
// Qwen3 and Mistral templates, tools and tool calls included.
//
// A model without a template (a base model, the TinyStories demo) is "plain": the non-empty
// message contents joined by "\n\n", system messages first, then the others in order, with no
// role markers and no generation prompt — a single user message "Once upon a time" renders as
// exactly "Once upon a time".
//
// Tokenizing the rendered text: a template's markers are control tokens, so it is encoded with
// EncodeOptions::parse_special = true (parseSpecial()), and without adding BOS (addBos()): the
// template writes bos_token where the model wants it, as transformers' apply_chat_template
// (tokenize=True) adds no special tokens. Plain text is encoded as a completion prompt. Caveat,
// as in transformers and llama.cpp: with parse_special, marker text inside a user's message also
// becomes a control token.
//
// Immutable; any thread may render concurrently. Never throws: minja's exceptions (a template
// that raises, a malformed one) become INVALID_ARGUMENT.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/token_id.h"
#include "model/tokenizer.h"
#include "orchestrator/openai/request.h"

namespace kvferry::model {
class ModelFiles;
}

namespace kvferry::openai {

// What one rendering takes besides the messages.
struct ChatTemplateInput {
  std::span<const ChatMessage> messages;
  // A JSON array of tool definitions (OpenAI's / Hugging Face's {"type": "function", "function":
  // {...}}); empty: no tools (the template sees None).
  std::string_view tools_json;
  // A JSON object of extra template variables; empty: none.
  std::string_view extra_json;
  bool add_generation_prompt = true;
  std::chrono::system_clock::time_point now;  // what strftime_now formats, in UTC
};

class ChatTemplate {
 public:
  // The template `source` (Jinja) for a model with this vocabulary; `tool_use_source`, when not
  // empty, is rendered instead when tools are given (tokenizer_config.json's "tool_use"
  // template). An empty source is plain. INVALID_ARGUMENT, with where it fails, for a source
  // that does not parse.
  static Result<ChatTemplate> create(std::string_view source, const model::Vocabulary& vocab,
                                     std::string_view tool_use_source = {});
  // The model's template and vocabulary (errors name the model's path).
  static Result<ChatTemplate> fromModel(const model::ModelFiles& files);

  ChatTemplate() = default;  // plain

  bool isPlain() const { return compiled_ == nullptr; }

  // The prompt text. INVALID_ARGUMENT (a 400 for the client) where the template raises (e.g.
  // roles that do not alternate), for a tools or extra JSON that does not parse, or for a
  // message's tool_calls that is not a JSON array.
  Result<std::string> render(const ChatTemplateInput& input) const;
  // render() with the generation prompt, no tools, no extra variables.
  Result<std::string> apply(std::span<const ChatMessage> messages,
                            std::chrono::system_clock::time_point now) const;

  // Whether the rendered text must be encoded with parse_special = true.
  bool parseSpecial() const { return !isPlain(); }
  // Whether encoding the rendered text should add BOS: the vocabulary's add_bos for plain text,
  // never for a template.
  bool addBos(const model::Vocabulary& vocab) const { return isPlain() && vocab.add_bos; }

  // Tokens that end generation: the vocabulary's EOS, the model's `extra` end-of-turn ids
  // (generation_config.json's eos_token_id), and the end-of-turn markers the template writes
  // (<|im_end|>, <|eot_id|>, <|eom_id|>, <|end|>, <end_of_turn>, <|endoftext|>) when the
  // vocabulary holds a control token with exactly that text. Without duplicates, in that order.
  std::vector<model::TokenId> stopTokens(const model::Tokenizer& tokenizer,
                                         std::span<const model::TokenId> extra = {}) const;

 private:
  struct Compiled;  // minja's parsed templates and the special tokens' text (chat_template.cc)

  std::shared_ptr<const Compiled> compiled_;  // null: plain
};

}  // namespace kvferry::openai
