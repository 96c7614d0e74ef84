#include "orchestrator/openai/chat_template.h"

#include <algorithm>
#include <array>
#include <utility>

namespace kvferry::openai {
namespace {

using Family = ChatTemplate::Family;

struct FamilyInfo {
  Family family;
  std::string_view name;
  std::string_view end_of_turn;  // empty: EOS only
};

constexpr std::array<FamilyInfo, 7> kFamilies = {{
    {Family::kPlain, "plain", ""},
    {Family::kChatMl, "chatml", "<|im_end|>"},
    {Family::kLlama3, "llama3", "<|eot_id|>"},
    {Family::kLlama2, "llama2", ""},
    {Family::kMistral, "mistral", ""},
    {Family::kZephyr, "zephyr", ""},
    {Family::kPhi3, "phi3", "<|end|>"},
}};

const FamilyInfo& infoOf(Family family) {
  for (const FamilyInfo& info : kFamilies) {
    if (info.family == family) return info;
  }
  return kFamilies[0];
}

std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t start = text.find_first_not_of(kSpace);
  if (start == std::string_view::npos) return {};
  const size_t end = text.find_last_not_of(kSpace);
  return text.substr(start, end - start + 1);
}

Status checkRoles(std::span<const ChatMessage> messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return invalidArgument("messages[" + std::to_string(i) + "].role '" + role +
                             "' is not system, user or assistant");
    }
  }
  return Status::ok();
}

// The Llama 2 / Mistral rule: after an optional leading system message, user and assistant
// alternate, starting with user.
Status checkAlternation(std::span<const ChatMessage> messages) {
  const size_t first = !messages.empty() && messages[0].role == "system" ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    if (messages[i].role == "system") {
      return invalidArgument("messages[" + std::to_string(i) +
                             "]: this model's chat template accepts a system message only as "
                             "the first message");
    }
    if ((messages[i].role == "user") != ((i - first) % 2 == 0)) {
      return invalidArgument("messages[" + std::to_string(i) +
                             "]: this model's chat template needs conversation roles to "
                             "alternate user/assistant/user/assistant/...");
    }
  }
  return Status::ok();
}

std::string renderPlain(std::span<const ChatMessage> messages) {
  std::string out;
  for (bool system_pass : {true, false}) {
    for (const ChatMessage& message : messages) {
      if ((message.role == "system") != system_pass || message.content.empty()) continue;
      if (!out.empty()) out += "\n\n";
      out += message.content;
    }
  }
  return out;
}

std::string renderLlama2(std::span<const ChatMessage> messages) {
  std::string out;
  std::string_view system;
  bool has_system = false;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    has_system = true;
    messages = messages.subspan(1);
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string content;
    if (i == 0 && has_system) {
      content += "<<SYS>>\n";
      content += system;
      content += "\n<</SYS>>\n\n";
    }
    content += messages[i].content;
    if (messages[i].role == "user") {
      if (i > 0) out += "<s>";  // the first BOS comes from the tokenizer
      out += "[INST] ";
      out += trim(content);
      out += " [/INST]";
    } else {
      out += ' ';
      out += trim(content);
      out += " </s>";
    }
  }
  return out;
}

std::string renderMistral(std::span<const ChatMessage> messages) {
  std::string out;
  std::string system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    messages = messages.subspan(1);
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "user") {
      out += "[INST] ";
      if (i == 0 && !system.empty()) out += system + "\n\n";
      out += messages[i].content;
      out += " [/INST]";
    } else {
      out += messages[i].content;
      out += "</s>";
    }
  }
  return out;
}

}  // namespace

ChatTemplate ChatTemplate::fromGguf(const model::GgufFile& file) {
  Result<std::string_view> source = file.getString("tokenizer.chat_template");
  return source.isOk() ? detect(*source) : ChatTemplate();
}

ChatTemplate ChatTemplate::detect(std::string_view source) {
  const auto has = [&](std::string_view marker) {
    return source.find(marker) != std::string_view::npos;
  };
  if (has("<|im_start|>")) return ChatTemplate(Family::kChatMl);
  if (has("<|start_header_id|>")) return ChatTemplate(Family::kLlama3);
  if (has("[INST]")) return ChatTemplate(has("<<SYS>>") ? Family::kLlama2 : Family::kMistral);
  if (has("<|user|>")) return ChatTemplate(has("<|end|>") ? Family::kPhi3 : Family::kZephyr);
  return ChatTemplate(Family::kPlain);
}

Result<ChatTemplate> ChatTemplate::named(std::string_view name) {
  std::string names;
  for (const FamilyInfo& info : kFamilies) {
    if (info.name == name) return ChatTemplate(info.family);
    names += names.empty() ? "" : ", ";
    names += info.name;
  }
  return invalidArgument("unknown chat template '" + model::printable(name) + "' (known: " + names +
                         ")");
}

std::string_view ChatTemplate::name() const { return infoOf(family_).name; }

Result<std::string> ChatTemplate::apply(std::span<const ChatMessage> messages) const {
  RETURN_IF_ERROR(checkRoles(messages));
  std::string out;
  switch (family_) {
    case Family::kPlain:
      return renderPlain(messages);
    case Family::kChatMl:
      for (const ChatMessage& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      out += "<|im_start|>assistant\n";
      return out;
    case Family::kLlama3:
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case Family::kLlama2:
      RETURN_IF_ERROR(checkAlternation(messages));
      return renderLlama2(messages);
    case Family::kMistral:
      RETURN_IF_ERROR(checkAlternation(messages));
      return renderMistral(messages);
    case Family::kZephyr:
    case Family::kPhi3: {
      const std::string_view end = family_ == Family::kZephyr ? "</s>" : "<|end|>";
      for (const ChatMessage& m : messages) {
        out += "<|" + m.role + "|>\n" + m.content;
        out += end;
        out += '\n';
      }
      out += "<|assistant|>\n";
      return out;
    }
  }
  return internalError("unknown chat template family");
}

std::vector<model::TokenId> ChatTemplate::stopTokens(const model::Tokenizer& tokenizer) const {
  const model::Vocabulary& vocab = tokenizer.vocabulary();
  std::vector<model::TokenId> stops;
  if (vocab.eos_id != model::kNoToken) stops.push_back(vocab.eos_id);
  const std::string_view end_of_turn = infoOf(family_).end_of_turn;
  if (end_of_turn.empty()) return stops;
  // The last token with that text, as the tokenizer resolves duplicates.
  for (size_t i = vocab.tokens.size(); i-- > 0;) {
    if (vocab.tokens[i] != end_of_turn) continue;
    const auto id = static_cast<model::TokenId>(i);
    if (std::ranges::find(stops, id) == stops.end()) stops.push_back(id);
    break;
  }
  return stops;
}

}  // namespace kvferry::openai
