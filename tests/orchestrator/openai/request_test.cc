#include "orchestrator/openai/request.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvferry::openai {
namespace {

namespace json = boost::json;

constexpr Endpoint kChat = Endpoint::kChatCompletions;
constexpr Endpoint kCompletions = Endpoint::kCompletions;

ApiRequest parseOk(Endpoint endpoint, std::string_view body) {
  ParseResult result = parseRequest(endpoint, body);
  if (const ApiError* error = std::get_if<ApiError>(&result)) {
    ADD_FAILURE() << "body " << body << " was refused: " << error->message;
    return {};
  }
  return std::get<ApiRequest>(std::move(result));
}

ApiError parseError(Endpoint endpoint, std::string_view body) {
  ParseResult result = parseRequest(endpoint, body);
  if (!std::holds_alternative<ApiError>(result)) {
    ADD_FAILURE() << "body " << body << " was accepted";
    return {};
  }
  ApiError error = std::get<ApiError>(std::move(result));
  EXPECT_EQ(error.http_status, 400) << error.message;
  EXPECT_EQ(error.type, "invalid_request_error") << error.message;
  return error;
}

// A chat body with one user message and `extra` fields appended.
std::string chat(std::string_view extra = "") {
  std::string body = R"({"model":"m","messages":[{"role":"user","content":"hi"}])";
  if (!extra.empty()) body += std::string(",") + std::string(extra);
  return body + "}";
}
std::string completion(std::string_view extra = "") {
  std::string body = R"({"model":"m","prompt":"hi")";
  if (!extra.empty()) body += std::string(",") + std::string(extra);
  return body + "}";
}

// Expects a 400 about `param` whose message contains `fragment`.
void expectError(Endpoint endpoint, std::string_view body, std::string_view param,
                 std::string_view fragment) {
  const ApiError error = parseError(endpoint, body);
  EXPECT_EQ(error.param, param) << body;
  EXPECT_NE(error.message.find(fragment), std::string::npos)
      << "message '" << error.message << "' lacks '" << fragment << "' for " << body;
}

TEST(ParseRequestTest, CompletionsDefaults) {
  const ApiRequest r = parseOk(kCompletions, completion());
  EXPECT_EQ(r.endpoint, kCompletions);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_TRUE(r.messages.empty());
  ASSERT_TRUE(r.max_tokens.has_value());
  EXPECT_EQ(*r.max_tokens, 16u);  // OpenAI's default for completions
  EXPECT_EQ(r.temperature, 1.0f);
  EXPECT_EQ(r.top_p, 1.0f);
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
}

TEST(ParseRequestTest, ChatDefaults) {
  const ApiRequest r = parseOk(kChat, chat());
  EXPECT_EQ(r.endpoint, kChat);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, "user");
  EXPECT_EQ(r.messages[0].content, "hi");
  EXPECT_FALSE(r.max_tokens.has_value());  // until the context ends
  EXPECT_EQ(r.temperature, 1.0f);
  EXPECT_EQ(r.top_p, 1.0f);
}

TEST(ParseRequestTest, EverySupportedFieldIsRead) {
  const ApiRequest r = parseOk(
      kChat, chat(R"("max_tokens":7,"temperature":0.5,"top_p":0.25,"seed":42,"stop":["a","b"],)"
                  R"("n":1,"stream":true,"stream_options":{"include_usage":true},)"
                  R"("logprobs":false,"top_logprobs":0,"tools":[],"tool_choice":"none",)"
                  R"("response_format":{"type":"text"},"logit_bias":{},"presence_penalty":0,)"
                  R"("frequency_penalty":0.0,"user":"u1")"));
  EXPECT_EQ(r.max_tokens, 7u);
  EXPECT_FLOAT_EQ(r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.top_p, 0.25f);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ParseRequestTest, NullMeansAbsent) {
  const ApiRequest r = parseOk(
      kCompletions, completion(R"("max_tokens":null,"temperature":null,"top_p":null,"seed":null,)"
                               R"("stop":null,"n":null,"stream":null,"stream_options":null,)"
                               R"("logprobs":null,"echo":null,"best_of":null,"suffix":null,)"
                               R"("ignore_eos":null,"min_tokens":null,"logit_bias":null)"));
  EXPECT_EQ(r.max_tokens, 16u);
  EXPECT_EQ(r.temperature, 1.0f);
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.logprobs.has_value());
}

