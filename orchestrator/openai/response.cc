#include "orchestrator/openai/response.h"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/serializer.hpp>
#include <boost/json/value.hpp>
#include <utility>

namespace kvferry::openai {
namespace {

namespace json = boost::json;

bool isChat(Endpoint endpoint) { return endpoint == Endpoint::kChatCompletions; }

json::string_view view(std::string_view text) { return {text.data(), text.size()}; }

json::object modelObject(const ModelInfo& info) {
  return {
      {"id", info.id}, {"object", "model"}, {"created", info.created}, {"owned_by", info.owned_by}};
}

json::object usageObject(const Usage& usage) {
  json::object out;
  out["prompt_tokens"] = usage.prompt_tokens;
  out["completion_tokens"] = usage.completion_tokens;
  out["total_tokens"] = uint64_t{usage.prompt_tokens} + usage.completion_tokens;
  json::object details;
  details["cached_tokens"] = usage.cached_tokens;
  out["prompt_tokens_details"] = std::move(details);
  return out;
}

json::object header(std::string_view id, std::string_view object, int64_t created,
                    std::string_view model, std::string_view fingerprint) {
  json::object out;
  out["id"] = view(id);
  out["object"] = view(object);
  out["created"] = created;
  out["model"] = view(model);
  out["system_fingerprint"] = view(fingerprint);
  return out;
}

json::value finishValue(std::string_view finish_reason) {
  return finish_reason.empty() ? json::value(nullptr) : json::value(view(finish_reason));
}

std::string event(const json::object& chunk) { return "data: " + json::serialize(chunk) + "\n\n"; }

json::array bytesOf(std::string_view bytes) {
  json::array out;
  for (char c : bytes) out.push_back(static_cast<uint8_t>(c));
  return out;
}

json::value logprobsValue(Endpoint endpoint, const Logprobs* logprobs) {
  if (logprobs == nullptr) return nullptr;
  if (isChat(endpoint)) {
    json::array content;
    for (const TokenLogprob& entry : *logprobs) {
      json::object item;
      item["token"] = entry.token;
      item["logprob"] = entry.logprob;
      item["bytes"] = bytesOf(entry.bytes);
      json::array top;
      for (const TokenLogprob& alternative : entry.top) {
        top.push_back(json::object{{"token", alternative.token},
                                   {"logprob", alternative.logprob},
                                   {"bytes", bytesOf(alternative.bytes)}});
      }
      item["top_logprobs"] = std::move(top);
      content.push_back(std::move(item));
    }
    return json::object{{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json::array tokens, token_logprobs, top_logprobs, text_offset;
  for (const TokenLogprob& entry : *logprobs) {
    tokens.push_back(json::string(entry.token));
    token_logprobs.push_back(entry.logprob);
    json::object top;
    for (const TokenLogprob& alternative : entry.top) top[alternative.token] = alternative.logprob;
    top_logprobs.push_back(std::move(top));
    text_offset.push_back(entry.text_offset);
  }
  return json::object{{"tokens", std::move(tokens)},
                      {"token_logprobs", std::move(token_logprobs)},
                      {"top_logprobs", std::move(top_logprobs)},
                      {"text_offset", std::move(text_offset)}};
}

// `choices` of an answer with one choice: `choice` (index and content set) completed with the
// fields every choice ends with.
json::array onlyChoice(json::object choice, std::string_view finish_reason,
                       json::value logprobs = nullptr) {
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finishValue(finish_reason);
  json::array choices;
  choices.push_back(std::move(choice));
  return choices;
}

// One streamed chunk with a single choice. `delta` is the chat delta; `text` the completions text.
std::string streamChunk(const StreamContext& ctx, json::object delta, std::string_view text,
                        std::string_view finish_reason, const Logprobs* logprobs) {
  const bool chat = isChat(ctx.endpoint);
  json::object chunk = header(ctx.id, chat ? "chat.completion.chunk" : "text_completion",
                              ctx.created, ctx.model, ctx.system_fingerprint);
  json::object choice;
  choice["index"] = 0;
  if (chat) {
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = view(text);
  }
  chunk["choices"] =
      onlyChoice(std::move(choice), finish_reason, logprobsValue(ctx.endpoint, logprobs));
  if (ctx.include_usage) chunk["usage"] = nullptr;
  return event(chunk);
}

}  // namespace

std::string requestId(Endpoint endpoint, uint64_t high, uint64_t low) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out = isChat(endpoint) ? "chatcmpl-" : "cmpl-";
  for (uint64_t value : {high, low}) {
    for (int shift = 60; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 15];
  }
  return out;
}

std::string completionResponse(Endpoint endpoint, std::string_view id, int64_t created,
                               std::string_view model, std::string_view text,
                               std::string_view finish_reason, const Usage& usage,
                               std::string_view system_fingerprint, const Logprobs* logprobs) {
  const bool chat = isChat(endpoint);
  json::object out =
      header(id, chat ? "chat.completion" : "text_completion", created, model, system_fingerprint);
  json::object choice;
  choice["index"] = 0;
  if (chat) {
    json::object message;
    message["role"] = "assistant";
    message["content"] = view(text);
    choice["message"] = std::move(message);
  } else {
    choice["text"] = view(text);
  }
  out["choices"] = onlyChoice(std::move(choice), finish_reason, logprobsValue(endpoint, logprobs));
  out["usage"] = usageObject(usage);
  return json::serialize(out);
}

std::string streamRoleChunk(const StreamContext& ctx) {
  json::object delta;
  delta["role"] = "assistant";
  delta["content"] = "";
  return streamChunk(ctx, std::move(delta), "", "", nullptr);
}

void prepareTextChunks(StreamContext& ctx) {
  // What streamChunk() builds as a JSON object for a text chunk without logprobs, in its key
  // order, written out once (the unit test holds the two to the same bytes).
  const bool chat = isChat(ctx.endpoint);
  std::string& prefix = ctx.text_prefix;
  prefix = R"(data: {"id":)" + json::serialize(view(ctx.id));
  prefix += chat ? R"(,"object":"chat.completion.chunk")" : R"(,"object":"text_completion")";
  prefix += R"(,"created":)" + std::to_string(ctx.created);
  prefix += R"(,"model":)" + json::serialize(view(ctx.model));
  prefix += R"(,"system_fingerprint":)" + json::serialize(view(ctx.system_fingerprint));
  prefix +=
      chat ? R"(,"choices":[{"index":0,"delta":{"content":)" : R"(,"choices":[{"index":0,"text":)";
  ctx.text_suffix = chat ? R"(},"logprobs":null,"finish_reason":null}])"
                         : R"(,"logprobs":null,"finish_reason":null}])";
  if (ctx.include_usage) ctx.text_suffix += R"(,"usage":null)";
  ctx.text_suffix += "}\n\n";
}

std::string streamTextChunk(const StreamContext& ctx, std::string_view text,
                            const Logprobs* logprobs) {
  std::string out;
  appendStreamTextChunk(ctx, text, logprobs, out);
  return out;
}

void appendStreamTextChunk(const StreamContext& ctx, std::string_view text,
                           const Logprobs* logprobs, std::string& out) {
  if (logprobs == nullptr && !ctx.text_prefix.empty()) {
    out += ctx.text_prefix;
    json::serializer quoted;  // `text` as a JSON string, escaped straight into `out`
    quoted.reset(view(text));
    char piece[256];
    while (!quoted.done()) {
      const json::string_view part = quoted.read(piece, sizeof(piece));
      out.append(part.data(), part.size());
    }
    out += ctx.text_suffix;
    return;
  }
  json::object delta;
  delta["content"] = view(text);
  out += streamChunk(ctx, std::move(delta), text, "", logprobs);
}

std::string streamFinishChunk(const StreamContext& ctx, std::string_view finish_reason,
                              const Logprobs* logprobs) {
  return streamChunk(ctx, json::object(), "", finish_reason, logprobs);
}

std::string streamUsageChunk(const StreamContext& ctx, const Usage& usage) {
  json::object chunk =
      header(ctx.id, isChat(ctx.endpoint) ? "chat.completion.chunk" : "text_completion",
             ctx.created, ctx.model, ctx.system_fingerprint);
  chunk["choices"] = json::array();
  chunk["usage"] = usageObject(usage);
  return event(chunk);
}

std::string_view sseDone() { return "data: [DONE]\n\n"; }

std::string streamErrorEvent(const ApiError& error, const Usage* usage) {
  if (usage == nullptr) return "data: " + errorJson(error) + "\n\n";
  json::value event = json::parse(errorJson(error));
  event.as_object()["usage"] = usageObject(*usage);
  return "data: " + json::serialize(event) + "\n\n";
}

std::string modelsResponse(std::span<const ModelInfo> models) {
  json::array data;
  for (const ModelInfo& info : models) data.push_back(modelObject(info));
  json::object out;
  out["object"] = "list";
  out["data"] = std::move(data);
  return json::serialize(out);
}

std::string modelResponse(const ModelInfo& model) { return json::serialize(modelObject(model)); }

}  // namespace kvferry::openai
