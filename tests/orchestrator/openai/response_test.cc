#include "orchestrator/openai/response.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <vector>

namespace kvferry::openai {
namespace {

namespace json = boost::json;

constexpr Endpoint kChat = Endpoint::kChatCompletions;
constexpr Endpoint kCompletions = Endpoint::kCompletions;

json::value parse(std::string_view text) {
  json::error_code ec;
  json::value value = json::parse(text, ec);
  EXPECT_FALSE(ec) << ec.message() << " in " << text;
  return value;
}

// The JSON of one SSE event, checking the framing.
json::value parseEvent(std::string_view event) {
  EXPECT_TRUE(event.starts_with("data: ")) << event;
  EXPECT_TRUE(event.ends_with("\n\n")) << event;
  if (!event.starts_with("data: ") || !event.ends_with("\n\n")) return {};
  const std::string_view body = event.substr(6, event.size() - 8);
  EXPECT_EQ(body.find('\n'), std::string_view::npos) << "one line per event";
  return parse(body);
}

std::vector<std::string> keys(const json::object& object) {
  std::vector<std::string> out;
  for (const auto& entry : object) out.emplace_back(entry.key());
  return out;
}

void expectUsage(const json::value& usage, uint64_t prompt, uint64_t completion, uint64_t cached) {
  ASSERT_TRUE(usage.is_object());
  EXPECT_EQ(usage.at("prompt_tokens"), prompt);
  EXPECT_EQ(usage.at("completion_tokens"), completion);
  EXPECT_EQ(usage.at("total_tokens"), prompt + completion);
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cached_tokens"), cached);
}

TEST(ResponseTest, RequestIds) {
  EXPECT_EQ(requestId(kChat, 0x1234abcd, 1), "chatcmpl-000000001234abcd0000000000000001");
  EXPECT_EQ(requestId(kCompletions, UINT64_MAX, 0), "cmpl-ffffffffffffffff0000000000000000");
}

TEST(ResponseTest, ChatCompletion) {
  const std::string text = "She said \"hi\"\n\tthen \xc3\xa9t\xc3\xa9 \xf0\x9f\x99\x82 <\\>";
  const json::value v = parse(
      completionResponse(kChat, "chatcmpl-1", 1700000000, "stories", text, "stop", Usage{5, 7, 3}));
  const json::object& o = v.as_object();
  EXPECT_EQ(keys(o), (std::vector<std::string>{"id", "object", "created", "model",
                                               "system_fingerprint", "choices", "usage"}));
  EXPECT_EQ(o.at("id"), "chatcmpl-1");
  EXPECT_EQ(o.at("object"), "chat.completion");
  EXPECT_EQ(o.at("created"), 1700000000);
  EXPECT_EQ(o.at("model"), "stories");
  EXPECT_EQ(o.at("system_fingerprint"), "kvferry");
  const json::array& choices = o.at("choices").as_array();
  ASSERT_EQ(choices.size(), 1u);
  const json::object& choice = choices[0].as_object();
  EXPECT_EQ(keys(choice),
            (std::vector<std::string>{"index", "message", "logprobs", "finish_reason"}));
  EXPECT_EQ(choice.at("index"), 0);
  EXPECT_EQ(choice.at("message").at("role"), "assistant");
  EXPECT_EQ(choice.at("message").at("content"), json::value(text));
  EXPECT_TRUE(choice.at("logprobs").is_null());
  EXPECT_EQ(choice.at("finish_reason"), "stop");
  expectUsage(o.at("usage"), 5, 7, 3);
}

TEST(ResponseTest, TextCompletion) {
  const json::value v = parse(completionResponse(kCompletions, "cmpl-2", 1, "m", " there was",
                                                 "length", Usage{4, 16, 0}, "fp_abc"));
  const json::object& o = v.as_object();
  EXPECT_EQ(o.at("object"), "text_completion");
  EXPECT_EQ(o.at("system_fingerprint"), "fp_abc");
  const json::object& choice = o.at("choices").at(0).as_object();
  EXPECT_EQ(keys(choice), (std::vector<std::string>{"index", "text", "logprobs", "finish_reason"}));
  EXPECT_EQ(choice.at("text"), " there was");
  EXPECT_EQ(choice.at("finish_reason"), "length");
  expectUsage(o.at("usage"), 4, 16, 0);
}

TEST(ResponseTest, ChatStream) {
  StreamContext ctx{kChat, "chatcmpl-9", 42, "m", /*include_usage=*/false};
  const json::value role = parseEvent(streamRoleChunk(ctx));
  EXPECT_EQ(role.at("object"), "chat.completion.chunk");
  EXPECT_EQ(role.at("id"), "chatcmpl-9");
  EXPECT_EQ(role.at("created"), 42);
  EXPECT_EQ(role.at("model"), "m");
  EXPECT_FALSE(role.as_object().contains("usage"));
  const json::object& role_choice = role.at("choices").at(0).as_object();
  EXPECT_EQ(keys(role_choice),
            (std::vector<std::string>{"index", "delta", "logprobs", "finish_reason"}));
  EXPECT_EQ(role_choice.at("delta").at("role"), "assistant");
  EXPECT_EQ(role_choice.at("delta").at("content"), "");
  EXPECT_TRUE(role_choice.at("finish_reason").is_null());

  const json::value text = parseEvent(streamTextChunk(ctx, "a\nb"));
  const json::object& delta = text.at("choices").at(0).at("delta").as_object();
  EXPECT_EQ(keys(delta), (std::vector<std::string>{"content"}));
  EXPECT_EQ(delta.at("content"), "a\nb");
  EXPECT_TRUE(text.at("choices").at(0).at("finish_reason").is_null());

  const json::value finish = parseEvent(streamFinishChunk(ctx, "length"));
  EXPECT_TRUE(finish.at("choices").at(0).at("delta").as_object().empty());
  EXPECT_EQ(finish.at("choices").at(0).at("finish_reason"), "length");

  EXPECT_EQ(sseDone(), "data: [DONE]\n\n");
}

TEST(ResponseTest, CompletionsStream) {
  StreamContext ctx{kCompletions, "cmpl-9", 42, "m", /*include_usage=*/false};
  const json::value text = parseEvent(streamTextChunk(ctx, " Once"));
  EXPECT_EQ(text.at("object"), "text_completion");
  const json::object& choice = text.at("choices").at(0).as_object();
  EXPECT_EQ(keys(choice), (std::vector<std::string>{"index", "text", "logprobs", "finish_reason"}));
  EXPECT_EQ(choice.at("text"), " Once");
  EXPECT_TRUE(choice.at("logprobs").is_null());
  EXPECT_TRUE(choice.at("finish_reason").is_null());

  const json::value finish = parseEvent(streamFinishChunk(ctx, "stop"));
  EXPECT_EQ(finish.at("choices").at(0).at("text"), "");
  EXPECT_EQ(finish.at("choices").at(0).at("finish_reason"), "stop");
}

TEST(ResponseTest, PreparedTextChunksAreTheBytesOfBuiltOnes) {
  // Texts that need escaping, and header strings that look like the text's key.
  const std::vector<std::string> texts = {
      "", " Once", "a\"b\\c", "line\nnext\t\x01", "你好 🙂", "\"text\":\"\""};
  for (Endpoint endpoint : {kChat, kCompletions}) {
    for (bool usage : {false, true}) {
      StreamContext built{endpoint, R"(id-"text":"")", 7, "m\"content\":\"\"", usage};
      built.system_fingerprint = "fp\\";
      StreamContext prepared = built;
      prepareTextChunks(prepared);
      ASSERT_FALSE(prepared.text_prefix.empty());
      for (const std::string& text : texts) {
        EXPECT_EQ(streamTextChunk(prepared, text), streamTextChunk(built, text)) << text;
      }
    }
  }
}

TEST(ResponseTest, IncludeUsage) {
  for (Endpoint endpoint : {kChat, kCompletions}) {
    StreamContext ctx{endpoint, "id", 1, "m", /*include_usage=*/true};
    std::vector<std::string> events = {streamTextChunk(ctx, "x"), streamFinishChunk(ctx, "stop")};
    if (endpoint == kChat) events.push_back(streamRoleChunk(ctx));
    for (const std::string& event : events) {
      const json::value v = parseEvent(event);
      ASSERT_TRUE(v.as_object().contains("usage")) << event;
      EXPECT_TRUE(v.at("usage").is_null()) << event;
    }
    const json::value usage = parseEvent(streamUsageChunk(ctx, Usage{10, 3, 8}));
    EXPECT_EQ(usage.at("object"), endpoint == kChat ? "chat.completion.chunk" : "text_completion");
    EXPECT_TRUE(usage.at("choices").as_array().empty());
    expectUsage(usage.at("usage"), 10, 3, 8);
  }
}

TEST(ResponseTest, StreamErrorEvent) {
  const json::value v = parseEvent(streamErrorEvent(ApiError{503, "server_error", "gone", {}, {}}));
  EXPECT_EQ(v.at("error").at("message"), "gone");
  EXPECT_EQ(v.at("error").at("type"), "server_error");
}

TEST(ResponseTest, Models) {
  const std::vector<ModelInfo> models = {{"stories260K", 1700000000}, {"tiny", 5, "someone"}};
  const json::value v = parse(modelsResponse(models));
  EXPECT_EQ(v.at("object"), "list");
  const json::array& data = v.at("data").as_array();
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(keys(data[0].as_object()),
            (std::vector<std::string>{"id", "object", "created", "owned_by"}));
  EXPECT_EQ(data[0].at("id"), "stories260K");
  EXPECT_EQ(data[0].at("object"), "model");
  EXPECT_EQ(data[0].at("created"), 1700000000);
  EXPECT_EQ(data[0].at("owned_by"), "kvferry");
  EXPECT_EQ(data[1].at("owned_by"), "someone");
  EXPECT_EQ(parse(modelsResponse({})).at("data").as_array().size(), 0u);
}

}  // namespace
}  // namespace kvferry::openai