TEST(ParseRequestTest, UnknownFieldsAreRefusedByName) {
  for (std::string_view field : {R"("future_field":{"x":[1,2]})", R"("future_field":null)"}) {
    const ApiError error = parseError(kCompletions, completion(field));
    EXPECT_EQ(error.param, "future_field");
    EXPECT_EQ(error.code, "unknown_parameter");
    EXPECT_NE(error.message.find("Unrecognized request argument supplied: 'future_field'"),
              std::string::npos)
        << error.message;
  }
  // A field of the other endpoint is unknown here.
  expectError(kCompletions, completion(R"("messages":[])"), "messages", "Unrecognized");
  expectError(kChat, chat(R"("prompt":"x")"), "prompt", "Unrecognized");
}

TEST(ParseRequestTest, DocumentedNoOpsAreAcceptedInTheirNeutralValueOnly) {
  parseOk(kChat, chat(R"("user":"u1","parallel_tool_calls":true,"store":false,)"
                      R"("metadata":{"k":"v"},"service_tier":"auto","top_k":-1,"min_p":0)"));
  parseOk(kCompletions, completion(R"("user":"u1","top_k":0,"min_p":0.0)"));
  expectError(kChat, chat(R"("store":true)"), "store", "not supported");
  expectError(kChat, chat(R"("service_tier":"flex")"), "service_tier", "not supported");
  expectError(kChat, chat(R"("top_k":40)"), "top_k", "not supported");
  expectError(kChat, chat(R"("min_p":0.05)"), "min_p", "not supported");
  expectError(kChat, chat(R"("user":7)"), "user", "expected a string");
}

TEST(ParseRequestTest, SamplingExtensions) {
  const ApiRequest r = parseOk(
      kCompletions,
      completion(
          R"("ignore_eos":true,"min_tokens":3,"stop_token_ids":[7,2],)"
          R"("skip_special_tokens":false,"repetition_penalty":1.3,)"
          R"("presence_penalty":0.5,"frequency_penalty":-1,"logit_bias":{"5":-100,"3":2.5})"));
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.min_tokens, 3u);
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{7, 2}));
  EXPECT_FALSE(r.skip_special_tokens);
  EXPECT_FLOAT_EQ(r.repetition_penalty, 1.3f);
  EXPECT_FLOAT_EQ(r.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.frequency_penalty, -1.0f);
  using Bias = std::vector<std::pair<int32_t, float>>;
  EXPECT_EQ(r.logit_bias, (Bias{{3, 2.5f}, {5, -100.0f}}));  // ascending token ids

  const ApiRequest defaults = parseOk(kChat, chat());
  EXPECT_FALSE(defaults.ignore_eos);
  EXPECT_EQ(defaults.min_tokens, 0u);
  EXPECT_TRUE(defaults.stop_token_ids.empty());
  EXPECT_TRUE(defaults.skip_special_tokens);
  EXPECT_EQ(defaults.repetition_penalty, 1.0f);
  EXPECT_TRUE(defaults.logit_bias.empty());

  expectError(kChat, chat(R"("ignore_eos":1)"), "ignore_eos", "expected a boolean");
  expectError(kChat, chat(R"("min_tokens":-1)"), "min_tokens", "between 0 and");
  expectError(kChat, chat(R"("min_tokens":1.5)"), "min_tokens", "expected an integer");
  expectError(kChat, chat(R"("stop_token_ids":3)"), "stop_token_ids", "expected an array");
  expectError(kChat, chat(R"("stop_token_ids":[1,"2"])"), "stop_token_ids[1]",
              "expected an integer");
  expectError(kChat, chat(R"("stop_token_ids":[-4])"), "stop_token_ids[0]", "not a token id");
  expectError(kChat, chat(R"("repetition_penalty":0)"), "repetition_penalty", "not in (0, 2]");
  expectError(kChat, chat(R"("repetition_penalty":2.5)"), "repetition_penalty", "not in (0, 2]");
  expectError(kChat, chat(R"("frequency_penalty":3)"), "frequency_penalty", "not between -2 and 2");
  expectError(kChat, chat(R"("presence_penalty":-2.5)"), "presence_penalty",
              "not between -2 and 2");
  expectError(kChat, chat(R"("logit_bias":{"x1":2})"), "logit_bias", "'x1' is not a token id");
  expectError(kChat, chat(R"("logit_bias":{"12":101})"), "logit_bias.12",
              "not between -100 and 100");
  expectError(kChat, chat(R"("logit_bias":{"12":"up"})"), "logit_bias.12", "expected a number");
  expectError(kChat, chat(R"("logit_bias":[1])"), "logit_bias", "expected an object");
}

