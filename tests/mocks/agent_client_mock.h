// A gmock mock of orchestrator::AgentClient (orchestrator/agent_client.h), and actions that
// answer its coroutine methods: answerWith() for reserve/prefill, playStream() for
// decode/generate (the scripted lines go through the same TokenStreamReader as the HTTP
// client's, which is drained after each). Runs on whatever io_context drives the code under test.
#pragma once

#include <gmock/gmock.h>

#include <string>
#include <utility>
#include <vector>

#include "orchestrator/agent_client.h"

namespace kvferry::orchestrator::testing {

class MockAgentClient : public AgentClient {
 public:
  MOCK_METHOD(http::Task<AgentResult<wire::ReserveResponse>>, reserve,
              (NodeId node, const wire::ReserveRequest& request), (override));
  MOCK_METHOD(http::Task<AgentResult<wire::PrefillResponse>>, prefill,
              (NodeId node, const wire::PrefillRequest& request), (override));
  MOCK_METHOD(http::Task<AgentResult<StreamEnd>>, decode,
              (NodeId node, const wire::DecodeRequest& request, const StreamLineHandler& on_line),
              (override));
  MOCK_METHOD(http::Task<AgentResult<StreamEnd>>, generate,
              (NodeId node, const wire::GenerateRequest& request, const StreamLineHandler& on_line),
              (override));
  MOCK_METHOD(void, release, (NodeId node, uint64_t lease_id, bool writer_done), (override));
  MOCK_METHOD(void, cancel, (NodeId node, uint64_t request_id), (override));
};

template <typename T>
http::Task<AgentResult<T>> answerNow(AgentResult<T> result) {
  co_return result;
}

// reserve / prefill: answers `result` at once.
template <typename T>
auto answerWith(T answer) {
  return [result = AgentResult<T>(std::move(answer))](auto&&...) { return answerNow(result); };
}
// `writes_settled`: a prefill's answer saying none of its writes can still land.
template <typename T>
auto failWith(AgentFailure failure, Status error, bool writes_settled = false) {
  return [result = AgentResult<T>(failure, std::move(error), writes_settled)](auto&&...) {
    return answerNow(result);
  };
}

// Stream lines: a token each, then (when `finish` is not empty) the finish line, with `code`
// when it is an error of that kind (wire::error_code).
inline std::vector<wire::StreamLine> tokenLines(const std::vector<int32_t>& tokens,
                                                std::string finish, std::string code = "") {
  std::vector<wire::StreamLine> lines;
  for (int32_t token : tokens) {
    wire::StreamLine& line = lines.emplace_back();
    line.token = token;
  }
  if (!finish.empty()) {
    wire::StreamLine& end = lines.emplace_back();
    end.finish = std::move(finish);
    end.code = std::move(code);
  }
  return lines;
}

inline http::Task<AgentResult<StreamEnd>> playLines(std::vector<wire::StreamLine> lines,
                                                    Status connection, NodeId node,
                                                    const StreamLineHandler& on_line) {
  TokenStreamReader reader("stream", "node " + std::to_string(node), on_line);
  for (const wire::StreamLine& line : lines) {
    // Awaited into a local (common/coroutine_rules.h).
    bool more = co_await reader.line(line);
    // As an agent decoding a token a step: the stream waits after each line.
    if (more) {
      const bool waited = co_await reader.drained();
      more = waited;
    }
    if (!more) break;
  }
  co_return reader.end(connection, AgentFailure::kNoAnswer);
}

// decode / generate: plays `lines` to the handler as an agent's stream would, then ends as
// `connection` says (OK: the body ended; an error: the connection broke after those lines).
inline auto playStream(std::vector<wire::StreamLine> lines, Status connection = Status::ok()) {
  return [lines = std::move(lines), connection = std::move(connection)](
             NodeId node, const auto&, const StreamLineHandler& on_line) {
    return playLines(lines, connection, node, on_line);
  };
}

}  // namespace kvferry::orchestrator::testing
