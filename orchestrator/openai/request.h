// The OpenAI API's request side: parsing and validating the JSON bodies of POST /v1/completions
// and POST /v1/chat/completions, and OpenAI-shaped error bodies. A pure library: no sockets, no
// clocks; any thread may call any function concurrently.
//
// Validation follows the OpenAI API reference (defaults temperature 1, top_p 1; completions
// max_tokens 16), with vLLM's sampling extensions (ignore_eos, min_tokens, stop_token_ids,
// skip_special_tokens, repetition_penalty) and null counting as absent. Nothing is silently
// ignored: a field we know but cannot honour (n > 1, tools, a non-text response_format, …) is a
// 400 saying it is not supported, an unknown field is a 400 naming it, and the few fields
// accepted without effect are the documented no-ops of docs/api.md (user, store: false, …).
// Every failure names the offending field in `param`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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
  std::string max_tokens_field;   // the field that set max_tokens; "" for the default
  float temperature = 1.0f;       // [0, 2]; 0 means greedy
  float top_p = 1.0f;             // (0, 1]
  std::optional<uint64_t> seed;   // a negative JSON seed keeps its two's-complement bit pattern
  std::vector<std::string> stop;  // at most 4, none empty
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // kvferry extension (as vLLM's): non-streamed answers also carry choices[0].token_ids, the
  // generated token ids, so clients and tests can compare outputs token for token.
  bool return_token_ids = false;

  // The sampling extensions of vLLM and SGLang, and OpenAI's penalties, logit_bias and logprobs:
  // the agents apply them to each logits row before the pick (node_agent/engine/
  // logit_processor.h). Token ids are checked against the vocabulary by the caller.
  bool ignore_eos = false;              // the model's end-of-sequence tokens do not end the answer
  uint32_t min_tokens = 0;              // no stop token or stop string ends it before this many
  std::vector<int32_t> stop_token_ids;  // more tokens that end the answer ("stop"), not rendered
  bool skip_special_tokens = true;      // false: control tokens render as their text
  float repetition_penalty = 1.0f;      // (0, 2]; 1 is off; on prompt and answer tokens
  float presence_penalty = 0.0f;        // [-2, 2]; on answer tokens
  float frequency_penalty = 0.0f;       // [-2, 2]; on answer tokens, per occurrence
  std::vector<std::pair<int32_t, float>> logit_bias;  // token → [-100, 100], ascending tokens
  // nullopt: no logprobs. n: each answer token's log-probability and the n most likely ones
  // (chat: logprobs true with top_logprobs n; completions: logprobs n).
  std::optional<uint32_t> logprobs;
};

// Limits of the request fields (docs/api.md).
inline constexpr uint32_t kMaxTopLogprobs = 20;   // vLLM's default max_logprobs
inline constexpr size_t kMaxLogitBias = 1024;     // logit_bias entries
inline constexpr size_t kMaxStopTokenIds = 1024;  // stop_token_ids entries

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
// An error the HTTP layer answers before any handler runs, in OpenAI's shape:
// 404 "Invalid URL" (code unknown_url), 405 (method_not_allowed), 413 (request_too_large), 400
// malformed HTTP (invalid_request); invalid_request_error, or server_error for a 5xx.
ApiError httpError(int http_status, std::string message);
// A kvferry Status from the serving path as an API error: INVALID_ARGUMENT 400
// invalid_request_error, NOT_FOUND 404 invalid_request_error, RESOURCE_EXHAUSTED 429
// rate_limit_error, UNAVAILABLE 503 server_error, DEADLINE_EXCEEDED 504 server_error, anything
// else 500 server_error. The message is the status's message. Precondition: !status.isOk().
ApiError apiErrorFromStatus(const Status& status);

// Parses and validates a request body for `endpoint`. Never throws.
//  - The body must be valid UTF-8 (checked before JSON parsing; the message names the byte
//    offset) and one JSON object; a JSON error names the field it is in ('messages[0].content'),
//    a lone UTF-16 surrogate escape (\ud800 without its pair) included.
//  - Completions: `prompt` is a string or an array of exactly one string (token-id prompts and
//    several prompts are "not supported").
//  - Chat: `messages` is a non-empty array of {role, content}; content is a string or an array
//    of {"type":"text","text":…} parts (other part types are not supported); content may be
//    null or absent only for an assistant message (then "").
using ParseResult = std::variant<ApiRequest, ApiError>;
ParseResult parseRequest(Endpoint endpoint, std::string_view body);

}  // namespace kvferry::openai