TEST(ParseRequestTest, Logprobs) {
  EXPECT_FALSE(parseOk(kChat, chat(R"("logprobs":false)")).logprobs.has_value());
  EXPECT_EQ(parseOk(kChat, chat(R"("logprobs":true)")).logprobs, 0u);
  EXPECT_EQ(parseOk(kChat, chat(R"("logprobs":true,"top_logprobs":5)")).logprobs, 5u);
  EXPECT_EQ(parseOk(kChat, chat(R"("logprobs":true,"top_logprobs":20)")).logprobs, 20u);
  EXPECT_FALSE(parseOk(kChat, chat(R"("top_logprobs":0)")).logprobs.has_value());
  expectError(kChat, chat(R"("top_logprobs":3)"), "top_logprobs", "requires 'logprobs'");
  expectError(kChat, chat(R"("logprobs":true,"top_logprobs":21)"), "top_logprobs",
              "not between 0 and 20");
  expectError(kChat, chat(R"("logprobs":2)"), "logprobs", "expected a boolean");

  // Completions: logprobs is the count.
  EXPECT_EQ(parseOk(kCompletions, completion(R"("logprobs":0)")).logprobs, 0u);
  EXPECT_EQ(parseOk(kCompletions, completion(R"("logprobs":3)")).logprobs, 3u);
  expectError(kCompletions, completion(R"("logprobs":true)"), "logprobs", "expected an integer");
  expectError(kCompletions, completion(R"("logprobs":-1)"), "logprobs", "not between 0 and 20");
  // Completions have no top_logprobs.
  expectError(kCompletions, completion(R"("logprobs":1,"top_logprobs":1)"), "top_logprobs",
              "Unrecognized");
}

