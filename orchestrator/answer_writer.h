// One request's answer on its client connection: what openai::AnswerRenderer renders from the
// generated tokens, written to the client (SSE or one JSON body), with the client's departure
// noticed and the inter-token latency observed. Owns the request's renderer.
//
// A streamed answer's events are held until flush() (which the request flow calls whenever the
// agent's stream waits for more tokens: StreamLineHandler::drained), finish() or fail(): the
// tokens that arrived together go out in one write, as a proxy forwards what it has read, instead
// of one write each (a send, and a wake-up of the client, per token). A token arriving alone is
// written as soon as its read is handled, so no token waits for the next.
//
// Owner: the orchestrator's io_context thread, like the request it belongs to.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

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

  // One generated token, rendered and held for the next flush (written at once only when the
  // held bytes grow past kMaxHeldBytes). True: more are wanted. False: the answer is complete (a
  // stop token or string, or the token budget: answer().endReason() says which), the client is
  // gone, or the token is not in the vocabulary (answer().badToken()).
  // `logprobs`: the agent's, for a request that asked for them. Taken by value
  // (common/coroutine_rules.h, rule 3).
  http::Task<bool> token(model::TokenId id, std::optional<wire::TokenLogprobs> logprobs = {});
  // Writes what token() holds (the response header first, if it has not gone yet). False when
  // the client is gone.
  http::Task<bool> flush();
  // Completes the answer (openai::AnswerRenderer::finish) and writes it with what is held, and
  // the stream's end, in one write.
  http::Task<void> finish(std::string_view agent_reason);
  // Ends the answer with an error: the HTTP error when nothing was written or held yet, else
  // what is held, an SSE error event and [DONE].
  http::Task<void> fail(const openai::ApiError& error);
  // Before a resumed attempt of a stream the client has bytes of: what is held and an SSE
  // comment (clients ignore it) that keeps its read timeout from firing and finds out whether it
  // is still there. False when it is gone.
  http::Task<bool> keepAliveWhileResuming();

  // Held bytes past this are written without waiting for a flush().
  static constexpr size_t kMaxHeldBytes = 64 << 10;

  // Before the first write a departed client is otherwise noticed only at that write: watch its
  // connection meanwhile, and run `on_gone` if it closes (at once if an earlier watch already saw
  // it go). unwatchClient() ends that.
  void watchClient(std::function<void()> on_gone);
  void unwatchClient();

  // Bytes reached (or were sent to, or are held for) the client.
  bool begun() const { return begun_ || !held_.empty(); }
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
  // Streams: the response header with the first bytes, then `bytes` as one chunk, or with
  // `last` as the last chunk and the stream's end, each in one write. Nothing once the client is
  // gone; false when it is. (Non-streamed answers write once, in finish().)
  http::Task<bool> emit(std::string bytes, bool last = false);
  // The held bytes, which are then no longer held.
  std::string takeHeld() { return std::exchange(held_, {}); }

  http::ResponseWriter& writer_;
  const bool stream_;
  OrchestratorMetrics& metrics_;
  openai::AnswerRenderer answer_;
  std::optional<Clock::time_point> first_token_at_;
  std::optional<Clock::time_point> last_token_at_;
  std::string held_;    // rendered events not written yet
  bool begun_ = false;  // the response header went out (or goes with the next write)
  bool client_gone_ = false;
};

}  // namespace kvferry::orchestrator
