#include "orchestrator/answer_writer.h"

#include <chrono>
#include <utility>

#include "common/coroutine_rules.h"

namespace kvferry::orchestrator {
namespace {

openai::AnswerSpec answerSpec(const PreparedRequest& request, const ServedModel& model) {
  openai::AnswerSpec spec;
  spec.endpoint = request.api.endpoint;
  spec.stream = request.api.stream;
  spec.include_usage = request.api.include_usage;
  spec.return_token_ids = request.api.return_token_ids;
  spec.id = request.openai_id;
  spec.created = request.created;
  spec.model = model.name;
  spec.system_fingerprint = "kvferry-" + model.identity.model_fingerprint;
  spec.prompt_tokens = static_cast<uint32_t>(request.tokens.size());
  spec.max_tokens = request.max_tokens;
  spec.stop = request.api.stop;
  spec.stop_tokens = request.stop_tokens;
  spec.min_tokens = request.api.min_tokens;
  spec.skip_special_tokens = request.api.skip_special_tokens;
  spec.logprobs = request.api.logprobs;
  return spec;
}

}  // namespace

AnswerWriter::AnswerWriter(http::ResponseWriter& writer, const PreparedRequest& request,
                           const ServedModel& model, OrchestratorMetrics& metrics)
    : writer_(writer),
      stream_(request.api.stream),
      metrics_(metrics),
      answer_(answerSpec(request, model), *model.tokenizer, request.tokens) {}

http::Task<bool> AnswerWriter::token(model::TokenId id,
                                     std::optional<wire::TokenLogprobs> logprobs) {
  if (!answer_.wantsMore() || client_gone_) co_return false;
  std::optional<openai::GeneratedLogprobs> view;
  if (logprobs) view = openai::GeneratedLogprobs{logprobs->logprob, logprobs->top};
  answer_.appendToken(id, view ? &*view : nullptr, held_);  // its events, if any
  if (!answer_.badToken().empty()) co_return false;         // not counted
  const Clock::time_point now = Clock::now();
  if (last_token_at_) {
    metrics_.itl_seconds.Observe(std::chrono::duration<double>(now - *last_token_at_).count());
  } else {
    first_token_at_ = now;
  }
  last_token_at_ = now;
  if (held_.size() >= kMaxHeldBytes) {
    const bool sent = co_await flush();  // awaited into a local (common/coroutine_rules.h)
    if (!sent) co_return false;
  }
  co_return answer_.wantsMore();
}

http::Task<bool> AnswerWriter::flush() {
  if (held_.empty()) co_return !client_gone_;
  const bool sent = co_await emit(takeHeld());
  co_return sent;
}

http::Task<void> AnswerWriter::finish(std::string_view agent_reason) {
  std::string out = answer_.finish(agent_reason);
  if (!stream_) {
    const bool sent = co_await writer_.sendJson(http::HttpStatus::ok, std::move(out));
    client_gone_ = !sent;
    co_return;
  }
  co_await emit(takeHeld() + out, true);
}

http::Task<void> AnswerWriter::fail(const openai::ApiError& error) {
  if (!begun()) {
    begun_ = true;
    co_await sendApiError(writer_, error);
    co_return;
  }
  co_await emit(takeHeld() + answer_.failure(error), true);
}

http::Task<bool> AnswerWriter::keepAliveWhileResuming() {
  if (stream_ && begun()) co_await emit(takeHeld() + ": resuming the answer on another node\n\n");
  co_return !clientLeft();
}

void AnswerWriter::watchClient(std::function<void()> on_gone) {
  writer_.watchDisconnect([this, on_gone = std::move(on_gone)] {
    client_gone_ = true;
    if (on_gone) on_gone();
  });
}

void AnswerWriter::unwatchClient() { writer_.watchDisconnect(nullptr); }

http::Task<bool> AnswerWriter::emit(std::string bytes, bool last) {
  if (!stream_) co_return true;
  if (client_gone_) co_return false;
  if (!begun_) {
    begun_ = true;  // the header goes out with these bytes, in one write
    writer_.beginStreamWithNextWrite(http::HttpStatus::ok, "text/event-stream");
  }
  bool written = true;  // awaited into a local (common/coroutine_rules.h)
  if (last) {
    written = co_await writer_.endStream(bytes);
  } else {
    written = co_await writer_.writeChunk(bytes);
  }
  client_gone_ = !written;
  co_return written;
}

}  // namespace kvferry::orchestrator