TEST(ParseRequestTest, BodyMustBeValidUtf8) {
  const std::string body = std::string(R"({"model":"m","prompt":"ab)") + "\xff" + R"("})";
  const ApiError error = parseError(kCompletions, body);
  EXPECT_NE(error.message.find("invalid UTF-8"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("byte offset 25"), std::string::npos) << error.message;
  // A truncated sequence is also caught before JSON parsing.
  expectError(kChat, "{\"model\":\"\xe2\x82\"}", "", "invalid UTF-8");
}

TEST(ParseRequestTest, MalformedJsonNamesTheProblemAndOffset) {
  const ApiError error = parseError(kChat, R"({"model": "m", "messages": [})");
  EXPECT_NE(error.message.find("not valid JSON"), std::string::npos) << error.message;
  EXPECT_NE(error.message.find("byte offset 28"), std::string::npos) << error.message;
  expectError(kChat, R"({"model":)", "", "not valid JSON");
  expectError(kChat, "", "", "not valid JSON");
  expectError(kChat, R"({"model":"m"} {})", "", "byte offset");
  // Nesting deeper than the parser's limit is an error, not a crash.
  expectError(kChat, std::string(100000, '['), "", "not valid JSON");
  // The field the parser stopped in.
  expectError(kChat, R"({"model":"m","messages":[{"role":"user","content":tru}]})", "",
              "(in 'messages[0].content')");
}

TEST(ParseRequestTest, ALoneSurrogateNamesItsField) {
  ApiError error =
      parseError(kChat, R"({"model":"m","messages":[{"role":"user","content":"a\ud800b"}]})");
  EXPECT_EQ(error.param, "messages[0].content");
  EXPECT_NE(error.message.find("'messages[0].content' holds a lone UTF-16 surrogate (\\ud800"),
            std::string::npos)
      << error.message;
  expectError(kCompletions, R"({"model":"m","prompt":"\udc00"})", "prompt", "lone UTF-16");
  expectError(kCompletions, R"({"model":"m","stop":["ok","\ud83d\u0041"],"prompt":"x"})", "stop[1]",
              "lone UTF-16");
  // A proper pair is a character.
  EXPECT_EQ(parseOk(kCompletions, R"({"model":"m","prompt":"\ud83d\ude00"})").prompt,
            "\xf0\x9f\x98\x80");
}

TEST(ParseRequestTest, TopLevelMustBeAnObject) {
  expectError(kChat, "[1,2]", "", "must be a JSON object, but got an array");
  expectError(kChat, "\"x\"", "", "but got a string");
  expectError(kChat, "null", "", "but got null");
}

TEST(ParseRequestTest, ModelIsARequiredString) {
  expectError(kChat, R"({"messages":[{"role":"user","content":"hi"}]})", "model",
              "you must provide a model");
  expectError(kCompletions, R"({"model":null,"prompt":"x"})", "model", "you must provide a model");
  expectError(kCompletions, R"({"model":3,"prompt":"x"})", "model",
              "Invalid type for 'model': expected a string, but got an integer instead.");
}

TEST(ParseRequestTest, CompletionsPrompt) {
  EXPECT_EQ(parseOk(kCompletions, R"({"model":"m","prompt":["only one"]})").prompt, "only one");
  EXPECT_EQ(parseOk(kCompletions, R"({"model":"m","prompt":""})").prompt, "");
  expectError(kCompletions, R"({"model":"m"})", "prompt", "you must provide a prompt");
  expectError(kCompletions, R"({"model":"m","prompt":[1,2,3]})", "prompt", "not supported");
  expectError(kCompletions, R"({"model":"m","prompt":[[1,2]]})", "prompt", "not supported");
  expectError(kCompletions, R"({"model":"m","prompt":["a","b"]})", "prompt",
              "More than one prompt per request (got 2) is not supported");
  expectError(kCompletions, R"({"model":"m","prompt":[]})", "prompt", "empty array");
  expectError(kCompletions, R"({"model":"m","prompt":{"a":1}})", "prompt",
              "expected a string, but got an object");
  // The chat endpoint does not look at prompt.
  expectError(kChat, R"({"model":"m","prompt":"x"})", "messages", "you must provide a messages");
}

TEST(ParseRequestTest, ChatMessagesRolesAndContent) {
  const ApiRequest r = parseOk(kChat, R"({"model":"m","messages":[
      {"role":"developer","content":"be brief"},
      {"role":"system","content":"s"},
      {"role":"user","content":[{"type":"text","text":"Once "},{"type":"text","text":"upon"}],
       "name":"alice"},
      {"role":"assistant","content":null},
      {"role":"assistant"},
      {"role":"user","content":[]}]})");
  ASSERT_EQ(r.messages.size(), 6u);
  EXPECT_EQ(r.messages[0].role, "system");  // developer is the new name of system
  EXPECT_EQ(r.messages[0].content, "be brief");
  EXPECT_EQ(r.messages[1].role, "system");
  EXPECT_EQ(r.messages[2].role, "user");
  EXPECT_EQ(r.messages[2].content, "Once upon");
  EXPECT_EQ(r.messages[3].role, "assistant");
  EXPECT_EQ(r.messages[3].content, "");
  EXPECT_EQ(r.messages[4].content, "");
  EXPECT_EQ(r.messages[5].content, "");
}

