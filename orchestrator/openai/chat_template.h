// Chat templates: messages → the prompt text a chat model was trained on. We cannot run the
// Jinja source a GGUF carries in `tokenizer.chat_template`, so the template's family is detected
// from distinctive markers in that source and rendered natively, byte for byte as the family's
// reference template renders with add_generation_prompt=true (HF transformers: Jinja with
// trim_blocks and lstrip_blocks). Immutable; any thread may use it concurrently.
//
// Families, in detection order ({role} is system / user / assistant; "developer" arrives here as
// system):
//
//  chatml   marker `<|im_start|>` (Qwen, OpenHermes, …). Each message
//           `<|im_start|>{role}\n{content}<|im_end|>\n`, then `<|im_start|>assistant\n`.
//           (Qwen2's own template also inserts a default system message when there is none; we
//           do not.) End of turn: `<|im_end|>`.
//  llama3   marker `<|start_header_id|>`. Each message
//           `<|start_header_id|>{role}<|end_header_id|>\n\n{trim(content)}<|eot_id|>`, then
//           `<|start_header_id|>assistant<|end_header_id|>\n\n`. The leading `<|begin_of_text|>`
//           is NOT rendered: the tokenizer adds BOS. (Llama 3.1's date header is not rendered.)
//           End of turn: `<|eot_id|>`.
//  llama2   markers `[INST]` and `<<SYS>>` (Meta's Llama-2-chat template). An optional first
//           system message is folded into the first user turn; user and assistant turns must
//           then alternate, starting with user. User turn `<s>[INST] {strip(content)} [/INST]`,
//           assistant turn ` {strip(content)} </s>`; the first user turn's content is
//           `<<SYS>>\n{system}\n<</SYS>>\n\n{user}` and its `<s>` is NOT rendered (the
//           tokenizer adds BOS), later ones are. No generation prompt: the text ends in
//           ` [/INST]`.
//  mistral  marker `[INST]` without `<<SYS>>` (Mistral-7B-Instruct v0.1/v0.2). Turns alternate
//           user/assistant; user `[INST] {content} [/INST]`, assistant `{content}</s>`; the
//           leading `<s>` is not rendered. The reference refuses system messages; we fold them
//           into the first user turn as `{system}\n\n{user}` (as Mistral's later templates do).
//  zephyr   marker `<|user|>` without `<|end|>` (Zephyr, TinyLlama-chat). Each message
//           `<|{role}|>\n{content}</s>\n`, then `<|assistant|>\n`.
//  phi3     markers `<|user|>` and `<|end|>` (Phi-3). Each message
//  `<|{role}|>\n{content}<|end|>\n`,
//           then `<|assistant|>\n`. End of turn: `<|end|>`.
//  plain    no template, or one we do not recognise: for base models (the TinyStories demo
//           model). The non-empty message contents joined by "\n\n", system messages first,
//           then the others in order, with no role markers and no generation prompt: a single
//           user message "Once upon a time" renders as exactly "Once upon a time".
//
// trim/strip remove ASCII whitespace (" \t\n\r\f\v") at both ends, as Jinja's trim and Python's
// str.strip() do for ASCII text.
//
// Tokenizing the rendered text: every family but plain must be encoded with
// EncodeOptions::parse_special = true, since its markers are control tokens (parseSpecial()
// says which), and add_bos = vocabulary().add_bos. Caveat, as in llama.cpp: with parse_special,
// marker text inside a user's message also becomes a control token. plain is encoded with
// parse_special = false.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/token_id.h"
#include "model/tokenizer.h"
#include "orchestrator/openai/request.h"

namespace kvferry::openai {

class ChatTemplate {
 public:
  enum class Family { kPlain, kChatMl, kLlama3, kLlama2, kMistral, kZephyr, kPhi3 };

  // From the file's `tokenizer.chat_template`; plain when the key is absent, not a string, or
  // matches no family.
  static ChatTemplate fromGguf(const model::GgufFile& file);
  // From a Jinja template source, by the markers above.
  static ChatTemplate detect(std::string_view jinja_source);
  // By name() ("plain", "chatml", "llama3", "llama2", "mistral", "zephyr", "phi3"), for a
  // config override; INVALID_ARGUMENT listing the names for anything else.
  static Result<ChatTemplate> named(std::string_view name);

  ChatTemplate() = default;  // plain

  Family family() const { return family_; }
  std::string_view name() const;

  // The prompt text for `messages`, with the assistant's generation prompt appended where the
  // family has one. INVALID_ARGUMENT (a 400 for the client) where the reference template raises:
  // llama2 / mistral when user and assistant turns do not alternate starting with user, or a
  // system message is not the first message. Roles must be system, user or assistant.
  Result<std::string> apply(std::span<const ChatMessage> messages) const;

  // Whether the rendered text must be encoded with parse_special = true.
  bool parseSpecial() const { return family_ != Family::kPlain; }

  // Tokens that end generation: the vocabulary's EOS (when it has one) and, for chatml, llama3
  // and phi3, the family's end-of-turn token when the vocabulary holds a token with exactly its
  // text. Without duplicates.
  std::vector<model::TokenId> stopTokens(const model::Tokenizer& tokenizer) const;

 private:
  explicit ChatTemplate(Family family) : family_(family) {}

  Family family_ = Family::kPlain;
};

}  // namespace kvferry::openai
