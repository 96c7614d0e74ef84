// The orchestrator's calls to a node agent's control API (docs/control_plane.md, DESIGN.md §2),
// typed: one method per call, wire types in and out, and failures that name the call, the node
// and the cause. AgentClient is the seam the request flow is tested through (a gmock mock in
// tests/mocks/); HttpAgentClient is the real one, HTTP/1.1 + JSON over http::ClientPool.
//
// Owner: the orchestrator's io_context thread; every method runs on it. Request objects passed
// by reference must outlive the call (common/coroutine_rules.h, rule 4).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "common/control_wire.h"
#include "common/http.h"
#include "common/status.h"
#include "orchestrator/registry.h"

namespace kvferry::orchestrator {

// Why a call has no usable answer; the Status says it in words.
enum class AgentFailure : uint8_t {
  kNoAnswer,    // unreachable, dropped or timed out: the call may still be running on the agent
  kRefused,     // the agent answered with an error, or with an answer that does not decode
  kPeerFailed,  // the agent answered that a node it had to reach failed (HTTP 502; a prefill
                // whose KV could not be written to the decode node)
  kNoCapacity,  // the agent has no KV room for the request now (code kv_capacity): not its
                // fault; the request may wait for room
  kKvCorrupt,   // the decode agent found the landed KV differs from the prefill's checksums
                // (code kv_corrupt): the transfer, not the decode node, is to blame
};

// A call's answer, or its failure: a Result<T> that also says which kind of failure it is.
template <typename T>
class AgentResult {
 public:
  AgentResult(T answer) : result_(std::move(answer)) {}  // NOLINT: implicit, as Result's
  AgentResult(AgentFailure failure, Status error, bool writes_settled = false)
      : result_(std::move(error)), failure_(failure), writes_settled_(writes_settled) {}

  bool isOk() const { return result_.isOk(); }
  const Status& status() const { return result_.status(); }
  AgentFailure failure() const { return failure_; }  // when !isOk()
  // A prefill's: the agent answered, and no KV write it posted can still land on the target
  // (true for every answer that succeeded). Its reservation may be freed at once.
  bool writesSettled() const { return isOk() || writes_settled_; }
  T& operator*() { return *result_; }
  const T& operator*() const { return *result_; }
  T* operator->() { return result_.operator->(); }
  const T* operator->() const { return result_.operator->(); }

 private:
  Result<T> result_;
  AgentFailure failure_ = AgentFailure::kNoAnswer;
  bool writes_settled_ = false;
};

template <typename F>
concept LineCallable = std::is_invocable_r_v<http::Task<bool>, F&, const wire::StreamLine&>;

// What a token stream's lines go to. `line` gets each line, in order; false stops reading (the
// agent sees the connection close and cancels the sequence). `drained` (optional) runs when the
// lines that have arrived were all handed to `line` and the stream waits for more: a handler that
// holds back what it makes of the lines, to write them out together, writes it there (false
// stops reading too). The stream's end is not announced: the code after the call completes what
// the handler holds.
struct StreamLineHandler {
  using Line = std::function<http::Task<bool>(const wire::StreamLine&)>;
  using Drained = std::function<http::Task<bool>()>;

  // From a line callable alone (implicit), for a handler that writes each line at once.
  template <LineCallable F>
  StreamLineHandler(F on_line) : line(std::move(on_line)) {}  // NOLINT(google-explicit-constructor)
  StreamLineHandler(Line on_line, Drained on_drained)
      : line(std::move(on_line)), drained(std::move(on_drained)) {}

  Line line;
  Drained drained;
};

// How a token stream ended without an error.
struct StreamEnd {
  std::string finish_reason;  // the agent's: "stop" | "length"; empty when `stopped`
  bool stopped = false;       // the handler stopped reading
};

class AgentClient {
 public:
  virtual ~AgentClient() = default;

