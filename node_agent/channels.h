// What carries the engine thread's answers back to the io thread (node_agent/agent.h, "Threads"):
// a Reply over a one-shot channel for the whole-body calls, a Stream of NDJSON lines for decode
// and generate, and the per-request StopFlag a cancel raises for a prefill in progress.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/control_wire.h"
#include "common/http.h"
#include "common/status.h"
#include "model/token_id.h"
#include "node_agent/engine/logit_processor.h"

namespace kvferry::agent {

// An answer from the engine thread to the handler waiting for it: HTTP status and JSON body.
struct Reply {
  unsigned status = 200;
  std::string body;
};
using ReplyChannel =
    boost::asio::experimental::concurrent_channel<void(boost::system::error_code, Reply)>;

inline Reply jsonReply(unsigned status, std::string body) { return {status, std::move(body)}; }
inline Reply errorReply(unsigned status, std::string_view message) {
  return {status, http::errorBody(message)};
}
// An error the orchestrator acts on: its kind (wire::error_code) and, for a prefill, whether any
// write it posted may still land on the target.
inline Reply errorReply(unsigned status, std::string message, std::string code,
                        bool writes_settled) {
  return {status,
          wire::encode(wire::AgentError{std::move(message), std::move(code), writes_settled})};
}
// KV room is a condition the orchestrator waits out, not a fault of this node.
inline std::string capacityCode(const Status& status) {
  return status.code() == StatusCode::kResourceExhausted ? wire::error_code::kKvCapacity : "";
}
inline void sendReply(ReplyChannel& channel, Reply reply) {
  channel.try_send(boost::system::error_code{}, std::move(reply));
}

// The lines of one decode/generate stream, from the engine thread to the handler writing them.
// `cancelled` is written by the io thread (the reader left) and read by the engine thread: one of
// the two atomics that cross threads outside a post (agent.h).
struct Stream {
  Stream(boost::asio::any_io_executor executor, size_t capacity, uint64_t id)
      : lines(std::move(executor), capacity), request_id(id) {}

  // Queues a line (`last`: the finish line); false when the reader left or the stream is full.
  bool emit(std::string line, bool last) {
    if (cancelled) return false;
    return lines.try_send(boost::system::error_code{}, std::move(line), last);
  }

  boost::asio::experimental::concurrent_channel<void(boost::system::error_code, std::string, bool)>
      lines;
  const uint64_t request_id;
  std::atomic<bool> cancelled{false};
};

// Raised by the io thread when /agent/cancel names the request; read by the engine's stop
// predicate between prefill chunks. The other atomic that crosses threads outside a post.
using StopFlag = std::atomic<bool>;

inline std::optional<wire::TokenLogprobs> wireLogprobs(
    const std::optional<engine::TokenLogprobs>& logprobs) {
  if (!logprobs) return std::nullopt;
  return wire::TokenLogprobs{logprobs->logprob, {logprobs->top.begin(), logprobs->top.end()}};
}
inline std::string tokenLine(const engine::LogitProcessor::PickedToken& picked,
                             std::optional<uint32_t> cached = std::nullopt) {
  wire::StreamLine line;
  line.token = picked.token;
  line.cached_tokens = cached;
  line.logprobs = wireLogprobs(picked.logprobs);
  return wire::encode(line);
}
inline std::string finishLine(std::string_view reason, std::string_view message = {},
                              std::string_view code = {}) {
  wire::StreamLine line;
  line.finish = reason;
  line.message = message;
  line.code = code;
  return wire::encode(line);
}

}  // namespace kvferry::agent
