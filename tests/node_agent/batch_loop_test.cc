// The batch loop, run on a thread of its own as the agent runs it: generate streams, stop tokens,
// token budgets, sequences taking turns, cancels, imported sequences, heartbeat reports.
#include "node_agent/batch_loop.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <future>

#include "tests/node_agent/agent_test_util.h"

namespace kvferry::agent {
namespace {

using namespace agent::testing;

class BatchLoopTest : public ::testing::Test {
 protected:
  void start(uint32_t max_batch_sequences, std::chrono::microseconds forward_delay = {}) {
    engine_ = makeFakeEngine(fakeEngineConfig(4, 256), FakeShape{}, forward_delay);
    prefills_ = std::make_unique<PrefillRunner>(*engine_, metrics_.metrics);
    loop_ =
        std::make_unique<BatchLoop>(*engine_, *prefills_, metrics_.metrics, max_batch_sequences);
    thread_ = std::thread([this] { loop_->run(work_, stop_, [this] { ++turns_; }); });
  }
  void TearDown() override {
    stop_ = true;
    work_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Runs fn() on the engine thread and returns what it returns.
  template <typename Fn>
  auto onEngine(Fn fn) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    boost::asio::post(work_, [&task] { task(); });
    return result.get();
  }

  std::shared_ptr<Stream> generate(uint64_t id, std::vector<int32_t> prompt, uint32_t max_tokens,
                                   std::vector<int32_t> stop_tokens = {},
                                   std::shared_ptr<StopFlag> stop = nullptr,
                                   wire::Sampling sampling = {}) {
    wire::GenerateRequest request;
    request.request_id = id;
    request.sampling = std::move(sampling);
    request.tokens = std::move(prompt);
    request.max_new_tokens = max_tokens;
    request.stop_tokens = std::move(stop_tokens);
    auto stream = newStream(io_, id);
    boost::asio::post(
        work_, [this, request, stream, stop] { loop_->generate(request, stream, stop.get()); });
    return stream;
  }
  size_t sequences() {
    return onEngine([this] { return engine_->sequenceCount(); });
  }

  boost::asio::io_context io_;  // the streams' reading side (never run: read with try_receive)
  boost::asio::io_context work_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      work_.get_executor()};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> turns_{0};
  TestMetrics metrics_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<PrefillRunner> prefills_;
  std::unique_ptr<BatchLoop> loop_;
  std::thread thread_;
};

TEST_F(BatchLoopTest, GenerateStreamsTokensUntilItsBudget) {
  start(8);
  auto stream = generate(1, {5, 6, 7}, 5);
  auto lines = readStream(*stream, 5s);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(tokensIn(lines), (std::vector<int32_t>{8, 9, 10, 11, 12}));
  EXPECT_EQ(lines.front().cached_tokens, 0u);  // the first line says what the cache held
  EXPECT_EQ(lines.back().finish, "length");
  EXPECT_EQ(sequences(), 0u);  // the sequence's blocks went back
  EXPECT_GT(turns_.load(), 0u);
}

TEST_F(BatchLoopTest, AStopTokenEndsTheStream) {
  start(8);
  auto stream = generate(1, {5, 6, 7}, 50, {10});
  auto lines = readStream(*stream, 5s);
  // The stop token is sent too (it counts as an answer token on every path); then it ends.
  EXPECT_EQ(tokensIn(lines), (std::vector<int32_t>{8, 9, 10}));
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().finish, "stop");
  // A first token that is a stop token: that token, then the end.
  auto first = generate(2, {5, 6, 7}, 50, {8});
  lines = readStream(*first, 5s);
  EXPECT_EQ(tokensIn(lines), (std::vector<int32_t>{8}));
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().finish, "stop");
  EXPECT_EQ(sequences(), 0u);
}

TEST_F(BatchLoopTest, LogitProcessorsOfOneSequenceLeaveItsNeighboursAlone) {
  // One step carries a sequence whose processors run on the host (a logit bias that makes token
  // 40 win, logprobs asked) beside one that needs none: each gets its own tokens.
  start(8, 2ms);
  wire::Sampling biased;
  biased.logit_bias = {{40, 5.0f}};
  biased.logprobs = 2;
  auto plain = generate(1, {5, 6, 7}, 4);
  auto forced = generate(2, {5, 6, 7}, 4, {}, nullptr, biased);
  auto plain_lines = readStream(*plain, 5s);
  auto forced_lines = readStream(*forced, 5s);
  ASSERT_FALSE(forced_lines.empty());
  ASSERT_NE(forced_lines.back().finish, "error") << forced_lines.back().message;
  EXPECT_EQ(tokensIn(plain_lines), (std::vector<int32_t>{8, 9, 10, 11}));
  EXPECT_EQ(tokensIn(forced_lines), (std::vector<int32_t>{40, 40, 40, 40}));
  for (const wire::StreamLine& line : forced_lines) {
    if (!line.token) continue;
    ASSERT_TRUE(line.logprobs.has_value());
    EXPECT_EQ(line.logprobs->top.size(), 2u);
  }
  for (const wire::StreamLine& line : plain_lines) EXPECT_FALSE(line.logprobs.has_value());
  EXPECT_EQ(sequences(), 0u);
}

