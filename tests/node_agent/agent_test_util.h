// What the node agent's unit tests share: small fake engines, streams and reply channels read on
// the test thread, and a metrics registry.
#pragma once

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/control_wire.h"
#include "node_agent/channels.h"
#include "node_agent/engine/engine.h"
#include "node_agent/metrics.h"
#include "tests/mocks/fake_model_runner.h"

namespace kvferry::agent::testing {

using kvferry::testing::FakeModelRunner;
using kvferry::testing::FakeShape;
using kvferry::testing::makeFakeEngine;
using namespace std::chrono_literals;

inline engine::EngineConfig fakeEngineConfig(uint32_t block_tokens, uint32_t num_blocks) {
  engine::EngineConfig config;
  config.block_tokens = block_tokens;
  config.num_blocks = num_blocks;
  config.max_batch_tokens = 64;
  config.threads = 1;
  return config;
}

// The registry and the agent's metric families on it.
struct TestMetrics {
  prometheus::Registry registry;
  AgentMetrics metrics{registry, "both"};
};

// A stream as the control API makes one; the test reads it with readStream (its executor never
// runs).
inline std::shared_ptr<Stream> newStream(boost::asio::io_context& io, uint64_t request_id) {
  return std::make_shared<Stream>(io.get_executor(), 4096, request_id);
}

// The lines available now, until the finish line (appended to `lines`); true once it came.
inline bool readAvailable(Stream& stream, std::vector<wire::StreamLine>& lines) {
  bool finished = !lines.empty() && !lines.back().finish.empty();
  while (!finished) {
    bool got =
        stream.lines.try_receive([&](boost::system::error_code, std::string line, bool last) {
          auto decoded = wire::decode<wire::StreamLine>(line);
          EXPECT_TRUE(decoded.isOk()) << line;
          if (decoded.isOk()) lines.push_back(*decoded);
          finished = last;
        });
    if (!got) break;
  }
  return finished;
}

// Waits (polling) for the stream's finish line; the lines so far when `timeout` passes first.
inline std::vector<wire::StreamLine> readStream(Stream& stream, std::chrono::milliseconds timeout) {
  std::vector<wire::StreamLine> lines;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!readAvailable(stream, lines) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  return lines;
}

inline std::vector<int32_t> tokensIn(const std::vector<wire::StreamLine>& lines) {
  std::vector<int32_t> tokens;
  for (const wire::StreamLine& line : lines) {
    if (line.token) tokens.push_back(*line.token);
  }
  return tokens;
}

// A reply channel whose reply the test takes with takeReply.
inline std::shared_ptr<ReplyChannel> newReplyChannel(boost::asio::io_context& io) {
  return std::make_shared<ReplyChannel>(io.get_executor(), 1);
}
inline std::optional<Reply> takeReply(ReplyChannel& channel) {
  std::optional<Reply> reply;
  channel.try_receive([&](boost::system::error_code, Reply r) { reply = std::move(r); });
  return reply;
}

}  // namespace kvferry::agent::testing
