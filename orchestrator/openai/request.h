// The OpenAI API's request side: parsing and validating the JSON bodies of POST /v1/completions
// and POST /v1/chat/completions, and OpenAI-shaped error bodies. A pure library: no sockets, no
// clocks; any thread may call any function concurrently.
//
// Validation follows the OpenAI API reference (defaults temperature 1, top_p 1; completions
// max_tokens 16) and vLLM's leniency where OpenAI is silent: unknown fields are ignored, a field
// whose value is JSON null counts as absent. A field we know but cannot honour (logprobs, n > 1,
// tools, a non-text response_format, penalties, …) is a 400 saying it is not supported, never
// silently ignored. Every failure names the offending field in `param`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace kvferry::openai {

enum class Endpoint { kCompletions, kChatCompletions };

// "/v1/completions" or "/v1/chat/completions".
std::string_view endpointPath(Endpoint endpoint);

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant" ("developer" is stored as "system")
  std::string content;  // text parts of an array content are concatenated
  // Tool use, as chat templates read it (ChatTemplate renders them; the API does not accept them
  // yet): an assistant's tool_calls as a JSON array, a tool message's call id and function name.
  // Empty when absent.
  std::string tool_calls_json{};
  std::string tool_call_id{};
  std::string name{};
};

struct ApiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  std::string prompt;                 // completions only
  std::vector<ChatMessage> messages;  // chat only, never empty
  // Completions: 16 when the body has none (OpenAI's default). Chat: nullopt means "until the
  // context ends"; `max_completion_tokens` wins over the older `max_tokens` when both are given.
  std::optional<uint32_t> max_tokens;
  float temperature = 1.0f;       // [0, 2]; 0 means greedy
  float top_p = 1.0f;             // (0, 1]
  std::optional<uint64_t> seed;   // a negative JSON seed keeps its two's-complement bit pattern
  std::vector<std::string> stop;  // at most 4, none empty
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // kvferry extension (as vLLM's): non-streamed answers also carry choices[0].token_ids, the
  // generated token ids, so clients and tests can compare outputs token for token.
  bool return_token_ids = false;
};

// An error as the API returns it. `param` and `code` may be empty (serialized as null).
struct ApiError {
  int http_status = 400;
  std::string type;  // "invalid_request_error", "rate_limit_error", "server_error"
  std::string message;
  std::string param;
  std::string code;
};

// {"error":{"message":…,"type":…,"param":…|null,"code":…|null}}, OpenAI's shape and key order.
std::string errorJson(const ApiError& error);

// 400 invalid_request_error about `param`.
ApiError invalidRequest(std::string message, std::string param = {});
// 404 as OpenAI answers an unknown model: type invalid_request_error, param "model", code
// "model_not_found", "The model `x` does not exist or you do not have access to it."
ApiError modelNotFound(std::string_view model);
// A kvferry Status from the serving path as an API error: INVALID_ARGUMENT 400
// invalid_request_error, NOT_FOUND 404 invalid_request_error, RESOURCE_EXHAUSTED 429
// rate_limit_error, UNAVAILABLE 503 server_error, DEADLINE_EXCEEDED 504 server_error, anything
// else 500 server_error. The message is the status's message. Precondition: !status.isOk().
ApiError apiErrorFromStatus(const Status& status);

// Parses and validates a request body for `endpoint`. Never throws.
//  - The body must be valid UTF-8 (checked before JSON parsing; the message names the byte
//    offset) and one JSON object.
//  - Completions: `prompt` is a string or an array of exactly one string (token-id prompts and
//    several prompts are "not supported").
//  - Chat: `messages` is a non-empty array of {role, content}; content is a string or an array
//    of {"type":"text","text":…} parts (other part types are not supported); content may be
//    null or absent only for an assistant message (then "").
using ParseResult = std::variant<ApiRequest, ApiError>;
ParseResult parseRequest(Endpoint endpoint, std::string_view body);

}  // namespace kvferry::openai
