// One request's answer on its client connection: what openai::AnswerRenderer renders from the
// generated tokens, written to the client (SSE or one JSON body), with the client's departure
// noticed and the inter-token latency observed. Owns the request's renderer.
//
// Owner: the orchestrator's io_context thread, like the request it belongs to.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/control_wire.h"
#include "common/http.h"
#include "model/token_id.h"
#include "orchestrator/metrics.h"
#include "orchestrator/openai/answer_renderer.h"
#include "orchestrator/registry.h"
#include "orchestrator/request_flow.h"

namespace kvferry::orchestrator {

class AnswerWriter {
 public:
  AnswerWriter(http::ResponseWriter& writer, const PreparedRequest& request,
               const ServedModel& model, OrchestratorMetrics& metrics);

  // One generated token. True: more are wanted. False: the answer is complete (a stop token or
  // string, or the token budget: answer().endReason() says which), the client is gone, or the
  // token is not in the vocabulary (answer().badToken()).
  // `logprobs`: the agent's, for a request that asked for them. Taken by value
  // (common/coroutine_rules.h, rule 3).
  http::Task<bool> token(model::TokenId id, std::optional<wire::TokenLogprobs> logprobs = {});
  // Completes the answer (openai::AnswerRenderer::finish) and writes it.
  http::Task<void> finish(std::string_view agent_reason);
  // Ends the answer with an error: the HTTP error when nothing was written yet, else an SSE
  // error event and [DONE].
  http::Task<void> fail(const openai::ApiError& error);
  // Before a resumed attempt of a stream the client has bytes of: an SSE comment (clients ignore
  // it) that keeps its read timeout from firing and finds out whether it is still there. False
  // when it is gone.
  http::Task<bool> keepAliveWhileResuming();

  // Before the first write a departed client is otherwise noticed only at that write: watch its
  // connection meanwhile, and run `on_gone` if it closes (at once if an earlier watch already saw
  // it go). unwatchClient() ends that.
  void watchClient(std::function<void()> on_gone);
  void unwatchClient();

  bool begun() const { return begun_; }  // bytes reached (or were sent to) the client
  // A write failed, or a watch with a callback saw the connection close.
  bool clientGone() const { return client_gone_; }
  // That, or a watch saw it close after unwatchClient() (the watch runs on to the end). Asked
  // before resuming a failed answer; not after a complete one, whose client may close its
  // connection as soon as it has read the end.
  bool clientLeft() const { return client_gone_ || writer_.gone(); }
  std::optional<Clock::time_point> firstTokenAt() const { return first_token_at_; }

  openai::AnswerRenderer& answer() { return answer_; }
  const openai::AnswerRenderer& answer() const { return answer_; }

 private:
  // Streams: the response header before the first bytes, then `bytes`. False when the client
  // is gone. (Non-streamed answers write once, in finish().)
  http::Task<bool> emit(std::string bytes);
  // One chunk of the stream; nothing once the client is gone. False when it is.
  http::Task<bool> write(std::string bytes);
  http::Task<void> endStream();

  http::ResponseWriter& writer_;
  const bool stream_;
  OrchestratorMetrics& metrics_;
  openai::AnswerRenderer answer_;
  std::optional<Clock::time_point> first_token_at_;
  std::optional<Clock::time_point> last_token_at_;
  bool begun_ = false;
  bool client_gone_ = false;
};

}  // namespace kvferry::orchestrator