TEST(ParseRequestTest, ChatMessagesErrors) {
  const auto body = [](std::string_view messages) {
    return std::string(R"({"model":"m","messages":)") + std::string(messages) + "}";
  };
  expectError(kChat, body("[]"), "messages", "at least one message");
  expectError(kChat, body(R"("hi")"), "messages", "expected an array, but got a string");
  expectError(kChat, body("[1]"), "messages[0]", "expected an object, but got an integer");
  expectError(kChat, body(R"([{"content":"x"}])"), "messages[0].role", "Missing required");
  expectError(kChat, body(R"([{"role":1,"content":"x"}])"), "messages[0].role",
              "expected a string");
  expectError(kChat, body(R"([{"role":"user","content":"a"},{"role":"robot","content":"x"}])"),
              "messages[1].role", "Invalid value for 'messages[1].role': 'robot'");
  expectError(kChat, body(R"([{"role":"tool","content":"x","tool_call_id":"1"}])"),
              "messages[0].role", "not supported");
  expectError(kChat, body(R"([{"role":"user"}])"), "messages[0].content", "Missing required");
  expectError(kChat, body(R"([{"role":"system","content":null}])"), "messages[0].content",
              "Missing required");
  expectError(kChat, body(R"([{"role":"user","content":5}])"), "messages[0].content",
              "expected a string or an array of content parts, but got an integer");
  expectError(kChat,
              body(R"([{"role":"user","content":[{"type":"text","text":"a"},)"
                   R"({"type":"image_url","image_url":{"url":"http://x"}}]}])"),
              "messages[0].content[1].type", "Content of type 'image_url'");
  expectError(kChat, body(R"([{"role":"user","content":["a"]}])"), "messages[0].content[0]",
              "expected an object");
  expectError(kChat, body(R"([{"role":"user","content":[{"text":"a"}]}])"),
              "messages[0].content[0].type", "Missing required");
  expectError(kChat, body(R"([{"role":"user","content":[{"type":"text"}]}])"),
              "messages[0].content[0].text", "Missing required");
  expectError(kChat, body(R"([{"role":"user","content":[{"type":"text","text":7}]}])"),
              "messages[0].content[0].text", "expected a string");
  expectError(kChat, body(R"([{"role":"assistant","content":null,"tool_calls":[{"id":"c1"}]}])"),
              "messages[0].tool_calls", "Tool calling is not supported");
}

TEST(ParseRequestTest, MaxTokens) {
  EXPECT_EQ(parseOk(kCompletions, completion(R"("max_tokens":1)")).max_tokens, 1u);
  EXPECT_EQ(parseOk(kCompletions, completion(R"("max_tokens":4294967295)")).max_tokens,
            4294967295u);
  EXPECT_EQ(parseOk(kChat, chat(R"("max_tokens":9)")).max_tokens, 9u);
  EXPECT_EQ(parseOk(kChat, chat(R"("max_completion_tokens":5)")).max_tokens, 5u);
  // The newer name wins.
  EXPECT_EQ(parseOk(kChat, chat(R"("max_tokens":9,"max_completion_tokens":5)")).max_tokens, 5u);
  EXPECT_EQ(parseOk(kChat, chat(R"("max_completion_tokens":5,"max_tokens":9)")).max_tokens, 5u);

  expectError(kCompletions, completion(R"("max_tokens":0)"), "max_tokens",
              "must be at least 1, got 0");
  expectError(kChat, chat(R"("max_tokens":-3)"), "max_tokens", "must be at least 1, got -3");
  expectError(kChat, chat(R"("max_completion_tokens":0)"), "max_completion_tokens", "at least 1");
  expectError(kChat, chat(R"("max_tokens":"10")"), "max_tokens",
              "Invalid type for 'max_tokens': expected an integer, but got a string instead.");
  expectError(kChat, chat(R"("max_tokens":1.5)"), "max_tokens",
              "expected an integer, but got a decimal");
  expectError(kChat, chat(R"("max_tokens":true)"), "max_tokens", "but got a boolean");
  expectError(kChat, chat(R"("max_tokens":4294967296)"), "max_tokens", "too large");
  expectError(kChat, chat(R"("max_tokens":18446744073709551615)"), "max_tokens", "too large");
  // Completions' max_tokens is not renamed: the new name is not theirs.
  expectError(kCompletions, completion(R"("max_completion_tokens":5)"), "max_completion_tokens",
              "Unrecognized");
}

TEST(ParseRequestTest, Temperature) {
  EXPECT_EQ(parseOk(kChat, chat(R"("temperature":0)")).temperature, 0.0f);
  EXPECT_EQ(parseOk(kChat, chat(R"("temperature":2)")).temperature, 2.0f);
  EXPECT_FLOAT_EQ(parseOk(kChat, chat(R"("temperature":0.7)")).temperature, 0.7f);
  expectError(kChat, chat(R"("temperature":2.5)"), "temperature", "not between 0 and 2");
  expectError(kChat, chat(R"("temperature":-0.1)"), "temperature", "not between 0 and 2");
  expectError(kChat, chat(R"("temperature":"hot")"), "temperature",
              "expected a number, but got a string");
}

TEST(ParseRequestTest, TopP) {
  EXPECT_EQ(parseOk(kChat, chat(R"("top_p":1)")).top_p, 1.0f);
  EXPECT_FLOAT_EQ(parseOk(kChat, chat(R"("top_p":0.01)")).top_p, 0.01f);
  expectError(kChat, chat(R"("top_p":0)"), "top_p", "not in (0, 1]");
  expectError(kChat, chat(R"("top_p":1.01)"), "top_p", "not in (0, 1]");
  expectError(kChat, chat(R"("top_p":[1])"), "top_p", "expected a number, but got an array");
}

TEST(ParseRequestTest, Seed) {
  EXPECT_EQ(parseOk(kChat, chat(R"("seed":0)")).seed, 0u);
  EXPECT_EQ(parseOk(kChat, chat(R"("seed":-1)")).seed, UINT64_MAX);  // the bit pattern
  EXPECT_EQ(parseOk(kChat, chat(R"("seed":-9223372036854775808)")).seed, uint64_t{1} << 63);
  EXPECT_EQ(parseOk(kChat, chat(R"("seed":18446744073709551615)")).seed, UINT64_MAX);
  expectError(kChat, chat(R"("seed":1.5)"), "seed", "expected an integer, but got a decimal");
  expectError(kChat, chat(R"("seed":"7")"), "seed", "expected an integer");
}

TEST(ParseRequestTest, Stop) {
  EXPECT_EQ(parseOk(kChat, chat(R"("stop":"\n")")).stop, (std::vector<std::string>{"\n"}));
  EXPECT_TRUE(parseOk(kChat, chat(R"("stop":"")")).stop.empty());
  EXPECT_EQ(parseOk(kChat, chat(R"("stop":["a","","b","c"])")).stop,
            (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(parseOk(kChat, chat(R"("stop":[])")).stop.empty());
  expectError(kChat, chat(R"("stop":["a","b","c","d","e"])"), "stop",
              "at most 4 stop sequences are allowed, got 5");
  expectError(kChat, chat(R"("stop":["a",1])"), "stop[1]", "expected a string");
  expectError(kChat, chat(R"("stop":5)"), "stop", "expected a string or an array of strings");
}

TEST(ParseRequestTest, OnlyOneChoice) {
  parseOk(kChat, chat(R"("n":1)"));
  expectError(kChat, chat(R"("n":2)"), "n", "only n=1 is supported");
  expectError(kCompletions, completion(R"("n":0)"), "n", "only n=1 is supported");
  expectError(kChat, chat(R"("n":"1")"), "n", "expected an integer");
}

TEST(ParseRequestTest, StreamAndStreamOptions) {
  EXPECT_TRUE(parseOk(kCompletions, completion(R"("stream":true)")).stream);
  EXPECT_FALSE(parseOk(kChat, chat(R"("stream":true,"stream_options":{})")).include_usage);
  EXPECT_FALSE(parseOk(kChat, chat(R"("stream":true,"stream_options":{"include_usage":false})"))
                   .include_usage);
  EXPECT_TRUE(
      parseOk(kCompletions, completion(R"("stream":true,"stream_options":{"include_usage":true})"))
          .include_usage);
  expectError(kChat, chat(R"("stream":"yes")"), "stream", "expected a boolean");
  expectError(kChat, chat(R"("stream_options":{"include_usage":true})"), "stream_options",
              "only allowed when 'stream' is enabled");
  expectError(kChat, chat(R"("stream":false,"stream_options":{})"), "stream_options",
              "only allowed when 'stream' is enabled");
  expectError(kChat, chat(R"("stream":true,"stream_options":true)"), "stream_options",
              "expected an object");
  expectError(kChat, chat(R"("stream":true,"stream_options":{"include_usage":1})"),
              "stream_options.include_usage", "expected a boolean");
}

TEST(ParseRequestTest, UnsupportedFeaturesAreRefused) {
  expectError(kCompletions, completion(R"("echo":true)"), "echo", "not supported");
  parseOk(kCompletions, completion(R"("echo":false,"best_of":1,"suffix":"")"));
  expectError(kCompletions, completion(R"("best_of":3)"), "best_of", "not supported");
  expectError(kCompletions, completion(R"("best_of":"3")"), "best_of", "expected an integer");
  expectError(kCompletions, completion(R"("suffix":"end")"), "suffix", "not supported");
  expectError(kChat, chat(R"("tools":[{"type":"function","function":{"name":"f"}}])"), "tools",
              "not supported");
  expectError(kChat, chat(R"("functions":[{"name":"f"}])"), "functions", "not supported");
  expectError(kChat, chat(R"("tool_choice":"required")"), "tool_choice", "not supported");
  expectError(kChat, chat(R"("response_format":{"type":"json_object"})"), "response_format.type",
              "response_format of type 'json_object' is not supported");
  expectError(kChat, chat(R"("response_format":{"type":"json_schema","json_schema":{}})"),
              "response_format.type", "not supported");
  expectError(kChat, chat(R"("response_format":"json")"), "response_format", "expected an object");
}

TEST(ApiErrorTest, ErrorJsonHasOpenAiShape) {
  const ApiError error = invalidRequest("bad \"thing\"\n", "max_tokens");
  const std::string text = errorJson(error);
  EXPECT_EQ(text, R"({"error":{"message":"bad \"thing\"\n","type":"invalid_request_error",)"
                  R"("param":"max_tokens","code":null}})");
  const json::value parsed = json::parse(errorJson(ApiError{500, "server_error", "boom", {}, {}}));
  const json::object& inner = parsed.at("error").as_object();
  EXPECT_EQ(inner.at("message"), "boom");
  EXPECT_EQ(inner.at("type"), "server_error");
  EXPECT_TRUE(inner.at("param").is_null());
  EXPECT_TRUE(inner.at("code").is_null());
}

TEST(ApiErrorTest, ModelNotFoundAsOpenAiAnswers) {
  const ApiError error = modelNotFound("gpt-9");
  EXPECT_EQ(error.http_status, 404);
  EXPECT_EQ(error.type, "invalid_request_error");
  EXPECT_EQ(error.param, "model");
  EXPECT_EQ(error.code, "model_not_found");
  EXPECT_EQ(error.message, "The model `gpt-9` does not exist or you do not have access to it.");
}

TEST(ApiErrorTest, HttpLayerErrorsAsOpenAiShapesThem) {
  EXPECT_EQ(httpError(404, "Invalid URL (GET /x)").code, "unknown_url");
  EXPECT_EQ(httpError(405, "m").code, "method_not_allowed");
  EXPECT_EQ(httpError(413, "m").code, "request_too_large");
  EXPECT_EQ(httpError(413, "m").type, "invalid_request_error");
  EXPECT_EQ(httpError(413, "m").http_status, 413);
  EXPECT_EQ(httpError(500, "m").type, "server_error");
  EXPECT_TRUE(httpError(404, "m").param.empty());
}

TEST(ApiErrorTest, StatusMapping) {
  EXPECT_EQ(apiErrorFromStatus(invalidArgument("x")).http_status, 400);
  EXPECT_EQ(apiErrorFromStatus(notFound("x")).http_status, 404);
  const ApiError busy = apiErrorFromStatus(resourceExhausted("no decode capacity"));
  EXPECT_EQ(busy.http_status, 429);
  EXPECT_EQ(busy.type, "rate_limit_error");
  EXPECT_EQ(busy.message, "no decode capacity");
  EXPECT_EQ(apiErrorFromStatus(unavailable("x")).http_status, 503);
  EXPECT_EQ(apiErrorFromStatus(deadlineExceeded("x")).http_status, 504);
  const ApiError internal = apiErrorFromStatus(internalError("bug"));
  EXPECT_EQ(internal.http_status, 500);
  EXPECT_EQ(internal.type, "server_error");
}

TEST(EndpointTest, Paths) {
  EXPECT_EQ(endpointPath(kChat), "/v1/chat/completions");
  EXPECT_EQ(endpointPath(kCompletions), "/v1/completions");
}

}  // namespace
}  // namespace kvferry::openai
