// The end-of-stream rules every AgentClient applies (TokenStreamReader). The HTTP client itself
// is exercised against fake agents in server_test.cc.
#include "orchestrator/agent_client.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <exception>
#include <string>
#include <vector>

#include "common/coroutine_rules.h"

namespace kvferry::orchestrator {
namespace {

using http::Task;

// Feeds `lines` (NDJSON text) to a reader whose handler takes tokens until `stop_at` of them,
// then ends the stream as `connection` says.
struct Fed {
  AgentResult<StreamEnd> result =
      AgentResult<StreamEnd>(AgentFailure::kNoAnswer, internalError(""));
  std::vector<int32_t> tokens;
};

// The handler: keeps the tokens, and wants no more once it has `stop_at`.
Task<bool> take(Fed& fed, size_t stop_at, const wire::StreamLine& line) {
  if (line.token) fed.tokens.push_back(*line.token);
  co_return fed.tokens.size() < stop_at;
}

Task<void> feed(const std::vector<std::string>& lines, size_t stop_at, Status connection,
                Fed& fed) {
  const StreamLineHandler on_line = [&fed, stop_at](const wire::StreamLine& line) {
    return take(fed, stop_at, line);
  };
  TokenStreamReader reader("decode", "node 3 (127.0.0.1:9003)", on_line);
  for (const std::string& line : lines) {
    const bool more = co_await reader.line(line);
    if (!more) break;
  }
  fed.result = reader.end(connection, AgentFailure::kNoAnswer);
}

Fed run(const std::vector<std::string>& lines, Status connection = Status::ok(),
        size_t stop_at = 100) {
  boost::asio::io_context io;
  Fed fed;
  boost::asio::co_spawn(io, feed(lines, stop_at, std::move(connection), fed),
                        [](std::exception_ptr error) { EXPECT_FALSE(error); });
  io.run();
  return fed;
}

TEST(TokenStreamReaderTest, AFinishedStreamIsOkAndLinesAfterItAreIgnored) {
  Fed fed = run({R"({"token":5})", "", R"({"token":6,"finish":"stop"})", R"({"token":7})"});
  ASSERT_TRUE(fed.result.isOk()) << fed.result.status().toString();
  EXPECT_EQ(fed.result->finish_reason, "stop");
  EXPECT_FALSE(fed.result->stopped);
  EXPECT_EQ(fed.tokens, (std::vector<int32_t>{5, 6}));
}

TEST(TokenStreamReaderTest, AConnectionThatBreaksAfterTheFinishLineIsStillOk) {
  Fed fed = run({R"({"token":5})", R"({"finish":"length"})"}, unavailable("reset"));
  ASSERT_TRUE(fed.result.isOk());
  EXPECT_EQ(fed.result->finish_reason, "length");
}

TEST(TokenStreamReaderTest, AConnectionThatBreaksBeforeTheFinishFailsWithItsError) {
  Fed fed = run({R"({"token":5})"}, unavailable("decode on node 3: connection reset"));
  ASSERT_FALSE(fed.result.isOk());
  EXPECT_EQ(fed.result.failure(), AgentFailure::kNoAnswer);
  EXPECT_EQ(fed.result.status().message(), "decode on node 3: connection reset");
}

TEST(TokenStreamReaderTest, AnErrorFinishOrNoFinishIsUnavailable) {
  Fed error = run({R"({"token":5})", R"({"finish":"error","message":"out of KV"})"});
  ASSERT_FALSE(error.result.isOk());
  EXPECT_EQ(error.result.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(error.result.status().message(), "decode on node 3 (127.0.0.1:9003) failed: out of KV");
  Fed silent = run({R"({"token":5})"});
  ASSERT_FALSE(silent.result.isOk());
  EXPECT_EQ(silent.result.status().message(),
            "decode stream of node 3 (127.0.0.1:9003) ended without a finish");
}

TEST(TokenStreamReaderTest, AnErrorOfKvCapacityIsNoCapacityNotTheNodesFault) {
  Fed fed = run({R"({"finish":"error","message":"prefill: no room","code":"kv_capacity"})"});
  ASSERT_FALSE(fed.result.isOk());
  EXPECT_EQ(fed.result.failure(), AgentFailure::kNoCapacity);
}

TEST(TokenStreamReaderTest, AMalformedLineStopsReadingAndFails) {
  Fed fed = run({R"({"token":5})", R"({"token":"five"})", R"({"token":6})"});
  ASSERT_FALSE(fed.result.isOk());
  EXPECT_EQ(fed.result.status().code(), StatusCode::kInternal);
  EXPECT_NE(fed.result.status().message().find("has a malformed line"), std::string::npos);
  EXPECT_EQ(fed.tokens, (std::vector<int32_t>{5}));
}

TEST(TokenStreamReaderTest, AHandlerThatStopsEndsTheStreamOkWhateverTheConnectionDid) {
  Fed fed = run({R"({"token":5})", R"({"token":6})", R"({"token":7})"}, unavailable("closed"), 2);
  ASSERT_TRUE(fed.result.isOk());
  EXPECT_TRUE(fed.result->stopped);
  EXPECT_EQ(fed.tokens, (std::vector<int32_t>{5, 6}));
}

}  // namespace
}  // namespace kvferry::orchestrator