  // POST /agent/reserve on a decode node: KV blocks for the prompt, held by a lease.
  virtual http::Task<AgentResult<wire::ReserveResponse>> reserve(
      NodeId node, const wire::ReserveRequest& request) = 0;
  // POST /agent/prefill: the agent computes the prompt, writes its KV into the target's
  // reservation and answers with the first token once every write completed.
  virtual http::Task<AgentResult<wire::PrefillResponse>> prefill(
      NodeId node, const wire::PrefillRequest& request) = 0;
  // POST /agent/decode (the lease's sequence) and POST /agent/generate (prefill and decode on
  // one node): the stream's lines go to `on_line`, and its `drained` runs whenever the stream
  // waits for more lines (StreamLineHandler). Per TokenStreamReader: a stream that ends
  // with a "stop" or "length" finish line, or that `on_line` stops, is OK; one that breaks off
  // before its finish, finishes with "error", ends without a finish or has a malformed line
  // fails.
  virtual http::Task<AgentResult<StreamEnd>> decode(NodeId node, const wire::DecodeRequest& request,
                                                    const StreamLineHandler& on_line) = 0;
  virtual http::Task<AgentResult<StreamEnd>> generate(NodeId node,
                                                      const wire::GenerateRequest& request,
                                                      const StreamLineHandler& on_line) = 0;
  // Best effort, in the background; the answers are only logged. release: POST /agent/release,
  // ends a lease that will not be decoded (idempotent); `writer_done` when its prefill answered
  // with its writes settled, so the blocks are free at once. cancel: POST /agent/cancel, stops
  // the request's prefill (a queued one never runs) or stream on that node.
  virtual void release(NodeId node, uint64_t lease_id, bool writer_done) = 0;
  virtual void cancel(NodeId node, uint64_t request_id) = 0;
};

// The end-of-stream rules every AgentClient applies to a token stream, whatever carries it (the
// HTTP client feeds it NDJSON lines; a test's mock feeds it scripted ones). Lines after the
// finish line are ignored.
class TokenStreamReader {
 public:
  // `call` ("decode", "generate") and `node` (its label) name the stream in errors.
  TokenStreamReader(std::string call, std::string node, const StreamLineHandler& on_line)
      : call_(std::move(call)), node_(std::move(node)), on_line_(on_line) {}

  // One NDJSON line of the stream; false: stop reading.
  http::Task<bool> line(std::string_view text);
  // One parsed line; false: stop reading.
  http::Task<bool> line(const wire::StreamLine& line);
  // The lines so far were all read and the stream waits for more: the handler's `drained`, if it
  // has one; false: stop reading.
  http::Task<bool> drained();
  // The result, once the stream is over. `connection` is how the carrier ended, already naming
  // the call and node (OK: the body ended, or reading stopped), and `failure` its kind.
  AgentResult<StreamEnd> end(const Status& connection, AgentFailure failure) const;

 private:
  const std::string call_;
  const std::string node_;
  const StreamLineHandler& on_line_;
  bool stopped_ = false;
  std::string finish_;
  std::string message_;
  std::string code_;  // the finish line's error kind
  std::string malformed_;
};

// AgentClient over HTTP/1.1 + JSON. Finds nodes in `registry` (their control endpoints, and
// labels for messages); every call is bounded by `call_timeout` (a stream: its first byte and
// each gap between pieces). `spawn` runs a best-effort call's coroutine in the background,
// keeping alive what it refers to (this object).
class HttpAgentClient final : public AgentClient {
 public:
  using Spawn = std::function<void(http::Task<void>)>;
  HttpAgentClient(http::ClientPool& pool, const NodeRegistry& registry,
                  std::chrono::milliseconds call_timeout, Spawn spawn)
      : pool_(pool), registry_(registry), timeout_(call_timeout), spawn_(std::move(spawn)) {}

  http::Task<AgentResult<wire::ReserveResponse>> reserve(
      NodeId node, const wire::ReserveRequest& request) override;
  http::Task<AgentResult<wire::PrefillResponse>> prefill(
      NodeId node, const wire::PrefillRequest& request) override;
  http::Task<AgentResult<StreamEnd>> decode(NodeId node, const wire::DecodeRequest& request,
                                            const StreamLineHandler& on_line) override;
  http::Task<AgentResult<StreamEnd>> generate(NodeId node, const wire::GenerateRequest& request,
                                              const StreamLineHandler& on_line) override;
  void release(NodeId node, uint64_t lease_id, bool writer_done) override;
  void cancel(NodeId node, uint64_t request_id) override;

 private:
  // One call whose answer is one JSON body of type Answer.
  template <typename Answer>
  http::Task<AgentResult<Answer>> call(std::string name, NodeId node, std::string target,
                                       std::string body);
  http::Task<AgentResult<StreamEnd>> stream(std::string name, NodeId node, std::string target,
                                            std::string body, const StreamLineHandler& on_line);
  void bestEffort(NodeId node, std::string target, std::string body);
  http::Task<void> sendBestEffort(http::tcp::endpoint endpoint, std::string target,
                                  std::string body);
  // "node 3 (10.0.0.3:9000)".
  std::string label(NodeId node) const;

  http::ClientPool& pool_;
  const NodeRegistry& registry_;
  const std::chrono::milliseconds timeout_;
  const Spawn spawn_;
};

}  // namespace kvferry::orchestrator
