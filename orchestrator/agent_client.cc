#include "orchestrator/agent_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/coroutine_rules.h"

namespace kvferry::orchestrator {
namespace {

// Best-effort calls (release, cancel) give up sooner than ordinary agent calls.
constexpr std::chrono::milliseconds kBestEffortTimeout{5000};

bool isSuccess(unsigned status) { return status >= 200 && status < 300; }

// A non-2xx answer, as the failure of `call` on `node`: its kind from the agent's error body
// (wire::AgentError) and status.
template <typename T>
AgentResult<T> refusal(std::string_view call, std::string_view node,
                       const http::Response& response) {
  Result<wire::AgentError> body = wire::decode<wire::AgentError>(response.body);
  std::string message = body.isOk()             ? body->message
                        : response.body.empty() ? std::string("(empty body)")
                                                : response.body.substr(0, 200);
  AgentFailure failure =
      response.status == 502 ? AgentFailure::kPeerFailed : AgentFailure::kRefused;
  if (body.isOk() && body->code == wire::error_code::kKvCapacity) {
    failure = AgentFailure::kNoCapacity;
  }
  return AgentResult<T>(
      failure,
      unavailable(std::string(call) + " on " + std::string(node) + " answered HTTP " +
                  std::to_string(response.status) + ": " + message),
      body.isOk() && body->writes_settled);
}

}  // namespace

// ---- TokenStreamReader ----

http::Task<bool> TokenStreamReader::line(std::string_view text) {
  if (text.empty() || !finish_.empty()) co_return true;
  Result<wire::StreamLine> parsed = wire::decode<wire::StreamLine>(text);
  if (!parsed.isOk()) {
    malformed_ = parsed.status().message();
    co_return false;
  }
  // Awaited into a local (common/coroutine_rules.h).
  const bool more = co_await line(*parsed);
  co_return more;
}

http::Task<bool> TokenStreamReader::line(const wire::StreamLine& line) {
  if (!finish_.empty()) co_return true;
  const bool more = co_await on_line_.line(line);
  if (!more) {
    stopped_ = true;
    co_return false;  // closing the connection cancels the sequence on the agent
  }
  if (!line.finish.empty()) {
    finish_ = line.finish;
    message_ = line.message;
    code_ = line.code;
  }
  co_return true;
}

http::Task<bool> TokenStreamReader::drained() {
  if (!on_line_.drained || stopped_) co_return !stopped_;
  const bool more = co_await on_line_.drained();
  if (!more) stopped_ = true;  // closing the connection cancels the sequence on the agent
  co_return more;
}

AgentResult<StreamEnd> TokenStreamReader::end(const Status& connection,
                                              AgentFailure failure) const {
  if (stopped_) return StreamEnd{"", true};
  const bool finished = !finish_.empty() && finish_ != "error";
  if (!connection.isOk() && !finished) return {failure, connection};
  if (!malformed_.empty()) {
    return {AgentFailure::kRefused,
            internalError(call_ + " stream of " + node_ + " has a malformed line: " + malformed_)};
  }
  if (finish_ == "error") {
    AgentFailure kind = AgentFailure::kRefused;
    if (code_ == wire::error_code::kKvCapacity) kind = AgentFailure::kNoCapacity;
    if (code_ == wire::error_code::kKvCorrupt) kind = AgentFailure::kKvCorrupt;
    return {kind, unavailable(call_ + " on " + node_ + " failed: " +
                              (message_.empty() ? std::string("(no message)") : message_))};
  }
  if (finish_.empty()) {
    return {AgentFailure::kRefused,
            unavailable(call_ + " stream of " + node_ + " ended without a finish")};
  }
  return StreamEnd{finish_, false};
}

// ---- HttpAgentClient ----

http::Task<AgentResult<wire::ReserveResponse>> HttpAgentClient::reserve(
    NodeId node, const wire::ReserveRequest& request) {
  return call<wire::ReserveResponse>("reserve", node, wire::route::kReserve, wire::encode(request));
}

http::Task<AgentResult<wire::PrefillResponse>> HttpAgentClient::prefill(
    NodeId node, const wire::PrefillRequest& request) {
  return call<wire::PrefillResponse>("prefill", node, wire::route::kPrefill, wire::encode(request));
}

http::Task<AgentResult<StreamEnd>> HttpAgentClient::decode(NodeId node,
                                                           const wire::DecodeRequest& request,
                                                           const StreamLineHandler& on_line) {
  return stream("decode", node, wire::route::kDecode, wire::encode(request), on_line);
}

http::Task<AgentResult<StreamEnd>> HttpAgentClient::generate(NodeId node,
                                                             const wire::GenerateRequest& request,
                                                             const StreamLineHandler& on_line) {
  return stream("generate", node, wire::route::kGenerate, wire::encode(request), on_line);
}

void HttpAgentClient::release(NodeId node, uint64_t lease_id, bool writer_done) {
  bestEffort(node, wire::route::kRelease,
             wire::encode(wire::ReleaseRequest{lease_id, writer_done}));
}

void HttpAgentClient::cancel(NodeId node, uint64_t request_id) {
  bestEffort(node, wire::route::kCancel, wire::encode(wire::IdRequest{request_id}));
}

template <typename Answer>
http::Task<AgentResult<Answer>> HttpAgentClient::call(std::string name, NodeId node,
                                                      std::string target, std::string body) {
  const NodeRecord* record = registry_.node(node);
  if (record == nullptr) {
    co_return AgentResult<Answer>(AgentFailure::kNoAnswer,
                                  notFound(name + ": no node " + std::to_string(node)));
  }
  Result<http::Response> answer = co_await pool_.request(
      record->control_endpoint, http::Verb::post, std::move(target), std::move(body), timeout_);
  if (!answer.isOk()) {
    co_return AgentResult<Answer>(AgentFailure::kNoAnswer,
                                  answer.status().withContext(name + " on " + label(node)));
  }
  if (!isSuccess(answer->status)) co_return refusal<Answer>(name, label(node), *answer);
  Result<Answer> decoded = wire::decode<Answer>(answer->body);
  if (!decoded.isOk()) {
    co_return AgentResult<Answer>(AgentFailure::kRefused,
                                  decoded.status().withContext(name + " answer of " + label(node)));
  }
  co_return std::move(decoded).value();
}

http::Task<AgentResult<StreamEnd>> HttpAgentClient::stream(std::string name, NodeId node,
                                                           std::string target, std::string body,
                                                           const StreamLineHandler& on_line) {
  const NodeRecord* record = registry_.node(node);
  if (record == nullptr) {
    co_return AgentResult<StreamEnd>(AgentFailure::kNoAnswer,
                                     notFound(name + ": no node " + std::to_string(node)));
  }
  TokenStreamReader reader(name, label(node), on_line);
  // A named std::function whose lambda only calls the reader's coroutine
  // (common/coroutine_rules.h, rules 2 and 4).
  const std::function<http::Task<bool>(std::string_view)> read_line =
      [&reader](std::string_view line) { return reader.line(line); };
  const std::function<http::Task<bool>()> read_all = [&reader] { return reader.drained(); };
  Result<http::Response> streamed =
      co_await pool_.streamLines(record->control_endpoint, http::Verb::post, std::move(target),
                                 std::move(body), timeout_, timeout_, read_line, read_all);
  if (!streamed.isOk()) {
    co_return reader.end(streamed.status().withContext(name + " on " + label(node)),
                         AgentFailure::kNoAnswer);
  }
  if (!isSuccess(streamed->status)) {
    const AgentResult<StreamEnd> refused = refusal<StreamEnd>(name, label(node), *streamed);
    co_return reader.end(refused.status(), refused.failure());
  }
  co_return reader.end(Status::ok(), AgentFailure::kNoAnswer);
}

void HttpAgentClient::bestEffort(NodeId node, std::string target, std::string body) {
  const NodeRecord* record = registry_.node(node);
  if (record == nullptr) return;
  spawn_(sendBestEffort(record->control_endpoint, std::move(target), std::move(body)));
}

http::Task<void> HttpAgentClient::sendBestEffort(http::tcp::endpoint endpoint, std::string target,
                                                 std::string body) {
  const auto timeout = std::min(kBestEffortTimeout, timeout_);
  Result<http::Response> answer =
      co_await pool_.request(endpoint, http::Verb::post, target, body, timeout);
  // A node that is gone ends its leases by their deadlines; nothing else to do.
  if (!answer.isOk()) {
    spdlog::debug("{} on {}: {}", target, http::endpointText(endpoint), answer.status().message());
  } else if (answer->status >= 300) {
    spdlog::debug("{} on {}: HTTP {}: {}", target, http::endpointText(endpoint), answer->status,
                  answer->body);
  }
}

std::string HttpAgentClient::label(NodeId node) const {
  const NodeRecord* record = registry_.node(node);
  return "node " + std::to_string(node) + " (" +
         (record != nullptr ? record->registration.control_address : std::string("?")) + ")";
}

}  // namespace kvferry::orchestrator
