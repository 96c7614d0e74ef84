#include "orchestrator/openai/chat_template.h"

#include <algorithm>
#include <array>
#include <ctime>
#include <exception>
#include <minja.hpp>
#include <utility>

#include "model/model_files.h"

namespace kvferry::openai {

namespace {

using Json = nlohmann::ordered_json;

// End-of-turn markers of the families in use: a control token with one of these texts that the
// template writes ends generation.
constexpr std::array<std::string_view, 6> kEndOfTurnMarkers = {
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"};

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

// JSON text → a value; `what` names it in the error.
Result<Json> parseJson(std::string_view text, const std::string& what) {
  Json value = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return invalidArgument(what + " is not valid JSON");
  return value;
}

// Hugging Face's message dict: role and content, and the tool fields that are set.
Result<Json> messagesJson(std::span<const ChatMessage> messages) {
  Json out = Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    Json message = Json::object();
    message["role"] = m.role;
    message["content"] = m.content;
    if (!m.tool_calls_json.empty()) {
      ASSIGN_OR_RETURN(Json calls, parseJson(m.tool_calls_json,
                                             "messages[" + std::to_string(i) + "].tool_calls"));
      if (!calls.is_array()) {
        return invalidArgument("messages[" + std::to_string(i) + "].tool_calls is not an array");
      }
      message["tool_calls"] = std::move(calls);
    }
    if (!m.tool_call_id.empty()) message["tool_call_id"] = m.tool_call_id;
    if (!m.name.empty()) message["name"] = m.name;
    out.push_back(std::move(message));
  }
  return out;
}

// strftime of `now` in UTC (Python's datetime.now().strftime on a UTC host).
std::string formatTime(std::chrono::system_clock::time_point now, const std::string& format) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[256];
  const size_t length = std::strftime(text, sizeof(text), format.c_str(), &utc);
  return std::string(text, length);
}

}  // namespace

struct ChatTemplate::Compiled {
  std::shared_ptr<minja::TemplateNode> main;
  std::shared_ptr<minja::TemplateNode> tool_use;  // null: main renders tools too
  std::string source;                             // for stopTokens()
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
};

Result<ChatTemplate> ChatTemplate::create(std::string_view source, const model::Vocabulary& vocab,
                                          std::string_view tool_use_source) {
  ChatTemplate result;
  if (source.empty()) return result;
  auto compiled = std::make_shared<Compiled>();
  // transformers' environment: trim_blocks and lstrip_blocks; the trailing newline dropped.
  const minja::Options options{true, true, false};
  const auto parse = [&](std::string_view text,
                         const char* which) -> Result<std::shared_ptr<minja::TemplateNode>> {
    try {
      return minja::Parser::parse(std::string(text), options);
    } catch (const std::exception& error) {
      return invalidArgument(std::string("the chat template") + which +
                             " does not parse: " + error.what());
    }
  };
  ASSIGN_OR_RETURN(compiled->main, parse(source, ""));
  if (!tool_use_source.empty()) {
    ASSIGN_OR_RETURN(compiled->tool_use, parse(tool_use_source, " 'tool_use'"));
  }
  compiled->source = std::string(source) + std::string(tool_use_source);
  const auto text_of = [&](model::TokenId id) -> std::optional<std::string> {
    if (id == model::kNoToken || static_cast<size_t>(id) >= vocab.tokens.size()) {
      return std::nullopt;
    }
    return vocab.tokens[static_cast<size_t>(id)];
  };
  compiled->bos_token = text_of(vocab.bos_id);
  compiled->eos_token = text_of(vocab.eos_id);
  result.compiled_ = std::move(compiled);
  return result;
}

Result<ChatTemplate> ChatTemplate::fromModel(const model::ModelFiles& files) {
  Result<ChatTemplate> result =
      create(files.chatTemplate(), files.vocabulary(), files.toolUseChatTemplate());
  if (!result.isOk()) return result.status().withContext(files.path());
  return result;
}

Result<std::string> ChatTemplate::apply(std::span<const ChatMessage> messages,
                                        std::chrono::system_clock::time_point now) const {
  ChatTemplateInput input;
  input.messages = messages;
  input.now = now;
  return render(input);
}

Result<std::string> ChatTemplate::render(const ChatTemplateInput& input) const {
  if (isPlain()) return renderPlain(input.messages);
  ASSIGN_OR_RETURN(Json messages, messagesJson(input.messages));
  Json tools;  // null: None in the template
  if (!input.tools_json.empty()) {
    ASSIGN_OR_RETURN(tools, parseJson(input.tools_json, "tools"));
    if (!tools.is_array()) return invalidArgument("tools is not an array");
  }
  Json extra = Json::object();
  if (!input.extra_json.empty()) {
    ASSIGN_OR_RETURN(extra, parseJson(input.extra_json, "chat template arguments"));
    if (!extra.is_object()) return invalidArgument("chat template arguments are not an object");
  }
  const bool with_tools = !tools.is_null() && compiled_->tool_use != nullptr;
  const minja::TemplateNode& root = with_tools ? *compiled_->tool_use : *compiled_->main;
  try {
    Json variables = Json::object();
    variables["messages"] = std::move(messages);
    variables["tools"] = std::move(tools);
    variables["add_generation_prompt"] = input.add_generation_prompt;
    if (compiled_->bos_token) variables["bos_token"] = *compiled_->bos_token;
    if (compiled_->eos_token) variables["eos_token"] = *compiled_->eos_token;
    for (auto& [key, value] : extra.items()) variables[key] = value;
    std::shared_ptr<minja::Context> context = minja::Context::make(minja::Value(variables));
    const std::chrono::system_clock::time_point now = input.now;
    context->set("strftime_now",
                 minja::Value::callable(
                     [now](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
                       args.expectArgs("strftime_now", {1, 1}, {0, 0});
                       return minja::Value(formatTime(now, args.args[0].get<std::string>()));
                     }));
    return root.render(context);
  } catch (const std::exception& error) {
    // raise_exception's message is the template's own ("conversation roles must alternate…").
    return invalidArgument(std::string("the model's chat template failed: ") + error.what());
  }
}

std::vector<model::TokenId> ChatTemplate::stopTokens(const model::Tokenizer& tokenizer,
                                                     std::span<const model::TokenId> extra) const {
  const model::Vocabulary& vocab = tokenizer.vocabulary();
  std::vector<model::TokenId> stops;
  const auto add = [&](model::TokenId id) {
    if (id != model::kNoToken && std::ranges::find(stops, id) == stops.end()) stops.push_back(id);
  };
  add(vocab.eos_id);
  for (model::TokenId id : extra) add(id);
  if (isPlain()) return stops;
  for (std::string_view marker : kEndOfTurnMarkers) {
    if (compiled_->source.find(marker) == std::string::npos) continue;
    // The last control token with that text, as the tokenizer resolves duplicates.
    for (size_t i = vocab.tokens.size(); i-- > 0;) {
      if (vocab.tokens[i] == marker && vocab.types[i] == model::TokenType::kControl) {
        add(static_cast<model::TokenId>(i));
        break;
      }
    }
  }
  return stops;
}

}  // namespace kvferry::openai
