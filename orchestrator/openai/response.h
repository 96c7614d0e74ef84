// The OpenAI API's response side: JSON bodies for non-streamed completions, Server-Sent-Events
// chunks for streamed ones, the model list, and request ids. Shapes and key order follow the
// OpenAI API reference (chat.completion, chat.completion.chunk, text_completion, list/model).
// Pure functions of their arguments; any thread may call them. Text arguments must be valid
// UTF-8 (what IncrementalDetokenizer and StopMatcher produce); the JSON serializer escapes it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "orchestrator/openai/request.h"

namespace kvferry::openai {

// What the responses report in "system_fingerprint" unless the caller passes its own (for
// instance the cluster's model fingerprint).
inline constexpr std::string_view kSystemFingerprint = "kvferry";

struct Usage {
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t cached_tokens = 0;  // prompt tokens whose KV came from a prefix cache
};

// "chatcmpl-" for chat, "cmpl-" for completions, then the 128 bits in 32 hex digits. The
// orchestrator draws them from the OS's random source, apart from the control plane's request
// id, so an id a client sees tells nothing about another request's.
std::string requestId(Endpoint endpoint, uint64_t high, uint64_t low);

// One answer token's log-probability as the API reports it (the request asked for logprobs).
struct TokenLogprob {
  std::string token;  // its text (valid UTF-8; a control token's name, such as "</s>")
  std::string bytes;  // its raw bytes (chat: "bytes" as a list of integers)
  float logprob = 0;
  uint32_t text_offset = 0;       // completions: characters of the answer's text before it
  std::vector<TokenLogprob> top;  // the most likely tokens at that step (no nested `top`)
};
// The "logprobs" of a choice: chat {"content":[{"token","logprob","bytes","top_logprobs"}…]};
// completions {"tokens","token_logprobs","top_logprobs":[{text: logprob}…],"text_offset"}.
// A null pointer is JSON null (no logprobs asked for).
using Logprobs = std::vector<TokenLogprob>;

// A whole non-streamed response. `finish_reason` is "stop" or "length".
//  chat: {"id","object":"chat.completion","created","model","system_fingerprint",
//         "choices":[{"index":0,"message":{"role":"assistant","content":text},
//                     "logprobs":null,"finish_reason"}],
//         "usage":{"prompt_tokens","completion_tokens","total_tokens",
//                  "prompt_tokens_details":{"cached_tokens"}}}
//  completions: the same with "object":"text_completion" and choices
//         [{"index":0,"text":text,"logprobs":null,"finish_reason"}].
std::string completionResponse(Endpoint endpoint, std::string_view id, int64_t created,
                               std::string_view model, std::string_view text,
                               std::string_view finish_reason, const Usage& usage,
                               std::string_view system_fingerprint = kSystemFingerprint,
                               const Logprobs* logprobs = nullptr);

// What every chunk of one streamed response repeats.
struct StreamContext {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string id;
  int64_t created = 0;
  std::string model;
  bool include_usage = false;  // stream_options.include_usage: every chunk but the last carries
                               // "usage":null, and streamUsageChunk() sends the counts
  std::string system_fingerprint = std::string(kSystemFingerprint);
  // What every text chunk without logprobs has around its text, serialized once per stream by
  // prepareTextChunks() (empty: each chunk is built as a JSON object).
  std::string text_prefix = {};
  std::string text_suffix = {};
};

// Serializes into `ctx` what streamTextChunk() puts around a chunk's text, from the fields above
// (call it again after changing them): each chunk then costs the escaping of its text, not a JSON
// object of a dozen fields built and serialized per token, and its bytes are the same.
void prepareTextChunks(StreamContext& ctx);

// Each returns one complete SSE event, "data: {json}\n\n". The chunk objects are
// "chat.completion.chunk" (chat) or "text_completion" (completions), with id, created, model,
// system_fingerprint and one choice of index 0 with "logprobs":null.
//
// Order: [streamRoleChunk (chat only)], streamTextChunk…, streamFinishChunk,
// [streamUsageChunk when include_usage], sseDone().
// Chat only, first: delta {"role":"assistant","content":""}.
std::string streamRoleChunk(const StreamContext& ctx);
// Chat: delta {"content":text}; completions: "text":text. finish_reason null. `logprobs`: those
// of the tokens whose text this chunk carries.
std::string streamTextChunk(const StreamContext& ctx, std::string_view text,
                            const Logprobs* logprobs = nullptr);
// The same appended to `out` (no string of its own: a streamed answer's tokens go into one buffer).
void appendStreamTextChunk(const StreamContext& ctx, std::string_view text,
                           const Logprobs* logprobs, std::string& out);
// Chat: delta {}; completions: "text":"". With finish_reason ("stop" / "length"), and the
// logprobs of tokens no earlier chunk carried.
std::string streamFinishChunk(const StreamContext& ctx, std::string_view finish_reason,
                              const Logprobs* logprobs = nullptr);
// "choices":[] and the usage object; send it only when ctx.include_usage.
std::string streamUsageChunk(const StreamContext& ctx, const Usage& usage);
// "data: [DONE]\n\n".
std::string_view sseDone();
// An error in the middle of a stream, as OpenAI and vLLM send it: "data: {errorJson}\n\n";
// with `usage`, the event also carries "usage" (what the answer used before it broke).
std::string streamErrorEvent(const ApiError& error, const Usage* usage = nullptr);

// GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}]}.
struct ModelInfo {
  std::string id;
  int64_t created = 0;  // Unix seconds
  std::string owned_by = "kvferry";
};
std::string modelsResponse(std::span<const ModelInfo> models);
// GET /v1/models/{id}: {"id","object":"model","created","owned_by"}.
std::string modelResponse(const ModelInfo& model);

}  // namespace kvferry::openai
