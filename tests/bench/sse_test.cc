// The SSE parser and the per-request measurement on canned chunk sequences, as vLLM, SGLang and
// kvferry send them: times are given, so TTFT/ITL/E2E are exact.
#include "bench/benchmark_client/sse.h"

#include <gtest/gtest.h>

namespace kvferry::bench {
namespace {

constexpr auto kNoCounter = nullptr;

// Feeds "line@time" pairs; returns what onLine said for the last one.
bool feed(StreamMeasurement& m, const std::vector<std::pair<std::string, double>>& lines) {
  bool go_on = true;
  for (const auto& [line, t] : lines) go_on = m.onLine(line, t);
  return go_on;
}

std::string completionChunk(std::string_view text) {
  return R"(data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":")" +
         std::string(text) + R"(","logprobs":null,"finish_reason":null}],"usage":null})";
}

TEST(SseParserTest, FramesEventsOnBlankLines) {
  SseParser p;
  EXPECT_FALSE(p.feedLine(": keep-alive", 0.0));
  EXPECT_FALSE(p.feedLine(R"(data: {"choices":[{"text":"a"}]})", 1.0));
  auto e = p.feedLine("", 1.5);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, SseEvent::Kind::kChunk);
  EXPECT_EQ(e->text, "a");
  EXPECT_EQ(e->arrived_s, 1.0);       // the data line's time, not the blank line's
  EXPECT_FALSE(p.feedLine("", 2.0));  // a blank line alone is no event
  // CRLF line ends, no space after the colon, and two data lines of one event.
  EXPECT_FALSE(p.feedLine("data:{\"choices\":\r", 3.0));
  EXPECT_FALSE(p.feedLine("data:[{\"text\":\"b\"}]}\r", 3.1));
  e = p.feedLine("\r", 3.2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->text, "b");
  EXPECT_FALSE(p.feedLine("data: [DONE]", 4.0));
  e = p.finish();  // the body ended without the blank line
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, SseEvent::Kind::kDone);
  EXPECT_FALSE(p.finish());
}

TEST(SseParserTest, ReadsChunkShapes) {
  SseEvent e = parseChunk(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})");
  EXPECT_EQ(e.kind, SseEvent::Kind::kChunk);
  EXPECT_EQ(e.text, "");
  e = parseChunk(R"({"choices":[{"delta":{"content":"hi"},"finish_reason":null}]})");
  EXPECT_EQ(e.text, "hi");
  e = parseChunk(R"({"choices":[{"delta":{"content":null,"reasoning_content":"hmm"}}]})");
  EXPECT_EQ(e.text, "hmm");
  e = parseChunk(R"({"choices":[{"text":"","finish_reason":"length"}]})");
  EXPECT_EQ(e.finish_reason, "length");
  e = parseChunk(R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}})");
  EXPECT_EQ(e.prompt_tokens, 12u);
  EXPECT_EQ(e.completion_tokens, 5u);
  e = parseChunk(R"({"error":{"message":"out of KV blocks","type":"server_error"}})");
  EXPECT_EQ(e.kind, SseEvent::Kind::kError);
  EXPECT_EQ(e.message, "out of KV blocks");
  e = parseChunk(R"({"object":"error","message":"bad","code":400})");
  EXPECT_EQ(e.kind, SseEvent::Kind::kError);
  EXPECT_EQ(e.message, "bad");
  e = parseChunk(R"({"choices":[{"text":"x")");
  EXPECT_EQ(e.kind, SseEvent::Kind::kMalformed);
  e = parseChunk("[1,2]");
  EXPECT_EQ(e.kind, SseEvent::Kind::kMalformed);
}

TEST(StreamMeasurementTest, CompletionsStreamWithUsage) {
  StreamMeasurement m(10.0);
  EXPECT_FALSE(
      feed(m, {{completionChunk("Once"), 10.2},
               {"", 10.2},
               {completionChunk(" upon"), 10.25},
               {"", 10.25},
               {completionChunk(" a time"), 10.35},  // two tokens in one chunk
               {"", 10.35},
               {R"(data: {"choices":[{"text":"","finish_reason":"length"}]})", 10.36},
               {"", 10.36},
               {R"(data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})", 10.37},
               {"", 10.37},
               {"data: [DONE]", 10.4},
               {"", 10.4}}));
  RequestResult r = std::move(m).finish(10.5, "", "", kNoCounter);
  EXPECT_TRUE(r.success) << r.error_kind << ": " << r.error;
  EXPECT_NEAR(r.ttft_s, 0.2, 1e-12);
  EXPECT_NEAR(r.e2el_s, 0.4, 1e-12);  // at [DONE], not when the connection closed
  ASSERT_EQ(r.itl_s.size(), 2u);
  EXPECT_NEAR(r.itl_s[0], 0.05, 1e-12);
  EXPECT_NEAR(r.itl_s[1], 0.10, 1e-12);
  EXPECT_EQ(r.output_tokens, 4u);  // usage wins over the chunk count (3)
  EXPECT_EQ(r.server_prompt_tokens, 3u);
  EXPECT_NEAR(r.tpotSeconds(), 0.2 / 3, 1e-12);
  EXPECT_EQ(r.text, "Once upon a time");
  EXPECT_EQ(r.start_s, 10.0);
}

