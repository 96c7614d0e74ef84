#include "orchestrator/openai/request.h"

#include <algorithm>
#include <array>
#include <boost/json/object.hpp>
#include <boost/json/parser.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <exception>
#include <new>
#include <span>
#include <utility>
#include <variant>
#include <vector>

#include "common/format.h"
#include "model/tokenizer.h"

namespace kvferry::openai {
namespace {

namespace json = boost::json;

// Unsupported requests are refused, not silently served differently.
constexpr size_t kMaxStopStrings = 4;  // OpenAI's limit
constexpr uint32_t kCompletionsDefaultMaxTokens = 16;

std::string_view kindName(const json::value& value) {
  switch (value.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "an integer";
    case json::kind::double_:
      return "a decimal";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

ApiError wrongType(const std::string& param, std::string_view expected, const json::value& got) {
  return invalidRequest("Invalid type for '" + param + "': expected " + std::string(expected) +
                            ", but got " + std::string(kindName(got)) + " instead.",
                        param);
}

ApiError notSupported(const std::string& param, const std::string& what) {
  return invalidRequest(what + " is not supported by this server.", param);
}

std::optional<double> numberOf(const json::value& value) {
  if (const int64_t* i = value.if_int64()) return static_cast<double>(*i);
  if (const uint64_t* u = value.if_uint64()) return static_cast<double>(*u);
  if (const double* d = value.if_double()) return *d;
  return std::nullopt;
}

std::string formatNumber(const json::value& value) { return json::serialize(value); }

// At most `limit` entries (`count` given) in `param`, a list of `what`.
std::optional<ApiError> atMost(const std::string& param, size_t limit, size_t count,
                               std::string_view what) {
  if (count <= limit) return std::nullopt;
  return invalidRequest("Invalid value for '" + param + "': at most " + std::to_string(limit) +
                            " " + std::string(what) + ", got " + std::to_string(count) + ".",
                        param);
}

// Where a JSON text that failed to parse went wrong, for the error message.
struct JsonSpot {
  std::string path;  // the field at the failure, "messages[0].content"; "" at the top level
  std::optional<size_t> lone_surrogate;  // byte offset of a \uXXXX surrogate without its pair
};

std::optional<uint32_t> hex4(std::string_view text, size_t at) {
  if (at + 4 > text.size()) return std::nullopt;
  uint32_t value = 0;
  for (size_t k = 0; k < 4; ++k) {
    const char c = text[at + k];
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                             : -1;
    if (digit < 0) return std::nullopt;
    value = value << 4 | static_cast<uint32_t>(digit);
  }
  return value;
}

// Walks `body` up to `offset` (where the parser stopped) keeping the path of containers and keys,
// and looks for a lone surrogate escape on the way, which Boost.JSON reports only as a syntax
// error: a client that sent one learns which field holds it.
JsonSpot locate(std::string_view body, size_t offset) {
  struct Level {
    bool object = false;
    std::string key;
    size_t index = 0;
    bool want_key = true;
  };
  std::vector<Level> levels;
  JsonSpot spot;
  const auto path = [&levels] {
    std::string out;
    for (const Level& level : levels) {
      if (!level.object) {
        out += "[" + std::to_string(level.index) + "]";
      } else if (!level.want_key) {
        out += (out.empty() ? "" : ".") + level.key;
      }
    }
    return out;
  };
  for (size_t i = 0; i < body.size() && i <= offset;) {
    const char c = body[i];
    if (c == '{' || c == '[') {
      levels.push_back(Level{c == '{', {}, 0, true});
    } else if ((c == '}' || c == ']') && !levels.empty()) {
      levels.pop_back();
    } else if (c == ',' && !levels.empty()) {
      Level& top = levels.back();
      if (top.object) {
        top.want_key = true;
        top.key.clear();
      } else {
        ++top.index;
      }
    } else if (c == ':' && !levels.empty()) {
      levels.back().want_key = false;
    } else if (c == '"') {
      const bool is_key = !levels.empty() && levels.back().object && levels.back().want_key;
      size_t j = i + 1;
      std::string text;
      for (; j < body.size() && body[j] != '"'; ++j) {
        if (body[j] != '\\') {
          text += body[j];
          continue;
        }
        if (j + 1 < body.size() && body[j + 1] == 'u') {
          const std::optional<uint32_t> unit = hex4(body, j + 2);
          const bool high = unit && *unit >= 0xD800 && *unit <= 0xDBFF;
          const bool low = unit && *unit >= 0xDC00 && *unit <= 0xDFFF;
          std::optional<uint32_t> next;
          if (high && j + 7 < body.size() && body[j + 6] == '\\' && body[j + 7] == 'u') {
            next = hex4(body, j + 8);
          }
          if (low || (high && !(next && *next >= 0xDC00 && *next <= 0xDFFF))) {
            spot.lone_surrogate = j;
            spot.path = path();  // a key's: the object holding it
            return spot;
          }
          if (high) j += 6;  // the pair's second half
          j += 5;
          continue;
        }
        if (j + 1 < body.size()) text += body[++j];
      }
      if (is_key) levels.back().key = model::printable(text);
      i = j;
    }
    ++i;
  }
  spot.path = path();
  return spot;
}

// Reads the fields of one request object. Each method returns the first problem it finds.
class RequestReader {
 public:
  RequestReader(Endpoint endpoint, const json::object& body) : endpoint_(endpoint), body_(body) {}

  std::optional<ApiError> read(ApiRequest& out) const;

 private:
  // The field's value; nullptr when it is absent or null.
  const json::value* field(std::string_view key) const {
    const json::value* value = body_.if_contains(key);
    return value == nullptr || value->is_null() ? nullptr : value;
  }
  bool chat() const { return endpoint_ == Endpoint::kChatCompletions; }

  std::optional<ApiError> readModel(ApiRequest& out) const;
  std::optional<ApiError> readPrompt(ApiRequest& out) const;
  std::optional<ApiError> readMessages(ApiRequest& out) const;
  std::optional<ApiError> readMaxTokens(ApiRequest& out) const;
  std::optional<ApiError> readSampling(ApiRequest& out) const;
  std::optional<ApiError> readStop(ApiRequest& out) const;
  std::optional<ApiError> readStream(ApiRequest& out) const;
  std::optional<ApiError> readPenalties(ApiRequest& out) const;
  std::optional<ApiError> readExtensions(ApiRequest& out) const;
  std::optional<ApiError> readLogprobs(ApiRequest& out) const;
  std::optional<ApiError> refuseUnknown(ApiRequest& unused) const;
  std::optional<ApiError> refuseUnsupported() const;
  std::optional<ApiError> checkNoOps() const;
  // A boolean field into `out` (unchanged when absent).
  std::optional<ApiError> readBool(std::string_view key, bool& out) const;
  // A number field within [low, high] into `out` (unchanged when absent).
  std::optional<ApiError> readNumber(std::string_view key, double low, double high,
                                     float& out) const;
  // A number field within (0, high] into `out` (unchanged when absent); `note` ends the
  // message's parenthesis.
  std::optional<ApiError> readPositive(std::string_view key, double high, std::string_view note,
                                       float& out) const;

  Endpoint endpoint_;
  const json::object& body_;
};

std::optional<ApiError> RequestReader::read(ApiRequest& out) const {
  out.endpoint = endpoint_;
  for (auto step :
       {&RequestReader::readModel,
        chat() ? &RequestReader::readMessages : &RequestReader::readPrompt,
        &RequestReader::refuseUnknown, &RequestReader::readMaxTokens, &RequestReader::readSampling,
        &RequestReader::readStop, &RequestReader::readStream, &RequestReader::readPenalties,
        &RequestReader::readExtensions, &RequestReader::readLogprobs}) {
    if (std::optional<ApiError> error = (this->*step)(out)) return error;
  }
  if (std::optional<ApiError> error = refuseUnsupported()) return error;
  return checkNoOps();
}

std::optional<ApiError> RequestReader::readPositive(std::string_view key, double high,
                                                    std::string_view note, float& out) const {
  const json::value* value = field(key);
  if (value == nullptr) return std::nullopt;
  const std::string param(key);
  const std::optional<double> number = numberOf(*value);
  if (!number) return wrongType(param, "a number", *value);
  if (!(*number > 0.0 && *number <= high)) {
    const std::string bound = shortNumber(high);
    return invalidRequest("Invalid value for '" + param + "': " + formatNumber(*value) +
                              " is not in (0, " + bound + "] (greater than 0, at most " + bound +
                              std::string(note) + ").",
                          param);
  }
  out = static_cast<float>(*number);
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readBool(std::string_view key, bool& out) const {
  const json::value* value = field(key);
  if (value == nullptr) return std::nullopt;
  const bool* flag = value->if_bool();
  if (flag == nullptr) return wrongType(std::string(key), "a boolean", *value);
  out = *flag;
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readNumber(std::string_view key, double low, double high,
                                                  float& out) const {
  const json::value* value = field(key);
  if (value == nullptr) return std::nullopt;
  const std::string param(key);
  const std::optional<double> number = numberOf(*value);
  if (!number) return wrongType(param, "a number", *value);
  if (!(*number >= low && *number <= high)) {
    return invalidRequest("Invalid value for '" + param + "': " + formatNumber(*value) +
                              " is not between " + shortNumber(low) + " and " + shortNumber(high) +
                              ".",
                          param);
  }
  out = static_cast<float>(*number);
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readModel(ApiRequest& out) const {
  const json::value* model = field("model");
  if (model == nullptr) return invalidRequest("you must provide a model parameter", "model");
  const json::string* text = model->if_string();
  if (text == nullptr) return wrongType("model", "a string", *model);
  out.model = std::string(text->data(), text->size());
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readPrompt(ApiRequest& out) const {
  const json::value* prompt = field("prompt");
  if (prompt == nullptr) return invalidRequest("you must provide a prompt parameter", "prompt");
  if (const json::string* text = prompt->if_string()) {
    out.prompt = std::string(text->data(), text->size());
    return std::nullopt;
  }
  const json::array* items = prompt->if_array();
  if (items == nullptr) return wrongType("prompt", "a string", *prompt);
  if (items->empty()) return invalidRequest("'prompt' must not be an empty array.", "prompt");
  if (!(*items)[0].is_string()) {
    return notSupported("prompt", "A prompt given as token ids");
  }
  if (items->size() > 1) {
    return notSupported(
        "prompt", "More than one prompt per request (got " + std::to_string(items->size()) + ")");
  }
  const json::string& text = (*items)[0].get_string();
  out.prompt = std::string(text.data(), text.size());
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readMessages(ApiRequest& out) const {
  const json::value* messages = field("messages");
  if (messages == nullptr) {
    return invalidRequest("you must provide a messages parameter", "messages");
  }
  const json::array* items = messages->if_array();
  if (items == nullptr) return wrongType("messages", "an array", *messages);
  if (items->empty()) {
    return invalidRequest("'messages' must contain at least one message.", "messages");
  }
  out.messages.reserve(items->size());
  for (size_t i = 0; i < items->size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json::object* message = (*items)[i].if_object();
    if (message == nullptr) return wrongType(where, "an object", (*items)[i]);

    ChatMessage parsed;
    const json::value* role = message->if_contains("role");
    if (role == nullptr || role->is_null()) {
      return invalidRequest("Missing required parameter: '" + where + ".role'.", where + ".role");
    }
    const json::string* role_text = role->if_string();
    if (role_text == nullptr) return wrongType(where + ".role", "a string", *role);
    if (*role_text == "system" || *role_text == "developer") {
      parsed.role = "system";
    } else if (*role_text == "user" || *role_text == "assistant") {
      parsed.role = std::string(role_text->data(), role_text->size());
    } else if (*role_text == "tool" || *role_text == "function") {
      return notSupported(
          where + ".role",
          "The role '" + std::string(role_text->data(), role_text->size()) + "' (tool calling)");
    } else {
      return invalidRequest("Invalid value for '" + where + ".role': '" +
                                model::printable(std::string_view(*role_text)) +
                                "'. Supported values are: 'system', 'developer', 'user' and "
                                "'assistant'.",
                            where + ".role");
    }
    if (parsed.role == "assistant") {
      for (std::string_view key : {"tool_calls", "function_call"}) {
        const json::value* calls = message->if_contains(key);
        if (calls != nullptr && !calls->is_null() &&
            !(calls->is_array() && calls->get_array().empty())) {
          return notSupported(where + "." + std::string(key), "Tool calling");
        }
      }
    }

    const std::string content_param = where + ".content";
    const json::value* content = message->if_contains("content");
    if (content == nullptr || content->is_null()) {
      if (parsed.role != "assistant") {
        return invalidRequest("Missing required parameter: '" + content_param + "'.",
                              content_param);
      }
    } else if (const json::string* text = content->if_string()) {
      parsed.content = std::string(text->data(), text->size());
    } else if (const json::array* parts = content->if_array()) {
      for (size_t k = 0; k < parts->size(); ++k) {
        const std::string part_param = content_param + "[" + std::to_string(k) + "]";
        const json::object* part = (*parts)[k].if_object();
        if (part == nullptr) return wrongType(part_param, "an object", (*parts)[k]);
        const json::value* type = part->if_contains("type");
        if (type == nullptr || type->is_null()) {
          return invalidRequest("Missing required parameter: '" + part_param + ".type'.",
                                part_param + ".type");
        }
        const json::string* type_text = type->if_string();
        if (type_text == nullptr) return wrongType(part_param + ".type", "a string", *type);
        if (*type_text != "text") {
          return notSupported(part_param + ".type",
                              "Content of type '" + model::printable(std::string_view(*type_text)) +
                                  "' (only 'text' parts are)");
        }
        const json::value* part_text = part->if_contains("text");
        if (part_text == nullptr || part_text->is_null()) {
          return invalidRequest("Missing required parameter: '" + part_param + ".text'.",
                                part_param + ".text");
        }
        const json::string* value = part_text->if_string();
        if (value == nullptr) return wrongType(part_param + ".text", "a string", *part_text);
        parsed.content.append(value->data(), value->size());
      }
    } else {
      return wrongType(content_param, "a string or an array of content parts", *content);
    }
    out.messages.push_back(std::move(parsed));
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readMaxTokens(ApiRequest& out) const {
  // Chat: the newer max_completion_tokens wins over max_tokens, as in vLLM; both are validated.
  std::vector<std::string_view> keys = {"max_tokens"};
  if (chat()) keys.push_back("max_completion_tokens");
  for (std::string_view key : keys) {
    const json::value* value = field(key);
    if (value == nullptr) continue;
    const std::string param(key);
    if (const int64_t* i = value->if_int64()) {
      if (*i < 1) {
        return invalidRequest("Invalid value for '" + param + "': it must be at least 1, got " +
                                  std::to_string(*i) + ".",
                              param);
      }
      if (*i > int64_t{UINT32_MAX}) {
        return invalidRequest("Invalid value for '" + param + "': " + std::to_string(*i) +
                                  " is too large (at most " + std::to_string(UINT32_MAX) + ").",
                              param);
      }
      out.max_tokens = static_cast<uint32_t>(*i);
      out.max_tokens_field = param;
    } else if (const uint64_t* u = value->if_uint64()) {
      return invalidRequest("Invalid value for '" + param + "': " + std::to_string(*u) +
                                " is too large (at most " + std::to_string(UINT32_MAX) + ").",
                            param);
    } else {
      return wrongType(param, "an integer", *value);
    }
  }
  if (!chat() && !out.max_tokens) out.max_tokens = kCompletionsDefaultMaxTokens;
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readSampling(ApiRequest& out) const {
  if (const json::value* value = field("temperature")) {
    const std::optional<double> t = numberOf(*value);
    if (!t) return wrongType("temperature", "a number", *value);
    if (!(*t >= 0.0 && *t <= 2.0)) {
      return invalidRequest(
          "Invalid value for 'temperature': " + formatNumber(*value) + " is not between 0 and 2.",
          "temperature");
    }
    out.temperature = static_cast<float>(*t);
  }
  if (std::optional<ApiError> error = readPositive("top_p", 1.0, "", out.top_p)) return error;
  if (const json::value* value = field("seed")) {
    if (const int64_t* i = value->if_int64()) {
      out.seed = static_cast<uint64_t>(*i);  // two's complement bit pattern
    } else if (const uint64_t* u = value->if_uint64()) {
      out.seed = *u;
    } else {
      return wrongType("seed", "an integer", *value);
    }
  }
  if (const json::value* value = field("n")) {
    if (value->is_int64() || value->is_uint64()) {
      if (!(value->is_int64() && value->get_int64() == 1)) {
        return invalidRequest("Invalid value for 'n': only n=1 is supported by this server, got " +
                                  formatNumber(*value) + ".",
                              "n");
      }
    } else {
      return wrongType("n", "an integer", *value);
    }
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readStop(ApiRequest& out) const {
  const json::value* value = field("stop");
  if (value == nullptr) return std::nullopt;
  if (const json::string* text = value->if_string()) {
    if (!text->empty()) out.stop.emplace_back(text->data(), text->size());
    return std::nullopt;
  }
  const json::array* items = value->if_array();
  if (items == nullptr) return wrongType("stop", "a string or an array of strings", *value);
  if (auto error = atMost("stop", kMaxStopStrings, items->size(), "stop sequences are allowed")) {
    return error;
  }
  for (size_t i = 0; i < items->size(); ++i) {
    const json::string* text = (*items)[i].if_string();
    if (text == nullptr) {
      return wrongType("stop[" + std::to_string(i) + "]", "a string", (*items)[i]);
    }
    if (!text->empty()) out.stop.emplace_back(text->data(), text->size());
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readStream(ApiRequest& out) const {
  if (std::optional<ApiError> error = readBool("return_token_ids", out.return_token_ids)) {
    return error;
  }
  if (std::optional<ApiError> error = readBool("stream", out.stream)) return error;
  const json::value* options = field("stream_options");
  if (options == nullptr) return std::nullopt;
  const json::object* object = options->if_object();
  if (object == nullptr) return wrongType("stream_options", "an object", *options);
  if (!out.stream) {
    return invalidRequest(
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        "stream_options");
  }
  const json::value* usage = object->if_contains("include_usage");
  if (usage != nullptr && !usage->is_null()) {
    const bool* include = usage->if_bool();
    if (include == nullptr) {
      return wrongType("stream_options.include_usage", "a boolean", *usage);
    }
    out.include_usage = *include;
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readPenalties(ApiRequest& out) const {
  for (auto [key, target] : {std::pair{"presence_penalty", &out.presence_penalty},
                             std::pair{"frequency_penalty", &out.frequency_penalty}}) {
    if (std::optional<ApiError> error = readNumber(key, -2.0, 2.0, *target)) return error;
  }
  if (std::optional<ApiError> error =
          readPositive("repetition_penalty", 2.0, "; 1 is off", out.repetition_penalty)) {
    return error;
  }
  const json::value* value = field("logit_bias");
  if (value == nullptr) return std::nullopt;
  const json::object* bias = value->if_object();
  if (bias == nullptr) return wrongType("logit_bias", "an object", *value);
  if (auto error = atMost("logit_bias", kMaxLogitBias, bias->size(), "tokens")) return error;
  for (const json::key_value_pair& entry : *bias) {
    const std::string key(entry.key());
    const std::string param = "logit_bias." + model::printable(key);
    int32_t token = -1;
    const bool digits =
        !key.empty() && key.size() <= 9 &&
        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) token = std::stoi(key);
    if (!digits) {
      return invalidRequest(
          "Invalid key in 'logit_bias': '" + model::printable(key) + "' is not a token id.",
          "logit_bias");
    }
    const std::optional<double> number = numberOf(entry.value());
    if (!number) return wrongType(param, "a number", entry.value());
    if (!(*number >= -100.0 && *number <= 100.0)) {
      return invalidRequest("Invalid value for '" + param + "': " + formatNumber(entry.value()) +
                                " is not between -100 and 100.",
                            param);
    }
    out.logit_bias.emplace_back(token, static_cast<float>(*number));
  }
  std::sort(out.logit_bias.begin(), out.logit_bias.end());
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readExtensions(ApiRequest& out) const {
  if (std::optional<ApiError> error = readBool("ignore_eos", out.ignore_eos)) return error;
  if (std::optional<ApiError> error = readBool("skip_special_tokens", out.skip_special_tokens)) {
    return error;
  }
  if (const json::value* value = field("min_tokens")) {
    const int64_t* count = value->if_int64();
    if (count == nullptr) {
      if (value->is_uint64()) {
        return invalidRequest(
            "Invalid value for 'min_tokens': " + formatNumber(*value) + " is too large.",
            "min_tokens");
      }
      return wrongType("min_tokens", "an integer", *value);
    }
    if (*count < 0 || *count > int64_t{UINT32_MAX}) {
      return invalidRequest("Invalid value for 'min_tokens': it must be between 0 and " +
                                std::to_string(UINT32_MAX) + ", got " + std::to_string(*count) +
                                ".",
                            "min_tokens");
    }
    out.min_tokens = static_cast<uint32_t>(*count);
  }
  const json::value* value = field("stop_token_ids");
  if (value == nullptr) return std::nullopt;
  const json::array* ids = value->if_array();
  if (ids == nullptr) return wrongType("stop_token_ids", "an array of integers", *value);
  if (auto error = atMost("stop_token_ids", kMaxStopTokenIds, ids->size(), "tokens")) {
    return error;
  }
  for (size_t i = 0; i < ids->size(); ++i) {
    const std::string param = "stop_token_ids[" + std::to_string(i) + "]";
    const int64_t* id = (*ids)[i].if_int64();
    if (id == nullptr && !(*ids)[i].is_uint64()) return wrongType(param, "an integer", (*ids)[i]);
    if (id == nullptr || *id < 0 || *id > INT32_MAX) {
      return invalidRequest(
          "Invalid value for '" + param + "': " + formatNumber((*ids)[i]) + " is not a token id.",
          param);
    }
    out.stop_token_ids.push_back(static_cast<int32_t>(*id));
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::readLogprobs(ApiRequest& out) const {
  const json::value* logprobs = field("logprobs");
  const json::value* top = field("top_logprobs");
  // A count in [0, kMaxTopLogprobs] read from `value` (named `param`).
  const auto count = [](const std::string& param,
                        const json::value& value) -> std::variant<uint32_t, ApiError> {
    const int64_t* n = value.if_int64();
    if (n == nullptr && !value.is_uint64()) return wrongType(param, "an integer", value);
    if (n == nullptr || *n < 0 || *n > kMaxTopLogprobs) {
      return invalidRequest("Invalid value for '" + param + "': " + formatNumber(value) +
                                " is not between 0 and " + std::to_string(kMaxTopLogprobs) + ".",
                            param);
    }
    return static_cast<uint32_t>(*n);
  };
  if (!chat()) {
    // Completions: logprobs is the number of most likely tokens to report with each token.
    if (top != nullptr) {
      return invalidRequest(
          "'top_logprobs' belongs to chat completions; completions take the "
          "count in 'logprobs'.",
          "top_logprobs");
    }
    if (logprobs == nullptr) return std::nullopt;
    std::variant<uint32_t, ApiError> n = count("logprobs", *logprobs);
    if (ApiError* error = std::get_if<ApiError>(&n)) return std::move(*error);
    out.logprobs = std::get<uint32_t>(n);
    return std::nullopt;
  }
  // Chat: logprobs is a boolean, top_logprobs the count and only with logprobs true.
  bool wanted = false;
  if (std::optional<ApiError> error = readBool("logprobs", wanted)) return error;
  uint32_t alternatives = 0;
  if (top != nullptr) {
    std::variant<uint32_t, ApiError> n = count("top_logprobs", *top);
    if (ApiError* error = std::get_if<ApiError>(&n)) return std::move(*error);
    alternatives = std::get<uint32_t>(n);
    if (!wanted && alternatives > 0) {
      return invalidRequest("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs");
    }
  }
  if (wanted) out.logprobs = alternatives;
  return std::nullopt;
}

// Every field a request may carry. Anything else is a 400 naming it.
constexpr std::array<std::string_view, 29> kCommonFields = {"model",
                                                            "max_tokens",
                                                            "temperature",
                                                            "top_p",
                                                            "seed",
                                                            "stop",
                                                            "stream",
                                                            "stream_options",
                                                            "n",
                                                            "presence_penalty",
                                                            "frequency_penalty",
                                                            "logit_bias",
                                                            "logprobs",
                                                            "return_token_ids",
                                                            "ignore_eos",
                                                            "min_tokens",
                                                            "stop_token_ids",
                                                            "skip_special_tokens",
                                                            "repetition_penalty",
                                                            "response_format",
                                                            "best_of",
                                                            "echo",
                                                            "suffix",  // refused unless neutral
                                                            "user",
                                                            "top_k",
                                                            "min_p",  // documented no-ops
                                                            "store",
                                                            "metadata",
                                                            "service_tier"};
constexpr std::array<std::string_view, 1> kCompletionsFields = {"prompt"};
constexpr std::array<std::string_view, 8> kChatFields = {
    "messages",  "max_completion_tokens", "top_logprobs",       "tools", "tool_choice",
    "functions", "function_call",         "parallel_tool_calls"};

std::optional<ApiError> RequestReader::refuseUnknown(ApiRequest&) const {
  const auto in = [](const auto& names, std::string_view key) {
    return std::find(names.begin(), names.end(), key) != names.end();
  };
  for (const json::key_value_pair& entry : body_) {
    const std::string_view key(entry.key().data(), entry.key().size());
    if (in(kCommonFields, key) || in(chat() ? std::span<const std::string_view>(kChatFields)
                                            : std::span<const std::string_view>(kCompletionsFields),
                                     key)) {
      continue;
    }
    const std::string name = model::printable(key);
    ApiError error = invalidRequest("Unrecognized request argument supplied: '" + name +
                                        "'. This server does not support it (docs/api.md "
                                        "lists the fields it reads).",
                                    name);
    error.code = "unknown_parameter";
    return error;
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::refuseUnsupported() const {
  // Must be false when present.
  if (const json::value* value = field("echo")) {
    if (!(value->is_bool() && !value->get_bool())) return notSupported("echo", "'echo'");
  }
  if (const json::value* value = field("best_of")) {
    if (!(value->is_int64() && value->get_int64() == 1)) {
      if (!value->is_int64() && !value->is_uint64()) {
        return wrongType("best_of", "an integer", *value);
      }
      return notSupported("best_of", "'best_of' other than 1");
    }
  }
  if (const json::value* value = field("suffix")) {
    if (!(value->is_string() && value->get_string().empty())) {
      return notSupported("suffix", "'suffix'");
    }
  }
  for (std::string_view key : {"tools", "functions"}) {
    const json::value* value = field(key);
    if (value == nullptr || (value->is_array() && value->get_array().empty())) continue;
    return notSupported(std::string(key), "Tool calling ('" + std::string(key) + "')");
  }
  for (std::string_view key : {"tool_choice", "function_call"}) {
    const json::value* value = field(key);
    if (value == nullptr) continue;
    const json::string* text = value->if_string();
    if (text != nullptr && (*text == "none" || *text == "auto")) continue;
    return notSupported(std::string(key), "Tool calling ('" + std::string(key) + "')");
  }
  if (const json::value* value = field("response_format")) {
    const json::object* format = value->if_object();
    if (format == nullptr) return wrongType("response_format", "an object", *value);
    const json::value* type = format->if_contains("type");
    const json::string* type_text = type == nullptr ? nullptr : type->if_string();
    if (type_text == nullptr) {
      return invalidRequest("Missing required parameter: 'response_format.type'.",
                            "response_format.type");
    }
    if (*type_text != "text") {
      return notSupported(
          "response_format.type",
          "response_format of type '" + model::printable(std::string_view(*type_text)) + "'");
    }
  }
  return std::nullopt;
}

std::optional<ApiError> RequestReader::checkNoOps() const {
  // Accepted without effect (docs/api.md): each only in the value that asks for nothing.
  if (const json::value* value = field("user"); value != nullptr && !value->is_string()) {
    return wrongType("user", "a string", *value);
  }
  bool ignored = false;
  if (std::optional<ApiError> error = readBool("parallel_tool_calls", ignored)) return error;
  if (std::optional<ApiError> error = readBool("store", ignored)) return error;
  if (ignored) return notSupported("store", "Storing completions ('store': true)");
  if (const json::value* value = field("metadata"); value != nullptr && !value->is_object()) {
    return wrongType("metadata", "an object", *value);
  }
  if (const json::value* value = field("service_tier")) {
    const json::string* tier = value->if_string();
    if (tier == nullptr) return wrongType("service_tier", "a string", *value);
    if (*tier != "auto" && *tier != "default") {
      return notSupported("service_tier",
                          "The service tier '" + model::printable(std::string_view(*tier)) + "'");
    }
  }
  if (const json::value* value = field("top_k")) {
    if (!value->is_int64()) return wrongType("top_k", "an integer", *value);
    if (value->get_int64() != -1 && value->get_int64() != 0) {
      return notSupported("top_k", "'top_k' other than -1 or 0 (all tokens)");
    }
  }
  if (const json::value* value = field("min_p")) {
    const std::optional<double> p = numberOf(*value);
    if (!p) return wrongType("min_p", "a number", *value);
    if (*p != 0.0) return notSupported("min_p", "'min_p' other than 0");
  }
  return std::nullopt;
}

ParseResult parseChecked(Endpoint endpoint, std::string_view body) {
  if (Status utf8 = model::checkUtf8(body); !utf8.isOk()) {
    return invalidRequest("The request body is not valid JSON: " + utf8.message() + ".");
  }
  json::parser parser;
  json::error_code ec;
  const size_t consumed = parser.write(body.data(), body.size(), ec);
  if (ec) {
    const JsonSpot spot = locate(body, consumed);
    if (spot.lone_surrogate) {
      const std::string where = spot.path.empty() ? "a key" : "'" + spot.path + "'";
      return invalidRequest("The request body is not valid JSON: " + where +
                                " holds a lone UTF-16 surrogate (" +
                                std::string(body.substr(*spot.lone_surrogate, 6)) +
                                " at byte offset " + std::to_string(*spot.lone_surrogate) +
                                " without its other half), which is not a character.",
                            spot.path);
    }
    return invalidRequest("The request body is not valid JSON: " + ec.message() +
                          " at byte offset " + std::to_string(consumed) +
                          (spot.path.empty() ? "" : " (in '" + spot.path + "')") + ".");
  }
  const json::value root = parser.release();
  const json::object* object = root.if_object();
  if (object == nullptr) {
    return invalidRequest("The request body must be a JSON object, but got " +
                          std::string(kindName(root)) + ".");
  }
  ApiRequest request;
  if (std::optional<ApiError> error = RequestReader(endpoint, *object).read(request)) {
    return std::move(*error);
  }
  return request;
}

}  // namespace

std::string_view endpointPath(Endpoint endpoint) {
  return endpoint == Endpoint::kChatCompletions ? "/v1/chat/completions" : "/v1/completions";
}

std::string errorJson(const ApiError& error) {
  json::object inner;
  inner["message"] = error.message;
  inner["type"] = error.type;
  inner["param"] = error.param.empty() ? json::value(nullptr) : json::value(error.param);
  inner["code"] = error.code.empty() ? json::value(nullptr) : json::value(error.code);
  json::object outer;
  outer["error"] = std::move(inner);
  return json::serialize(outer);
}

ApiError invalidRequest(std::string message, std::string param) {
  return {400, "invalid_request_error", std::move(message), std::move(param), {}};
}

ApiError modelNotFound(std::string_view model) {
  return {404, "invalid_request_error",
          "The model `" + std::string(model) + "` does not exist or you do not have access to it.",
          "model", "model_not_found"};
}

ApiError httpError(int http_status, std::string message) {
  ApiError error{http_status,
                 http_status >= 500 ? "server_error" : "invalid_request_error",
                 std::move(message),
                 {},
                 {}};
  switch (http_status) {
    case 400:
      error.code = "invalid_request";
      break;
    case 404:
      error.code = "unknown_url";
      break;
    case 405:
      error.code = "method_not_allowed";
      break;
    case 413:
      error.code = "request_too_large";
      break;
    case 431:
      error.code = "request_header_fields_too_large";
      break;
    default:
      break;
  }
  return error;
}

ApiError apiErrorFromStatus(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return {400, "invalid_request_error", status.message(), {}, {}};
    case StatusCode::kNotFound:
      return {404, "invalid_request_error", status.message(), {}, {}};
    case StatusCode::kResourceExhausted:
      return {429, "rate_limit_error", status.message(), {}, "rate_limit_exceeded"};
    case StatusCode::kUnavailable:
      return {503, "server_error", status.message(), {}, {}};
    case StatusCode::kDeadlineExceeded:
      return {504, "server_error", status.message(), {}, {}};
    default:
      return {500, "server_error", status.message(), {}, {}};
  }
}

ParseResult parseRequest(Endpoint endpoint, std::string_view body) {
  // Nothing below throws by design (error_code overloads, checked accessors); this only turns an
  // allocation failure into an answer instead of a crash of the server thread.
  try {
    return parseChecked(endpoint, body);
  } catch (const std::bad_alloc&) {
    return ApiError{500, "server_error", "out of memory while parsing the request", {}, {}};
  } catch (const std::exception& e) {
    return invalidRequest(std::string("The request could not be parsed: ") + e.what());
  }
}

}  // namespace kvferry::openai