TEST_F(BatchLoopTest, MoreSequencesThanAStepTakesTakeTurns) {
  start(2);
  std::vector<std::shared_ptr<Stream>> streams;
  for (uint64_t id = 1; id <= 5; ++id) {
    streams.push_back(generate(id, {static_cast<int32_t>(id)}, 6));
  }
  for (uint64_t id = 1; id <= 5; ++id) {
    auto lines = readStream(*streams[id - 1], 5s);
    std::vector<int32_t> expected;
    for (int32_t t = 1; t <= 6; ++t) expected.push_back(static_cast<int32_t>(id) + t);
    EXPECT_EQ(tokensIn(lines), expected) << "request " << id;
    ASSERT_FALSE(lines.empty());
    EXPECT_EQ(lines.back().finish, "length");
  }
  EXPECT_EQ(sequences(), 0u);
}

TEST_F(BatchLoopTest, ACancelEndsADecodingSequence) {
  start(8, 1ms);
  auto stream = generate(7, {5}, 500);
  std::vector<wire::StreamLine> lines;
  while (lines.size() < 3) {
    readAvailable(*stream, lines);
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(onEngine([this] { return loop_->cancel(7); }));
  lines = readStream(*stream, 5s);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().finish, "error");
  EXPECT_EQ(lines.back().message, "cancelled");
  EXPECT_EQ(sequences(), 0u);
  EXPECT_FALSE(onEngine([this] { return loop_->cancel(7); }));
}

TEST_F(BatchLoopTest, AReaderThatLeftEndsItsSequence) {
  start(8, 1ms);
  auto stream = generate(7, {5}, 500);
  std::vector<wire::StreamLine> lines;
  while (lines.empty()) {
    readAvailable(*stream, lines);
    std::this_thread::sleep_for(1ms);
  }
  stream->cancelled = true;
  for (int i = 0; i < 2000 && sequences() != 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(sequences(), 0u);
}

TEST_F(BatchLoopTest, ARaisedStopFlagStopsThePrefill) {
  start(8);
  auto stop = std::make_shared<StopFlag>(true);
  auto stream = generate(1, {5, 6, 7}, 5, {}, stop);
  auto lines = readStream(*stream, 5s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "error");
  EXPECT_EQ(lines[0].message, "cancelled");
  EXPECT_EQ(sequences(), 0u);
}

TEST_F(BatchLoopTest, TheEndOfTheContextEndsTheStream) {
  start(8);
  std::vector<int32_t> prompt(1020, 3);  // the cache holds 1024 tokens
  auto stream = generate(1, prompt, 100);
  auto lines = readStream(*stream, 5s);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().finish, "length");
  EXPECT_EQ(tokensIn(lines).size(), 5u);  // the first token, then one per free position
}

TEST_F(BatchLoopTest, AnImportedSequenceDecodesFromItsFirstToken) {
  start(8);
  auto admit = [this](uint32_t max_new_tokens, float temperature) {
    auto stream = newStream(io_, 3);
    onEngine([&] {
      const std::vector<model::TokenId> prompt{5, 6, 7, 8, 9};
      auto reserved = engine_->reserveImport(prompt);
      EXPECT_TRUE(reserved.isOk());
      EXPECT_TRUE(engine_->commitImport(reserved->id).isOk());
      wire::DecodeRequest decode;
      decode.request_id = 3;
      decode.first_token = 20;
      decode.max_new_tokens = max_new_tokens;
      decode.sampling.temperature = temperature;
      loop_->admitImported(reserved->id, decode, stream);
      return 0;
    });
    return readStream(*stream, 5s);
  };
  auto lines = admit(3, 0);
  EXPECT_EQ(tokensIn(lines), (std::vector<int32_t>{21, 22, 23}));
  EXPECT_EQ(lines.back().finish, "length");
  lines = admit(0, 0);  // no budget: it ends at once
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "length");
  lines = admit(3, -1);  // bad sampling
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "error");
  EXPECT_EQ(sequences(), 0u);
}

TEST_F(BatchLoopTest, AReportCarriesLoadAndTheCachesChanges) {
  start(8, 1ms);
  auto stream = generate(1, {3, 4, 5, 6, 7, 8, 9, 10, 11}, 500);  // two full blocks
  std::vector<wire::StreamLine> lines;
  while (lines.empty()) {
    readAvailable(*stream, lines);
    std::this_thread::sleep_for(1ms);
  }
  NodeReport report = onEngine([this] {
    NodeReport r;
    loop_->report(false, r);
    return r;
  });
  EXPECT_EQ(report.load.active_decode_seqs, 1u);
  EXPECT_EQ(report.load.total_kv_blocks, 256u);
  EXPECT_LT(report.load.free_kv_blocks, 256u);
  EXPECT_GE(report.stored.size(), 2u);  // the prompt's two full blocks, maybe more decoded since
  EXPECT_FALSE(report.snapshot);
  NodeReport snapshot = onEngine([this] {
    NodeReport r;
    loop_->report(true, r);
    return r;
  });
  ASSERT_TRUE(snapshot.snapshot);
  EXPECT_GE(snapshot.snapshot->size(), 2u);
  onEngine([this] { return loop_->cancel(1); });
}

}  // namespace
}  // namespace kvferry::agent