TEST(StreamMeasurementTest, ChatRoleChunkDoesNotCountAsFirstToken) {
  StreamMeasurement m(0.0);
  feed(m, {{R"(data: {"choices":[{"delta":{"role":"assistant","content":""}}]})", 0.05},
           {"", 0.05},
           {R"(data: {"choices":[{"delta":{"content":"Hi"}}]})", 0.3},
           {"", 0.3},
           {R"(data: {"choices":[{"delta":{"content":" there"}}]})", 0.4},
           {"", 0.4},
           {"data: [DONE]", 0.5},
           {"", 0.5}});
  // No usage: the tokenizer's count when one is given, else the number of text chunks.
  RequestResult counted = StreamMeasurement(m).finish(
      0.6, "", "", [](std::string_view text) { return std::optional<uint32_t>(text.size()); });
  EXPECT_EQ(counted.output_tokens, 8u);
  RequestResult r = std::move(m).finish(0.6, "", "", kNoCounter);
  EXPECT_TRUE(r.success);
  EXPECT_NEAR(r.ttft_s, 0.3, 1e-12);
  EXPECT_EQ(r.output_tokens, 2u);
  EXPECT_EQ(r.itl_s.size(), 1u);
}

TEST(StreamMeasurementTest, ErrorEventIsAStreamError) {
  StreamMeasurement m(0.0);
  EXPECT_TRUE(feed(m, {{completionChunk("a"), 0.1}, {"", 0.1}}));
  EXPECT_FALSE(
      feed(m, {{R"(data: {"error":{"message":"decode node died","code":503}})", 0.2}, {"", 0.2}}));
  RequestResult r = std::move(m).finish(0.3, "", "", kNoCounter);
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.error_kind, "stream_error");
  EXPECT_EQ(r.error, "decode node died");

  StreamMeasurement named(0.0);
  EXPECT_FALSE(feed(named, {{"event: error", 0.1}, {"data: overloaded", 0.1}, {"", 0.1}}));
  r = std::move(named).finish(0.2, "", "", kNoCounter);
  EXPECT_EQ(r.error_kind, "stream_error");
  EXPECT_EQ(r.error, "overloaded");
}

TEST(StreamMeasurementTest, MalformedChunkIsAStreamError) {
  StreamMeasurement m(0.0);
  EXPECT_FALSE(feed(m, {{"data: {not json", 0.1}, {"", 0.1}}));
  RequestResult r = std::move(m).finish(0.2, "", "", kNoCounter);
  EXPECT_EQ(r.error_kind, "stream_error");
  EXPECT_NE(r.error.find("malformed"), std::string::npos);
}

TEST(StreamMeasurementTest, MissingDoneIsIncomplete) {
  StreamMeasurement m(0.0);
  feed(m, {{completionChunk("a"), 0.1}, {"", 0.1}});
  RequestResult r = std::move(m).finish(0.2, "", "", kNoCounter);
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.error_kind, "incomplete");
  EXPECT_NEAR(r.e2el_s, 0.2, 1e-12);
}

TEST(StreamMeasurementTest, TransportOutcomeIsReported) {
  StreamMeasurement m(0.0);
  RequestResult r = std::move(m).finish(0.01, "http_503", "HTTP 503: busy", kNoCounter);
  EXPECT_EQ(r.error_kind, "http_503");
  EXPECT_EQ(r.error, "HTTP 503: busy");
  // A timeout after some tokens is a timeout, not "incomplete".
  StreamMeasurement partial(0.0);
  feed(partial, {{completionChunk("a"), 0.1}, {"", 0.1}});
  r = std::move(partial).finish(5.0, "timeout", "no complete response within 5 s", kNoCounter);
  EXPECT_EQ(r.error_kind, "timeout");
}

TEST(StreamMeasurementTest, NothingCountsAfterDone) {
  StreamMeasurement m(0.0);
  EXPECT_FALSE(feed(m, {{completionChunk("a"), 0.1}, {"", 0.1}, {"data: [DONE]", 0.2}, {"", 0.2}}));
  m.onLine(completionChunk("late"), 0.3);
  m.onLine("", 0.3);
  RequestResult r = std::move(m).finish(0.4, "", "", kNoCounter);
  EXPECT_TRUE(r.success);
  EXPECT_EQ(r.text, "a");
}

}  // namespace
}  // namespace kvferry::bench
